"""Tables of the gas service's own database.

``scans`` is the big one (every movement of 5.4 M cylinders): append-only, partitioned by month of
the scan's time, each partition dropped whole once older than the retention. A cylinder keeps its
current state on its own row, so the fill check reads one row by primary key and never the scans.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id
from services.gas.domain.lifecycle import CylinderStatus


class Base(DeclarativeBase):
    metadata = make_metadata()


class EnterpriseKind(StrEnum):
    GAS_COMPANY = "gas_company"  # owns cylinders
    FILLING_STATION = "filling_station"  # fills them, for its company and those that entrust it
    SUPPLY_POINT = "supply_point"  # sells and delivers them


class Enterprise(Base):
    """A gas company, a filling station or a supply point, with its operating licence.

    A station or supply point belongs to one company (``company_code``); a company's own row has
    none. A station's scales are locked by a regulator on the station's row (``locked_at``)."""

    __tablename__ = "enterprises"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    company_code: Mapped[str | None] = mapped_column(ForeignKey("enterprises.code"))
    licence_number: Mapped[str] = mapped_column(String(64))
    licence_valid_until: Mapped[date | None] = mapped_column(Date)
    district_code: Mapped[str | None] = mapped_column(String(6))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_by: Mapped[str | None] = mapped_column(String(100))
    lock_reason: Mapped[str | None] = mapped_column(String(500))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_enterprises_company", "company_code", "code"),
        Index("ix_enterprises_district", "district_code", "code"),
    )


class Entrustment(Base):
    """A company entrusts a station of another company to fill its cylinders."""

    __tablename__ = "entrustments"

    company_code: Mapped[str] = mapped_column(ForeignKey("enterprises.code"), primary_key=True)
    station_code: Mapped[str] = mapped_column(ForeignKey("enterprises.code"), primary_key=True)
    valid_until: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_entrustments_station", "station_code"),)


class StationLock(Base):
    """Every lock and unlock of a station's scales: who, when, why (the audit trail)."""

    __tablename__ = "station_locks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    station_code: Mapped[str] = mapped_column(ForeignKey("enterprises.code"))
    locked: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_station_locks_station", "station_code", "at"),
        Index("ix_station_locks_at", "at"),
    )


class GasUser(Base):
    """A household, restaurant or business that holds cylinders. Name, phone and address are
    personal data: masked for a caller without ``pii:read``, never logged."""

    __tablename__ = "gas_users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(300))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    supplier_code: Mapped[str | None] = mapped_column(ForeignKey("enterprises.code"))
    stove_sold_on: Mapped[date | None] = mapped_column(Date)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_gas_users_district", "district_code", "id"),
        Index("ix_gas_users_stove", "district_code", "stove_sold_on"),
    )


class Cylinder(Base):
    """One cylinder by its one code, with its current state: what the fill check reads."""

    __tablename__ = "cylinders"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_code: Mapped[str] = mapped_column(ForeignKey("enterprises.code"))
    manufacturer: Mapped[str] = mapped_column(String(200))
    serial: Mapped[str] = mapped_column(String(64))
    manufactured_on: Mapped[date] = mapped_column(Date)
    last_inspected_on: Mapped[date | None] = mapped_column(Date)
    last_passed_inspection_on: Mapped[date | None] = mapped_column(Date)
    # Both follow from the two dates above (services/gas/domain/rules.py); stored for the lists of
    # cylinders due, which must not compute them over 5.4 M rows.
    next_inspection_due: Mapped[date] = mapped_column(Date)
    end_of_life: Mapped[date] = mapped_column(Date)
    tare_kg: Mapped[float | None] = mapped_column(Numeric(6, 2, asdecimal=False))
    capacity_kg: Mapped[float] = mapped_column(Numeric(6, 2, asdecimal=False))
    status: Mapped[str] = mapped_column(String(20), server_default=CylinderStatus.IN_STOCK.value)
    holder_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("gas_users.id"))
    last_scan_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_scan_kind: Mapped[str | None] = mapped_column(String(20))
    last_lon: Mapped[float | None] = mapped_column(Float)
    last_lat: Mapped[float | None] = mapped_column(Float)
    last_place: Mapped[str | None] = mapped_column(String(32))  # the enterprise of the last scan
    last_fill_batch: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_cylinders_owner_due", "owner_code", "next_inspection_due"),
        Index("ix_cylinders_end_of_life", "end_of_life"),
        Index("ix_cylinders_holder", "holder_id", postgresql_where=text("holder_id IS NOT NULL")),
        Index(
            "ix_cylinders_fill_batch", "last_fill_batch", postgresql_where=text("last_fill_batch IS NOT NULL")
        ),
    )


