"""Tables of the case service's own database."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id
from contract.case import CaseSource, CaseStatus


class Base(DeclarativeBase):
    metadata = make_metadata()


def _enum(cls: type[CaseStatus] | type[CaseSource], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda members: [m.value for m in members])


EVALUATION_MARKS_SQL = (
    "action IN ('rework', 'extension_approved') OR (action = 'handle' AND at > deadline_at)"
)
OPEN_CASE_SQL = "status IN ('reported', 'registered', 'dispatched', 'accepted', 'suspended', 'handled')"
TASK_CASE_SQL = "status IN ('dispatched', 'accepted', 'suspended')"


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[CaseStatus] = mapped_column(_enum(CaseStatus, "case_status"))
    category_code: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(300))
    district_code: Mapped[str] = mapped_column(String(6))
    street_code: Mapped[str | None] = mapped_column(String(9))
    community_code: Mapped[str | None] = mapped_column(String(12))
    grid_code: Mapped[str | None] = mapped_column(String(15))
    likely_duplicate_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source: Mapped[CaseSource] = mapped_column(_enum(CaseSource, "case_source"))
    # Set when another service raised the case: that service and its record's id (unique together).
    origin_service: Mapped[str | None] = mapped_column(String(16))
    origin_reference: Mapped[str | None] = mapped_column(String(100))
    reporter_name: Mapped[str | None] = mapped_column(String(100))
    reporter_phone: Mapped[str | None] = mapped_column(String(20))
    reporter_email: Mapped[str | None] = mapped_column(String(254))
    unit: Mapped[str | None] = mapped_column(String(100))
    accepted_by: Mapped[str | None] = mapped_column(String(200))  # the handler who took it on
    merged_into: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The original's number, kept so a merged report can always tell its reporter what to follow.
    merged_into_number: Mapped[str | None] = mapped_column(String(32))
    # The clock of the current stage (services/case/domain/deadlines.py).
    stage: Mapped[str | None] = mapped_column(String(16))
    stage_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_remaining_seconds: Mapped[float | None] = mapped_column(Float)
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)
    reported_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # One index per list filter, each ending in the page order, so every page is a range scan.
        Index("ix_cases_created", "created_at", "id"),
        Index("ix_cases_status_created", "status", "created_at", "id"),
        Index("ix_cases_district_created", "district_code", "created_at", "id"),
        Index("ix_cases_category_created", "category_code", "created_at", "id"),
        # The overdue scan reads only cases whose running clock has not been marked yet.
        Index(
            "ix_cases_due",
            "deadline_at",
            postgresql_where=text("overdue_at IS NULL AND deadline_at IS NOT NULL"),
        ),
        # Duplicate detection: open cases of one small class within a latitude band.
        Index("ix_cases_category_lat", "category_code", "lat", postgresql_where=text(OPEN_CASE_SQL)),
        # A unit's task list: its cases in hand, soonest deadline first.
        Index("ix_cases_unit_tasks", "unit", "deadline_at", "id", postgresql_where=text(TASK_CASE_SQL)),
        # Evaluation: the cases a period touches, by when they were registered, dispatched, closed.
        Index("ix_cases_registered", "registered_at"),
        Index("ix_cases_dispatched", "dispatched_at"),
        Index("ix_cases_closed", "closed_at"),
    )


class CaseHistory(Base):
    __tablename__ = "case_history"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[CaseStatus | None] = mapped_column(_enum(CaseStatus, "case_status"))
    to_status: Mapped[CaseStatus] = mapped_column(_enum(CaseStatus, "case_status"))
    actor: Mapped[str] = mapped_column(String(200))
    actor_name: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The stage deadline that was running when the step was taken (cases.deadline_at moves on to
    # the next stage): a handling is on time when ``at <= deadline_at``.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_case_history_case", "case_id", "at", "id"),
        # The few rows evaluation looks up per case: reworks, approved extensions, late handlings.
        Index(
            "ix_case_history_evaluation_marks",
            "at",
            postgresql_include=["case_id", "action"],
            postgresql_where=text(EVALUATION_MARKS_SQL),
        ),
    )


class Category(Base):
    """The catalogue as this city runs it: seeded from the shipped version, then edited by admins."""

    __tablename__ = "categories"

    code: Mapped[str] = mapped_column(String(5), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    big_class_code: Mapped[str] = mapped_column(String(2))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200))
    limits: Mapped[dict[str, Any]] = mapped_column(JSONB)
    urgent: Mapped[bool] = mapped_column(Boolean)
    default_unit_type: Mapped[str] = mapped_column(String(40))
    open311_service_code: Mapped[str] = mapped_column(String(40), unique=True)
    open311_group: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    catalogue_version: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CalendarYear(Base):
    """A year of the work calendar that overrides the shipped one (public holidays, make-up days)."""

    __tablename__ = "calendar_years"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReferenceVersion(Base):
    """A counter per kind of reference data every replica holds in memory (the work calendar).

    Every edit bumps it in its own transaction (the row lock orders concurrent edits, so the counter
    grows in commit order); each replica polls it and reloads when it moved.
    """

    __tablename__ = "reference_versions"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EvaluationSnapshot(Base):
    """Figures computed once for all replicas (today's gauges): written by the replica that holds
    the job's advisory lock when the stored ones are stale, read by every replica."""

    __tablename__ = "evaluation_snapshots"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # [{"key": "440106", "counts": {…}}, …]: services.case.domain.evaluation.Counts as JSON.
    groups: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class GridCellRow(Base):
    """One unit grid cell (单元网格), stored as a GeoJSON feature; the index lives in memory."""

    __tablename__ = "grid_cells"

    code: Mapped[str] = mapped_column(String(15), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    street_code: Mapped[str] = mapped_column(String(9))
    community_code: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(200))
    feature: Mapped[dict[str, Any]] = mapped_column(JSONB)
    min_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CaseNumberCounter(Base):
    """The last sequence number issued per district and local day."""

    __tablename__ = "case_number_counters"

    district_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


# One case per record of another service, however often (and under whatever event id) it arrives.
Index("ux_cases_origin", Case.origin_service, Case.origin_reference, unique=True)


class CaseEvidence(Base):
    """A photo of a case, named by its content hash.

    Uploaded here (kinds before, check_in, after, verification: the bytes are in this service's blob
    store, ``service`` is empty) or held by the service that raised the case (kinds detection and
    recheck: ``service`` and ``url`` say where to fetch it).
    """

    __tablename__ = "case_evidence"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    service: Mapped[str | None] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(500))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_by_name: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_case_evidence_case", "case_id", "uploaded_at", "id"),
        # The same photo sent twice for the same purpose is one record.
        Index("uq_case_evidence_content", "case_id", "kind", "sha256", unique=True),
    )


