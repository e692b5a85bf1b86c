"""Tables of the collection chain, on the waste service's ``Base``.

The records (``pickups``, ``weighings``, ``movements``) are append-only and keyed by what makes a
record the same one sent again (``domain/chain.py``: the vehicle, the tag or the place, the time), so
a batch sent twice is stored once. ``trips`` are computed from them by the chain round and replaced
whenever the records of their vehicle change; ``chain_violations`` holds each violation the checks
find once, by its dedup key. ``chain_dirty_vehicles`` is the intake's note to the round: the
vehicles whose trips must be assembled again, and from when.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.ids import new_id
from services.waste.models import Base


class MovementKind(StrEnum):
    DEPARTED_DEPOT = "departed_depot"
    RETURNED_TO_DEPOT = "returned_to_depot"
    ARRIVED_AT_FACILITY = "arrived_at_facility"
    STOPPED = "stopped"  # outside every registered place


class MovementSource(StrEnum):
    PLATFORM = "platform"  # reported by the vehicle's platform (POST /v1/movements)
    POSITIONS = "positions"  # derived here from the vehicle's positions (domain/chain_movements.py)


class Pickup(Base):
    """A bin lifted into a vehicle at a point, with the bin's stream as the register gave it then."""

    __tablename__ = "pickups"

    plate: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rfid: Mapped[str] = mapped_column(String(32))
    point_code: Mapped[str] = mapped_column(String(32))
    stream: Mapped[str] = mapped_column(String(16))
    # The vehicle's stream when it lifted the bin: what a mixed load is judged against.
    load_stream: Mapped[str | None] = mapped_column(String(16))
    weight_kg: Mapped[float] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # One lift: the same vehicle, tag and time (the key is also a vehicle's records by time).
        PrimaryKeyConstraint("plate", "at", "rfid", name="pk_pickups"),
        # A point's lifts of a stream in a window: missed collections and coverage.
        Index("ix_pickups_point_stream_at", "point_code", "stream", "at"),
        Index("ix_pickups_at", "at"),
    )


class Weighing(Base):
    """A weighbridge record of an unloading: gross in, tare out, net the difference; ``stream`` and
    ``district_code`` are the vehicle's when it was weighed (the tonnage's attribution)."""

    __tablename__ = "weighings"

    plate: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    facility_code: Mapped[str] = mapped_column(String(32))
    weighbridge: Mapped[str] = mapped_column(String(32))
    gross_kg: Mapped[float] = mapped_column(Float)
    tare_kg: Mapped[float] = mapped_column(Float)
    net_kg: Mapped[float] = mapped_column(Float)
    stream: Mapped[str] = mapped_column(String(16))
    district_code: Mapped[str] = mapped_column(String(6))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        PrimaryKeyConstraint("plate", "at", "facility_code", name="pk_weighings"),
        Index("ix_weighings_facility_at", "facility_code", "at"),
        Index("ix_weighings_at", "at"),
    )


class Movement(Base):
    """A vehicle's movement: left or back at its depot, arrived at a facility, stopped outside every
    registered place (with where, and until when once it ended).

    ``place`` is the depot's or the facility's code, empty for a stop, so the key is the domain's
    identity of a movement whichever source reported it; a stop first reported under way gets its
    end when it is reported again.
    """

    __tablename__ = "movements"

    plate: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(24))
    place: Mapped[str] = mapped_column(String(32), server_default="")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        PrimaryKeyConstraint("plate", "at", "kind", "place", name="pk_movements"),
        Index("ix_movements_at", "at"),
    )


class TripRow(Base):
    """One load, points → vehicle → facility, as the round last assembled it (``domain/chain.py``)."""

    __tablename__ = "trips"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    plate: Mapped[str] = mapped_column(String(12))
    stream: Mapped[str | None] = mapped_column(String(16))
    district_code: Mapped[str | None] = mapped_column(String(6))
    start: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ending: Mapped[str] = mapped_column(String(20))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    loaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    points: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    pickups: Mapped[int] = mapped_column(Integer)
    picked_up_kg: Mapped[float] = mapped_column(Float)
    delivered_kg: Mapped[float | None] = mapped_column(Float)
    facility_code: Mapped[str | None] = mapped_column(String(32))
    # When the checks may find something without a new record (an open trip growing too long, a stop
    # under way growing too long): the round looks at the trip again then.
    recheck_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_trips_started", "started_at", "id"),
        Index("ix_trips_plate_started", "plate", "started_at", "id"),
        Index("ix_trips_facility_started", "facility_code", "started_at", "id"),
        # A district's trips, newest first.
        Index("ix_trips_district_started", "district_code", "started_at", "id"),
        Index("ix_trips_open_started", "started_at", "id", postgresql_where=text("ending = 'open'")),
        Index("ix_trips_recheck", "recheck_at", postgresql_where=text("recheck_at IS NOT NULL")),
    )


class ChainViolation(Base):
    """A violation of the collection chain (a mixed load, a weight mismatch, a trip not unloaded, an
    unloading at an unregistered place, a missed collection): one per dedup key, whichever replica
    found it first. Points, vehicles and facilities are not foreign keys: the record outlives them."""

    __tablename__ = "chain_violations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    plate: Mapped[str | None] = mapped_column(String(12))
    point_code: Mapped[str | None] = mapped_column(String(32))
    facility_code: Mapped[str | None] = mapped_column(String(32))
    trip_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    stream: Mapped[str | None] = mapped_column(String(16))
    district_code: Mapped[str | None] = mapped_column(String(6))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(500))
    category_code: Mapped[str] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The case raised for it, as the case service last told (services/waste/outcomes.py).
    case_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    case_status: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_chain_violations_at", "at", "id"),
        # A vehicle's violations, newest first, page by page (``GET /v1/chain-violations?plate=``).
        Index("ix_chain_violations_plate_at", "plate", "at", "id"),
        # A district's, and one kind's, newest first.
        Index("ix_chain_violations_district_at", "district_code", "at", "id"),
        Index("ix_chain_violations_kind_at", "kind", "at", "id"),
        Index("ix_chain_violations_point_at", "point_code", "at"),
        Index("ix_chain_violations_trip", "trip_id"),
        Index("ix_chain_violations_created", "created_at"),
    )


class DirtyVehicle(Base):
    """A vehicle with records stored since the round last assembled its trips, from ``since`` (the
    earliest such record's time). Written in the intake's transaction, so the round misses none;
    only ever inserted, so an intake never waits for a round that holds the rows it is taking."""

    __tablename__ = "chain_dirty_vehicles"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    plate: Mapped[str] = mapped_column(String(12))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    # A vehicle's notes are taken together (one assembly however many batches it sent).
    __table_args__ = (Index("ix_chain_dirty_vehicles_plate", "plate"),)


class ChainCursor(Base):
    """The chain round's lease (one replica assembles and checks) and how far missed collections are
    checked (windows closed up to ``missed_until``)."""

    __tablename__ = "chain_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    missed_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChainFigures(Base):
    """Today's figures for the gauges: computed by one replica per period, shown by all."""

    __tablename__ = "chain_figures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