class Scan(Base):
    """One movement of one cylinder, as scanned: append-only, partitioned by month of ``at``."""

    __tablename__ = "scans"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=new_id)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cylinder_code: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20))
    status_after: Mapped[str] = mapped_column(String(20))
    enterprise_code: Mapped[str | None] = mapped_column(String(32))
    operator: Mapped[str | None] = mapped_column(String(100))
    scale_id: Mapped[str | None] = mapped_column(String(64))
    net_mass_kg: Mapped[float | None] = mapped_column(Numeric(6, 2, asdecimal=False))
    fill_batch: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(10), server_default="api")
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        PrimaryKeyConstraint("at", "id", name="pk_scans"),
        Index("ix_scans_cylinder", "cylinder_code", "at"),
        Index("ix_scans_fill_batch", "fill_batch", postgresql_where=text("fill_batch IS NOT NULL")),
        # EPCIS queries by readPoint and by bizStep, in time order.
        Index("ix_scans_enterprise", "enterprise_code", "at", "id"),
        Index("ix_scans_kind", "kind", "at", "id"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class FillCheck(Base):
    """A scale's question and the answer it got: the station's pre-fill record."""

    __tablename__ = "fill_checks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=new_id)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    cylinder_code: Mapped[str] = mapped_column(String(40))
    station_code: Mapped[str] = mapped_column(String(32))
    scale_id: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str | None] = mapped_column(String(100))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[str] = mapped_column(String(400), server_default="")  # comma-separated

    __table_args__ = (
        PrimaryKeyConstraint("at", "id", name="pk_fill_checks"),
        Index("ix_fill_checks_station", "station_code", "at"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class Violation(Base):
    """One cylinder refused at one station on one city day: the first refusal of the day publishes
    ``gas.violation.detected`` (and so one case); later ones count here only."""

    __tablename__ = "violations"

    station_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    cylinder_code: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reasons: Mapped[str] = mapped_column(String(400))
    refusals: Mapped[int] = mapped_column(Integer, server_default="1")
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_violations_day", "day"),)


class FleetFigures(Base):
    """The fleet's figures (cylinders by status, open incidents): computed by one replica per period
    (a count over millions of rows is not for every scrape of every replica), shown by all."""

    __tablename__ = "fleet_figures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cylinders_by_status: Mapped[dict[str, int]] = mapped_column(JSONB)
    open_incidents: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Incident(Base):
    """A gas leak and its response, one step of the drill after another (``domain.incidents``).
    The reporter's name and phone are personal data."""

    __tablename__ = "incidents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    step: Mapped[str] = mapped_column(String(24))
    premises_type: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    place: Mapped[str] = mapped_column(String(300))
    district_code: Mapped[str] = mapped_column(String(6))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text)
    reporter_name: Mapped[str | None] = mapped_column(String(200))
    reporter_phone: Mapped[str | None] = mapped_column(String(32))
    cylinder_code: Mapped[str | None] = mapped_column(String(40))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index(
            "ix_incidents_open", "district_code", "reported_at", postgresql_where=text("closed_at IS NULL")
        ),
        Index("ix_incidents_reported", "reported_at", "id"),
        Index("ix_incidents_closed", "closed_at", postgresql_where=text("closed_at IS NOT NULL")),
    )


class IncidentStepRecord(Base):
    """Who did each step of an incident's response, and when."""

    __tablename__ = "incident_steps"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"))
    step: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(1000))

    __table_args__ = (
        Index("ix_incident_steps_incident", "incident_id", "at"),
        Index("ix_incident_steps_at", "at"),
    )


