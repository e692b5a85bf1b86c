"""Tables of the vision service's own database."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id


class Base(DeclarativeBase):
    metadata = make_metadata()


class CameraStatus(StrEnum):
    UNKNOWN = "unknown"  # registered, no heartbeat yet
    ONLINE = "online"
    OFFLINE = "offline"


class AlarmStatus(StrEnum):
    CANDIDATE = "candidate"  # seen, not long enough yet: not in the review queue
    PENDING_REVIEW = "pending_review"
    AUTO_CONFIRMED = "auto_confirmed"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    RESOLVED = "resolved"


class RecheckStatus(StrEnum):
    SCHEDULED = "scheduled"
    PASSED = "passed"
    FAILED = "failed"


# A liveness row costs 60 bytes with its line pointer, and a heartbeat batch (5,000 neighbouring
# ids) updates every row of a page in one statement, before the old versions can be pruned: a page
# must hold each row twice for every update to be HOT. 50 does from the second heartbeat on; 70 took
# eight minutes of heartbeats to get there and ended with a larger table (bench/vision.py).
LIVENESS_FILLFACTOR = 50
OPEN_ALARM_SQL = "status IN ('candidate', 'pending_review', 'auto_confirmed', 'confirmed')"


class Camera(Base):
    """A camera by its GB/T 28181 id; regions of interest per algorithm are polygons (normalised)."""

    __tablename__ = "cameras"

    camera_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(40))
    division_code: Mapped[str] = mapped_column(String(8))
    district_code: Mapped[str | None] = mapped_column(String(6))
    industry_code: Mapped[str] = mapped_column(String(2))
    device_type: Mapped[str] = mapped_column(String(3))
    network_code: Mapped[str] = mapped_column(String(1))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(300))
    grid_code: Mapped[str | None] = mapped_column(String(15))
    engine: Mapped[str | None] = mapped_column(String(64))
    # Written only on transitions: to online by a heartbeat that finds the camera not online, to
    # offline by the sweep (registry.mark_offline). Heartbeats themselves go to ``camera_liveness``.
    status: Mapped[str] = mapped_column(String(16), server_default=CameraStatus.UNKNOWN.value)
    # The releases before migration 0003 wrote every heartbeat here (a non-HOT update of this row
    # and all six of its indexes). Nothing writes it now; the sweep still honours a value a replica
    # of the previous release writes during a rolling update. Dropped, with ``ix_cameras_heartbeat``,
    # by a later migration once no such replica can run.
    legacy_heartbeat_at: Mapped[datetime | None] = mapped_column("last_heartbeat_at", DateTime(timezone=True))
    regions: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_cameras_district", "district_code", "camera_id"),
        Index("ix_cameras_owner", "owner", "camera_id"),
        Index("ix_cameras_status", "status", "camera_id"),
        Index("ix_cameras_lon_lat", "lon", "lat"),
        Index("ix_cameras_heartbeat", "last_heartbeat_at", postgresql_where=text("status = 'online'")),
    )


class CameraLiveness(Base):
    """A camera's last heartbeat, apart from its registry row: 500,000 cameras a minute update
    this narrow row in place (HOT: no index covers ``last_heartbeat_at``, and the fillfactor
    leaves room on each page for the new versions) instead of rewriting ``cameras`` and its indexes."""

    __tablename__ = "camera_liveness"

    camera_id: Mapped[str] = mapped_column(
        ForeignKey("cameras.camera_id", ondelete="CASCADE"), primary_key=True
    )
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = ({"postgresql_with": {"fillfactor": LIVENESS_FILLFACTOR}},)


class AlgorithmRow(Base):
    """A class of the catalogue as this city runs it: seeded from the shipped one, then edited."""

    __tablename__ = "algorithms"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    group: Mapped[str] = mapped_column(String(32))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200))
    category_code: Mapped[str] = mapped_column(String(5))
    gates: Mapped[dict[str, Any]] = mapped_column(JSONB)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    catalogue_version: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CameraOverride(Base):
    """One camera's own gates for one class (a busy market street gets a longer persistence)."""

    __tablename__ = "camera_overrides"

    camera_id: Mapped[str] = mapped_column(
        ForeignKey("cameras.camera_id", ondelete="CASCADE"), primary_key=True
    )
    algorithm_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    gates: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Alarm(Base):
    """A candidate or an alarm of one camera and class: detections merged into it while it is open."""

    __tablename__ = "alarms"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    camera_id: Mapped[str] = mapped_column(String(20))
    algorithm_code: Mapped[str] = mapped_column(String(64))
    category_code: Mapped[str] = mapped_column(String(5))
    district_code: Mapped[str | None] = mapped_column(String(6))
    severity: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    auto_confirmed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    box: Mapped[dict[str, float]] = mapped_column(JSONB)
    best_box: Mapped[dict[str, float]] = mapped_column(JSONB)
    track_id: Mapped[str | None] = mapped_column(String(100))
    best_confidence: Mapped[float] = mapped_column(Float)
    detections: Mapped[int] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    raised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    snapshot_content_type: Mapped[str | None] = mapped_column(String(20))
    snapshot_size: Mapped[int | None] = mapped_column(Integer)
    snapshot_taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    case_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    case_status: Mapped[str | None] = mapped_column(String(20))
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # Intake loads the open items of a (camera, class) key seen within its dedup window.
        Index(
            "ix_alarms_open_key",
            "camera_id",
            "algorithm_code",
            "last_seen_at",
            postgresql_where=text(OPEN_ALARM_SQL),
        ),
        # Cooldown: the key's last raised alarm.
        Index(
            "ix_alarms_key_raised",
            "camera_id",
            "algorithm_code",
            "raised_at",
            postgresql_where=text("raised_at IS NOT NULL"),
        ),
        # The review queue, oldest first, overall and per district.
        Index("ix_alarms_status_raised", "status", "raised_at", "id"),
        Index("ix_alarms_district_status_raised", "district_code", "status", "raised_at", "id"),
        Index("ix_alarms_case", "case_id", postgresql_where=text("case_id IS NOT NULL")),
        # Alarms raised in a period, whatever their status (the auto-dispatch share, the unfiltered
        # list in raised order). A B-tree, not BRIN: alarms are updated and deleted (expired
        # candidates), so new rows land in old pages and the physical order does not follow time.
        Index("ix_alarms_raised", "raised_at", "id", postgresql_where=text("raised_at IS NOT NULL")),
        # A district-bound client's snapshot: is it one of its district's alarms?
        Index(
            "ix_alarms_snapshot",
            "snapshot_sha256",
            "district_code",
            postgresql_where=text("snapshot_sha256 IS NOT NULL"),
        ),
    )