class Open311Submission(Base):
    """What an Open311 client sent beside the case itself: its photo link, its own ids, attributes."""

    __tablename__ = "open311_submissions"

    case_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    media_url: Mapped[str | None] = mapped_column(String(2000))
    device_id: Mapped[str | None] = mapped_column(String(100))
    account_id: Mapped[str | None] = mapped_column(String(100))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    submitted_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CaseCheckIn(Base):
    """A handler's arrival on site, with the GPS fix and its distance to the case's point."""

    __tablename__ = "case_check_ins"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(200))
    actor_name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(100))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    distance_m: Mapped[float] = mapped_column(Float)
    far: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_case_check_ins_case", "case_id", "at", "id"),)


class CaseExtension(Base):
    """A unit's request for more time to handle a case, and the dispatcher's decision."""

    __tablename__ = "case_extensions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    requested_deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    previous_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    granted_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_by_name: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_by_name: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_case_extensions_case", "case_id", "requested_at", "id"),
        # One open request per case, whatever two clients send at once.
        Index(
            "uq_case_extensions_pending",
            "case_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
    )


class Unit(Base):
    """A responsible unit (责任单位): a district or street office, a utility, an enforcement team …

    Units form a hierarchy (``parent_code``); shipped defaults are added at startup, never
    overwriting an admin's edit. Units are deactivated, never deleted: history names them.
    """

    __tablename__ = "units"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(40))
    district_code: Mapped[str | None] = mapped_column(String(6))
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("units.code"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DispatchRule(Base):
    """Category × area → unit: a registered case matching it is dispatched by the system.

    ``category_code`` is a small class (5 digits) or a big class (its 3-digit prefix); ``area_code``
    a prefix of the grid code: district (6), street (9), community (12), grid (15), or empty for
    the whole city. The most specific matching rule wins (services/case/domain/dispatch_rules.py).
    """

    __tablename__ = "dispatch_rules"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    category_code: Mapped[str] = mapped_column(String(5))
    area_code: Mapped[str] = mapped_column(String(15))
    unit_code: Mapped[str] = mapped_column(ForeignKey("units.code"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("category_code", "area_code"),)
