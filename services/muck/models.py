"""Tables of the muck service's own database.

``positions`` is the big one (7,000 trucks reporting every 10–30 s: 20–60 million rows a day):
append-only, written by COPY, partitioned by day of the position's time, each partition dropped
whole once older than the retention. A truck's latest position is kept in memory by every replica,
so no hot path reads ``positions``; a track reads one truck's range of its primary key.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.fleet.models import PositionColumns, position_columns
from citygrid.ids import new_id


class Base(DeclarativeBase):
    metadata = make_metadata()


class SiteKind(StrEnum):
    CONSTRUCTION = "construction"  # where muck is dug and loaded
    DISPOSAL = "disposal"  # where it may be unloaded: a receiving site, a landfill, a recycling plant


class Company(Base):
    """A transport company licensed to carry construction waste."""

    __tablename__ = "companies"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    licence_number: Mapped[str] = mapped_column(String(64))
    licence_valid_until: Mapped[date | None] = mapped_column(Date)
    district_code: Mapped[str | None] = mapped_column(String(6))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Truck(Base):
    """A muck truck, its approval and its JT/T 808 terminal.

    The terminal is known by its phone number, kept as the 20 BCD digits of a 2019 header (a 2013
    terminal's 12 digits left-padded with zeros), so one terminal is one row whichever header it
    speaks. The auth code the platform issued at registration is kept as its SHA-256 only.
    """

    __tablename__ = "trucks"

    plate: Mapped[str] = mapped_column(String(12), primary_key=True)
    company_code: Mapped[str] = mapped_column(ForeignKey("companies.code"))
    terminal_phone: Mapped[str] = mapped_column(String(20), unique=True)
    terminal_id: Mapped[str | None] = mapped_column(String(30))
    approval_number: Mapped[str] = mapped_column(String(64))
    approval_valid_until: Mapped[date] = mapped_column(Date)
    sealed_cover: Mapped[bool] = mapped_column(Boolean, server_default="true")
    capacity_m3: Mapped[float] = mapped_column(Float)
    auth_code_sha256: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_trucks_company", "company_code", "plate"),)


class Driver(Base):
    """A driver of a transport company. Name, phone and ID number are personal data: masked for a
    caller without ``pii:read``, never logged."""

    __tablename__ = "drivers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    company_code: Mapped[str] = mapped_column(ForeignKey("companies.code"))
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(32))
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    licence_number: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_drivers_company", "company_code", "id"),)


class Site(Base):
    """A construction or disposal site: its boundary, its permit, its gate cameras (GB/T 28181 ids)."""

    __tablename__ = "sites"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    district_code: Mapped[str] = mapped_column(String(6))
    # The boundary as [[lon, lat], ...], the ring closed.
    boundary: Mapped[list[list[float]]] = mapped_column(JSONB)
    permit_number: Mapped[str] = mapped_column(String(64))
    permit_valid_from: Mapped[date] = mapped_column(Date)
    permit_valid_until: Mapped[date] = mapped_column(Date)
    approved_quantity_m3: Mapped[float] = mapped_column(Float)
    gate_cameras: Mapped[list[str]] = mapped_column(ARRAY(String(20)), server_default="{}")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_sites_district", "district_code", "code"),)


class Route(Base):
    """An approved transport route: the corridor along its centre line, ``width_m`` wide."""

    __tablename__ = "routes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    line: Mapped[list[list[float]]] = mapped_column(JSONB)
    width_m: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TransportArea(Base):
    """An area where muck may be moved only in its time windows (the central city: 20:00–23:30)."""

    __tablename__ = "transport_areas"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    boundary: Mapped[list[list[float]]] = mapped_column(JSONB)
    # ["20:00-23:30", ...] in city time; a window may cross midnight ("22:00-06:00").
    windows: Mapped[list[str]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PositionSource(StrEnum):
    JT808 = "jt808"  # the terminal's own TCP connection
    HTTP = "http"  # a vendor's platform relaying its terminals


class Position(PositionColumns, Base):
    """One reported position of one truck (the kit's positions table): the transport rules read
    positions in the order their transactions ended (services/muck/rules/cursor.py)."""


# What the intake writes: every column but the one the database fills.
POSITION_COLUMNS = position_columns(Position)


class ManifestRow(Base):
    """An electronic manifest (电子联单): one load from its construction site to its disposal site.

    A truck carries one load at a time: at most one undelivered (issued, loaded, in transit)
    manifest per truck, which is what its positions are checked against.
    """

    __tablename__ = "manifests"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    plate: Mapped[str] = mapped_column(ForeignKey("trucks.plate"))
    company_code: Mapped[str] = mapped_column(ForeignKey("companies.code"))
    driver_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("drivers.id"))
    origin_site: Mapped[str] = mapped_column(ForeignKey("sites.code"))
    disposal_site: Mapped[str] = mapped_column(ForeignKey("sites.code"))
    # The origin site's district: the one whose regulators answer for the load.
    district_code: Mapped[str] = mapped_column(String(6))
    route_code: Mapped[str | None] = mapped_column(ForeignKey("routes.code"))
    waste_type: Mapped[str] = mapped_column(String(32))
    declared_quantity_m3: Mapped[float] = mapped_column(Float)
    received_quantity_m3: Mapped[float | None] = mapped_column(Float)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    abnormal_reason: Mapped[str | None] = mapped_column(String(32))
    resolution_note: Mapped[str | None] = mapped_column(String(2000))
    issued_by: Mapped[str] = mapped_column(String(100))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    loaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index(
            "uq_manifests_undelivered_plate",
            "plate",
            unique=True,
            postgresql_where=text("status IN ('issued', 'loaded', 'in_transit')"),
        ),
        Index("ix_manifests_issued", "issued_at", "id"),
        Index("ix_manifests_site_issued", "origin_site", "issued_at", "id"),
        Index("ix_manifests_district_issued", "district_code", "issued_at", "id"),
        Index("ix_manifests_company_issued", "company_code", "issued_at", "id"),
        # The overdue round: undelivered loads by the end of their window.
        Index(
            "ix_manifests_undelivered_window",
            "window_end",
            postgresql_where=text("status IN ('issued', 'loaded', 'in_transit')"),
        ),
        # The gauge of manifests by state: the unfinished ones, however many have finished.
        Index(
            "ix_manifests_unfinished_status",
            "status",
            postgresql_where=text("status NOT IN ('closed', 'cancelled')"),
        ),
        # Retention: finished manifests by when they finished.
        Index("ix_manifests_closed", "closed_at", postgresql_where=text("closed_at IS NOT NULL")),
    )


class ManifestStep(Base):
    """What happened to a manifest and who or what did it: its history, append-only."""

    __tablename__ = "manifest_steps"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    manifest_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("manifests.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # the status after it
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A person's subject, "rules" for the geofences, "overdue" for the window's round.
    actor: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(String(2000))

    __table_args__ = (Index("ix_manifest_steps_manifest", "manifest_id", "id"),)


class Violation(Base):
    """A transport rule broken by a truck, with its evidence; one per truck, kind and episode.

    An episode that grows severe (off route past 15 minutes) is the same violation, escalated: its
    severity, time, detail and track are brought up to date, so it stays one case.

    ``plate`` is not a foreign key: an unregistered truck seen at a gate has no row in ``trucks``.
    ``track`` is the episode's positions ([[iso time, lon, lat, km/h, load], ...]) copied out of
    ``positions``, so the evidence outlives their retention; ``track_sha256`` names it as evidence.
    """

    __tablename__ = "violations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    plate: Mapped[str] = mapped_column(String(12))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(8))
    episode_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(500))
    manifest_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    manifest_number: Mapped[str | None] = mapped_column(String(32))
    company_code: Mapped[str | None] = mapped_column(String(32))
    district_code: Mapped[str | None] = mapped_column(String(6))
    track: Mapped[list[list[object]]] = mapped_column(JSONB, server_default="[]")
    track_sha256: Mapped[str | None] = mapped_column(String(64))
    # Gate snapshots (EvidenceRef as JSON) when a camera saw it.
    snapshots: Mapped[list[dict[str, object]]] = mapped_column(JSONB, server_default="[]")
    # The vision alarm a gate-camera violation came from: one violation per alarm.
    source_alarm: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("plate", "kind", "episode_started_at", name="uq_violations_episode"),
        Index("ix_violations_district_at", "district_code", "at", "id"),
        Index("ix_violations_plate_at", "plate", "at", "id"),
        Index("ix_violations_at", "at", "id"),
        Index("ix_violations_created", "created_at"),
    )


class RuleCursor(Base):
    """How far the transport rules have read ``positions``, and which replica holds the rules' lease.

    One row. ``horizon`` is a transaction id: every position stored by a transaction below it
    has been evaluated. The replica named ``owner`` evaluates until ``lease_until``; it renews the
    lease each round, and another replica takes over only once it has lapsed.
    """

    __tablename__ = "rule_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    horizon: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(100))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