class Review(Base):
    """A person's verdict on an alarm: what the false-positive rates are computed from."""

    __tablename__ = "reviews"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    alarm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"))
    camera_id: Mapped[str] = mapped_column(String(20))
    algorithm_code: Mapped[str] = mapped_column(String(64))
    false_positive: Mapped[bool] = mapped_column(Boolean)
    confidence: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_reviews_algorithm_at", "algorithm_code", "at"),
        Index("ix_reviews_camera_at", "camera_id", "at"),
        # Reviews of a period (the false-positive gauges and statistics): the table is append-only
        # and ``at`` is the insert time, so a BRIN index of a few pages finds a week's rows.
        Index("ix_reviews_at", "at", postgresql_using="brin", postgresql_with={"autosummarize": "on"}),
    )


class Recheck(Base):
    """A fresh analysis asked for after the alarm's case was handled."""

    __tablename__ = "rechecks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    alarm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"))
    case_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    camera_id: Mapped[str] = mapped_column(String(20))
    algorithm_code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    snapshot_content_type: Mapped[str | None] = mapped_column(String(20))
    snapshot_size: Mapped[int | None] = mapped_column(Integer)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_rechecks_due", "due_at", postgresql_where=text("status = 'scheduled'")),
        Index("ix_rechecks_alarm", "alarm_id"),
        Index(
            "ix_rechecks_snapshot", "snapshot_sha256", postgresql_where=text("snapshot_sha256 IS NOT NULL")
        ),
    )


class FleetGauges(Base):
    """The fleet-wide review figures, computed once per period by whichever replica takes the
    advisory lock first (``review.refresh_fleet_gauges``); every replica shows them from this row."""

    __tablename__ = "fleet_gauges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    queue_depth: Mapped[int] = mapped_column(Integer)
    queue_oldest_raised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    auto_dispatch_ratio: Mapped[float] = mapped_column(Float)
    false_positive_ratio: Mapped[dict[str, float]] = mapped_column(JSONB)  # per class, last 7 days