class CaptureJob(Base):
    """An EPCIS capture (``POST /epcis/capture``) and its outcome, as the standard's CaptureJob."""

    __tablename__ = "capture_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    running: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    success: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    error_behaviour: Mapped[str] = mapped_column(String(10), server_default="rollback")
    errors: Mapped[list[dict[str, object]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    events: Mapped[int] = mapped_column(Integer, server_default="0")
    captured_by: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_capture_jobs_created", "created_at"),)


class EpcisEventId(Base):
    """The eventID an enterprise gave a captured event, and the scan it became: a second capture of
    the same event is refused (409), and the query answers with the enterprise's own id."""

    __tablename__ = "epcis_event_ids"

    event_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    scan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    scan_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_epcis_event_ids_scan", "scan_id"),
        Index("ix_epcis_event_ids_captured", "captured_at"),
    )


class SafetyInspection(Base):
    """A household safety inspection (入户安检): who inspected which user's premises, and what was found."""

    __tablename__ = "safety_inspections"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gas_users.id"))
    district_code: Mapped[str] = mapped_column(String(6))
    inspected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    inspector: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(1000))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_safety_inspections_user", "user_id", "inspected_at"),
        Index("ix_safety_inspections_district", "district_code", "inspected_at"),
    )


class Hazard(Base):
    """A hazard an inspection found, and its rectification (by a date, then done, by whom)."""

    __tablename__ = "hazards"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    inspection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("safety_inspections.id"))
    district_code: Mapped[str] = mapped_column(String(6))
    kind: Mapped[str] = mapped_column(String(40))
    description: Mapped[str | None] = mapped_column(String(1000))
    rectify_by: Mapped[date] = mapped_column(Date)
    rectified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rectified_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_hazards_inspection", "inspection_id"),
        Index(
            "ix_hazards_open", "district_code", "rectify_by", postgresql_where=text("rectified_at IS NULL")
        ),
        # Retention: rectified hazards by when they were rectified.
        Index("ix_hazards_rectified", "rectified_at", postgresql_where=text("rectified_at IS NOT NULL")),
    )


class OutreachActivity(Base):
    """A safety outreach activity (a street's campaign day): when, where, how many came."""

    __tablename__ = "outreach_activities"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    district_code: Mapped[str] = mapped_column(String(6))
    street: Mapped[str | None] = mapped_column(String(100))
    held_on: Mapped[date] = mapped_column(Date)
    place: Mapped[str] = mapped_column(String(300))
    topic: Mapped[str] = mapped_column(String(300))
    attendance: Mapped[int] = mapped_column(Integer)
    organiser: Mapped[str] = mapped_column(String(200))
    recorded_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_outreach_district_day", "district_code", "held_on"),
        Index("ix_outreach_created", "created_at"),
    )


class EpcisForeignEvent(Base):
    """An EPCIS event captured whole that is no scan of a registered cylinder (another asset, a
    sensor report): kept as it came, so the query answers with it. Kept as long as scans."""

    __tablename__ = "epcis_events"

    event_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    biz_step: Mapped[str | None] = mapped_column(String(300))
    read_point: Mapped[str | None] = mapped_column(String(500))
    epcs: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    document: Mapped[dict[str, object]] = mapped_column(JSONB)
    capture_id: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_epcis_events_time", "event_time", "event_id"),
        Index("ix_epcis_events_epcs", "epcs", postgresql_using="gin"),
        Index("ix_epcis_events_recorded", "recorded_at"),
    )


class AnomalyKind(StrEnum):
    IMPLAUSIBLE_TRAVEL = "implausible_travel"  # two places faster than a vehicle could go
    DELIVERY_TO_UNREGISTERED_USER = "delivery_to_unregistered_user"
    FILLED_OUTSIDE_NETWORK = "filled_outside_network"  # at a station of neither owner nor entrusted


class Anomaly(Base):
    """Something in a cylinder's trace that should not be: found as scans and checks arrive."""

    __tablename__ = "anomalies"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40))
    cylinder_code: Mapped[str] = mapped_column(String(40))
    enterprise_code: Mapped[str | None] = mapped_column(String(32))
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, object]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        Index("ix_anomalies_kind", "kind", "detected_at", "id"),
        Index("ix_anomalies_cylinder", "cylinder_code", "detected_at"),
        Index("ix_anomalies_detected", "detected_at"),
    )
