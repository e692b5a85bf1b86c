"""Tables of the waste service's own database.

The register (drop-off points with their bins, collection points, vehicles, end facilities, routes)
is keyed by the codes and plates people use; ``bin_events`` is the AI boxes' log, one row per event a
box sent (so a batch sent twice is handled once); ``violations`` holds one row per point, kind and
episode, whichever replica or source saw it first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id


class Base(DeclarativeBase):
    metadata = make_metadata()


class VehicleKind(StrEnum):
    COLLECTION = "collection"  # collects one stream from points to a facility
    CLEANING = "cleaning"  # sweeps and washes streets: no stream


class FacilityKind(StrEnum):
    INCINERATION = "incineration"
    LANDFILL = "landfill"
    FOOD_WASTE_TREATMENT = "food_waste_treatment"
    RECYCLING = "recycling"
    TRANSFER_STATION = "transfer_station"


class ViolationSource(StrEnum):
    BOX = "box"  # the point's AI box (POST /v1/bin-events)
    CAMERA = "camera"  # a vision alarm confirmed at a camera mapped to the point


class DropOffPoint(Base):
    """A sorted-waste drop-off point (投放点): where residents bring their sorted waste, in its
    opening hours, watched by its AI box and cameras. The contact's name and phone are personal data:
    masked for a caller without ``pii:read``, never logged."""

    __tablename__ = "drop_off_points"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    community: Mapped[str] = mapped_column(String(100))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(300))
    # ["07:00-09:00", "18:00-21:00"] in city time, a window may cross midnight; [] is around the clock.
    opening_hours: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    # GB/T 28181 ids of the cameras that watch the point: their alarms are the point's.
    cameras: Mapped[list[str]] = mapped_column(ARRAY(String(20)), server_default="{}")
    contact_name: Mapped[str | None] = mapped_column(String(100))
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_drop_off_points_district", "district_code", "code"),)


class Bin(Base):
    """One bin of a drop-off point, of one stream, known by its RFID tag."""

    __tablename__ = "bins"

    rfid: Mapped[str] = mapped_column(String(32), primary_key=True)
    point_code: Mapped[str] = mapped_column(ForeignKey("drop_off_points.code", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(16))
    capacity_l: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_bins_point", "point_code", "rfid"),)


class CollectionPoint(Base):
    """A collection point (收集点): where vehicles pick up the sorted streams."""

    __tablename__ = "collection_points"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(300))
    streams: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_collection_points_district", "district_code", "code"),)


class Vehicle(Base):
    """A collection vehicle (of one stream) or a cleaning vehicle, with its terminal's number. The
    driver's name and phone are personal data."""

    __tablename__ = "vehicles"

    plate: Mapped[str] = mapped_column(String(12), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str | None] = mapped_column(String(16))
    company: Mapped[str] = mapped_column(String(200))
    district_code: Mapped[str] = mapped_column(String(6))
    # The terminal's SIM number as the 20 digits of a JT/T 808-2019 header.
    terminal_phone: Mapped[str] = mapped_column(String(20), unique=True)
    driver_name: Mapped[str | None] = mapped_column(String(100))
    driver_phone: Mapped[str | None] = mapped_column(String(32))
    # The JT/T 808 auth code issued at the terminal's registration, as its SHA-256; None until it
    # registers, and again once the register releases it or gives the vehicle another terminal.
    auth_code_sha256: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_vehicles_district", "district_code", "plate"),)


class Facility(Base):
    """An end facility (末端处理设施) or a transfer station: the streams it accepts, its weighbridges."""

    __tablename__ = "facilities"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(24))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    # How far from its location a vehicle is inside it: its arrivals are read from the positions.
    radius_m: Mapped[float] = mapped_column(Float, server_default="150")
    streams: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    weighbridges: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_facilities_district", "district_code", "code"),)


class Depot(Base):
    """A vehicle depot: where the vehicles are kept between rounds. A trip starts when a
    vehicle leaves one, which its positions show."""

    __tablename__ = "depots"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    radius_m: Mapped[float] = mapped_column(Float, server_default="100")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_depots_district", "district_code", "code"),)


class Route(Base):
    """A vehicle's fixed route and schedule: the points it serves, in order, on which days of the week,
    in which window of the day, and the facility it unloads at."""

    __tablename__ = "routes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plate: Mapped[str] = mapped_column(ForeignKey("vehicles.plate"))
    district_code: Mapped[str] = mapped_column(String(6))
    stream: Mapped[str | None] = mapped_column(String(16))
    # ISO days of the week, 1 = Monday … 7 = Sunday.
    days: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    # "05:00-08:00" in city time; may cross midnight.
    time_window: Mapped[str] = mapped_column(String(11))
    # Codes of drop-off and collection points, in the order they are served.
    stops: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    facility_code: Mapped[str | None] = mapped_column(ForeignKey("facilities.code"))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When the plate, stream, days, window or stops last changed: the windows judged start there.
    schedule_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_routes_plate", "plate", "code"),
        Index("ix_routes_district", "district_code", "code"),
    )


class BinEvent(Base):
    """One event a point's AI box sent, by the box's own id: a batch sent again is handled once."""

    __tablename__ = "bin_events"

    point_code: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(64))
    observed: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    confidence: Mapped[float] = mapped_column(Float)
    bin_rfid: Mapped[str | None] = mapped_column(String(32))
    # new, repeat or ignored (services/waste/domain/supervision.py)
    outcome: Mapped[str] = mapped_column(String(16))
    violation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        PrimaryKeyConstraint("point_code", "event_id", name="pk_bin_events"),
        Index("ix_bin_events_received", "received_at"),
    )


class Violation(Base):
    """A sorting rule broken at a drop-off point: one per point, kind and episode.

    ``(point_code, kind, episode_started_at)`` is unique, so two replicas that decide on the same
    observation at once record it once. ``point_code`` is not a foreign key: the record outlives the
    point's registration. ``snapshots`` are a camera alarm's evidence (EvidenceRef as JSON).
    """

    __tablename__ = "violations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    point_code: Mapped[str] = mapped_column(String(32))
    district_code: Mapped[str] = mapped_column(String(6))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(8))
    stream: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(8))
    episode_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    observations: Mapped[int] = mapped_column(Integer, server_default="1")
    confidence: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(500))
    category_code: Mapped[str] = mapped_column(String(5))
    snapshots: Mapped[list[dict[str, object]]] = mapped_column(JSONB, server_default="[]")
    # The vision alarm a camera violation came from.
    source_alarm: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The case raised for it, as the case service last told (services/waste/outcomes.py).
    case_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    case_status: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("point_code", "kind", "episode_started_at", name="uq_violations_episode"),
        Index("ix_violations_point_kind_seen", "point_code", "kind", "last_seen_at"),
        Index("ix_violations_district_started", "district_code", "episode_started_at", "id"),
        Index("ix_violations_started", "episode_started_at", "id"),
        Index("ix_violations_created", "created_at"),
    )


# The collection chain's tables are declared in its feature package, on this Base: imported here so
# the metadata (Alembic, the migration tests) holds them wherever the models are imported from.
from services.waste.chain import models as chain_models  # noqa: E402, F401
from services.waste.fleet import models as fleet_models  # noqa: E402, F401
