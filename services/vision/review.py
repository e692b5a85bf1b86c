"""Review: the queue by district, class and age; confirm (raises the case), reject with a reason,
bulk actions; false-positive rates per class and camera, and the threshold they recommend."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, func, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.auth import Principal, require_district
from citygrid.clock import within_range
from citygrid.db import UnitOfWork, transaction_time
from citygrid.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from services.vision import events
from services.vision.catalogue import active_of, get_algorithm, load_algorithms
from services.vision.domain.review_stats import Bucket, recommend_from_buckets
from services.vision.metrics import VisionMetrics
from services.vision.models import Alarm, AlarmStatus, Camera, FleetGauges, Recheck, Review
from services.vision.schemas import CameraRate, ClassRate, FalsePositiveStats

REVIEWER_ROLES = frozenset({"operator", "supervisor"})


class AlarmNotFound(NotFound):
    code = "vision.alarm_not_found"


class NotPendingReview(Conflict):
    code = "vision.alarm_not_pending"
    title = "Alarm not pending review"


class StaleAlarm(PreconditionFailed):
    code = "vision.stale_version"
    title = "Stale version"


class ReviewerRoleRequired(Forbidden):
    code = "vision.role_not_allowed"


def require_reviewer(principal: Principal) -> None:
    if not principal.has_any_role(REVIEWER_ROLES):
        raise ReviewerRoleRequired("reviewing alarms needs the operator or supervisor role")


async def get_alarm(session: AsyncSession, alarm_id: uuid.UUID, *, for_update: bool = False) -> Alarm:
    query = select(Alarm).where(Alarm.id == alarm_id, Alarm.status != AlarmStatus.CANDIDATE.value)
    if for_update:
        query = query.with_for_update()
    alarm = await session.scalar(query)
    if alarm is None:
        raise AlarmNotFound(f"no alarm {alarm_id}")
    return alarm


async def snapshot_in_district(session: AsyncSession, sha256: str, district_code: str) -> bool:
    """Whether an alarm of the district, or a re-check of one, names this snapshot (two index
    probes: ``ix_alarms_snapshot``, ``ix_rechecks_snapshot``)."""
    of_alarm = select(Alarm.id).where(Alarm.snapshot_sha256 == sha256, Alarm.district_code == district_code)
    of_recheck = (
        select(Recheck.id)
        .join(Alarm, Alarm.id == Recheck.alarm_id)
        .where(Recheck.snapshot_sha256 == sha256, Alarm.district_code == district_code)
    )
    found = await session.scalar(select(exists(of_alarm) | exists(of_recheck)))
    return bool(found)


async def rechecks_of(session: AsyncSession, alarm_id: uuid.UUID) -> list[Recheck]:
    rows = await session.scalars(
        select(Recheck).where(Recheck.alarm_id == alarm_id).order_by(Recheck.created_at, Recheck.id)
    )
    return list(rows.all())


async def list_alarms(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    status: AlarmStatus | None = None,
    district_code: str | None = None,
    algorithm_code: str | None = None,
    camera_id: str | None = None,
    raised_before: datetime | None = None,
) -> tuple[list[Alarm], str | None]:
    """Oldest raised first (the review queue's order); candidates are never listed."""
    query = (
        select(Alarm).where(Alarm.raised_at.is_not(None)).order_by(Alarm.raised_at, Alarm.id).limit(limit + 1)
    )
    if status is not None:
        query = query.where(Alarm.status == status.value)
    if district_code is not None:
        query = query.where(Alarm.district_code == district_code)
    if algorithm_code is not None:
        query = query.where(Alarm.algorithm_code == algorithm_code)
    if camera_id is not None:
        query = query.where(Alarm.camera_id == camera_id)
    if raised_before is not None:
        query = query.where(Alarm.raised_at < raised_before)
    if cursor is not None:
        raised, last_id = decode_cursor(cursor, 2)
        after_time = cursor_value(lambda raw: within_range(datetime.fromisoformat(str(raw))), raised)
        after_id = cursor_value(lambda raw: uuid.UUID(str(raw)), last_id)
        query = query.where(
            or_(Alarm.raised_at > after_time, and_(Alarm.raised_at == after_time, Alarm.id > after_id))
        )
    rows = list((await session.scalars(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        assert last.raised_at is not None
        next_cursor = encode_cursor(last.raised_at.isoformat(), str(last.id))
    return rows[:limit], next_cursor


async def visible_alarm(session: AsyncSession, alarm_id: uuid.UUID, principal: Principal) -> Alarm:
    """The alarm, for a caller who may see it: a district-bound principal gets 403
    ``auth.other_district`` for another district's alarm, or one of a camera placed in none."""
    alarm = await get_alarm(session, alarm_id)
    require_district(principal, alarm.district_code)
    return alarm


async def _pending(
    session: AsyncSession, alarm_id: uuid.UUID, principal: Principal, expected_version: int | None
) -> Alarm:
    alarm = await get_alarm(session, alarm_id, for_update=True)
    require_district(principal, alarm.district_code)
    if expected_version is not None and alarm.version != expected_version:
        raise StaleAlarm(
            f"the alarm is at version {alarm.version}, not {expected_version}; reload it and retry",
            current_version=alarm.version,
        )
    if alarm.status != AlarmStatus.PENDING_REVIEW.value:
        raise NotPendingReview(f"the alarm is {alarm.status}, not pending review", alarm_status=alarm.status)
    return alarm


async def _decide(
    uow: UnitOfWork,
    alarm: Alarm,
    principal: Principal,
    *,
    false_positive: bool,
    note: str | None,
) -> None:
    session = uow.session
    now = await transaction_time(session)
    alarm.status = (AlarmStatus.REJECTED if false_positive else AlarmStatus.CONFIRMED).value
    alarm.reviewed_by = principal.subject
    alarm.reviewed_at = now
    alarm.review_note = note
    alarm.version += 1
    alarm.updated_at = now  # type: ignore[assignment]
    if false_positive:
        alarm.resolved_at = now
    session.add(
        Review(
            alarm_id=alarm.id,
            camera_id=alarm.camera_id,
            algorithm_code=alarm.algorithm_code,
            false_positive=false_positive,
            confidence=alarm.best_confidence,
            reason=note,
            reviewer=principal.subject,
        )
    )
    if not false_positive:
        camera = await session.get(Camera, alarm.camera_id)
        assert camera is not None
        algorithm = active_of(await get_algorithm(session, alarm.algorithm_code))
        events.record_confirmed(uow, alarm, camera, algorithm, principal.subject)
    await session.flush()


async def confirm(
    uow: UnitOfWork,
    alarm_id: uuid.UUID,
    principal: Principal,
    *,
    expected_version: int | None,
    note: str | None = None,
    metrics: VisionMetrics | None = None,
) -> Alarm:
    """One click: the alarm is confirmed and ``vision.alarm.confirmed`` raises the case."""
    require_reviewer(principal)
    alarm = await _pending(uow.session, alarm_id, principal, expected_version)
    await _decide(uow, alarm, principal, false_positive=False, note=note)
    if metrics is not None:
        metrics.reviews.labels(algorithm=alarm.algorithm_code, verdict="confirmed").inc()
    return alarm


async def reject(
    uow: UnitOfWork,
    alarm_id: uuid.UUID,
    principal: Principal,
    *,
    expected_version: int | None,
    reason: str,
    metrics: VisionMetrics | None = None,
) -> Alarm:
    require_reviewer(principal)
    alarm = await _pending(uow.session, alarm_id, principal, expected_version)
    await _decide(uow, alarm, principal, false_positive=True, note=reason)
    if metrics is not None:
        metrics.reviews.labels(algorithm=alarm.algorithm_code, verdict="false_positive").inc()
    return alarm


# Confidence buckets of the recommended threshold: 0.001 wide, as precise as the recommendation.
# At most 1,001 rows per class, whatever the number of reviews.
BUCKET_WIDTH = 1000
# Literals, not bound parameters: GROUP BY must see the very expression the SELECT list has.
BUCKET = func.floor(Review.confidence * literal_column(str(BUCKET_WIDTH)) + literal_column("1e-9"))
FALSE_COUNT = func.count().filter(Review.false_positive)


def class_buckets_query(since: Any) -> Select[str, Any, int, int]:
    """Reviews since ``since`` per class and confidence bucket: (class, bucket, reviewed, false)."""
    return (
        select(Review.algorithm_code, BUCKET, func.count(), FALSE_COUNT)
        .where(Review.at >= since)
        .group_by(Review.algorithm_code, BUCKET)
    )


def camera_rates_query(since: Any, limit: int = 100) -> Select[str, int, int]:
    """The cameras with the highest false-positive rate since ``since``."""
    return (
        select(Review.camera_id, func.count(), FALSE_COUNT)
        .where(Review.at >= since)
        .group_by(Review.camera_id)
        .order_by((FALSE_COUNT * 1.0 / func.count()).desc(), Review.camera_id)
        .limit(limit)
    )


async def false_positive_stats(session: AsyncSession, *, days: int, target_rate: float) -> FalsePositiveStats:
    """Aggregated by the database (``ix_reviews_at`` finds the period's rows): Python gets at most
    one row per class and confidence bucket, and the 100 worst cameras."""
    since = await session.scalar(select(func.now() - timedelta(days=days)))
    assert since is not None
    algorithms = await load_algorithms(session)
    by_class: dict[str, list[Bucket]] = {}
    for code, bucket, total, false in await session.execute(class_buckets_query(since)):
        by_class.setdefault(code, []).append(Bucket(float(bucket) / BUCKET_WIDTH, total, false))
    classes = []
    for code in sorted(by_class):
        current = algorithms[code].gates.min_confidence if code in algorithms else 0.0
        recommendation = recommend_from_buckets(by_class[code], current, target_rate=target_rate)
        classes.append(
            ClassRate(
                algorithm_code=code,
                reviewed=recommendation.reviewed,
                false_positives=recommendation.false_positives,
                false_positive_rate=recommendation.false_positive_rate,
                min_confidence=current,
                recommended_min_confidence=recommendation.recommended_min_confidence,
                note=recommendation.reason,
            )
        )
    cameras = [
        CameraRate(
            camera_id=camera_id, reviewed=total, false_positives=false, false_positive_rate=false / total
        )
        for camera_id, total, false in await session.execute(camera_rates_query(since))
    ]
    return FalsePositiveStats(since=since, classes=classes, cameras=cameras)


# -- the fleet's review figures ----------------------------------------------------------------------
#
# Every replica runs the gauges job; the figures are computed once per period for the fleet. The
# replica that takes the advisory lock and finds the stored figures older than the period computes
# them (with a statement timeout) and stores them in ``fleet_gauges``; the others, and it, show
# what is stored. Any replica can compute, so none is special and a dead one is never missed.

GAUGES_LOCK = 7_732_001
GAUGES_ROW = 1
WEEK = timedelta(days=7)
ANALYTICS_TIMEOUT = "30s"


def queue_query() -> Select[int, datetime | None]:
    """Alarms waiting for review and the oldest one's raise time (``ix_alarms_status_raised``)."""
    return select(func.count(), func.min(Alarm.raised_at)).where(
        Alarm.status == AlarmStatus.PENDING_REVIEW.value
    )


def false_positive_ratio_query(since: Any) -> Select[str, int, int]:
    """Reviews per class since ``since`` and the false positives among them (``ix_reviews_at``)."""
    return (
        select(Review.algorithm_code, func.count(), FALSE_COUNT)
        .where(Review.at >= since)
        .group_by(Review.algorithm_code)
    )


def auto_dispatch_query(since: Any) -> Select[int, int]:
    """Alarms raised since ``since`` and those that dispatched themselves (``ix_alarms_raised``)."""
    return select(func.count(), func.count().filter(Alarm.auto_confirmed)).where(
        Alarm.raised_at.is_not(None), Alarm.raised_at >= since
    )


async def compute_fleet_gauges(session: AsyncSession) -> dict[str, Any]:
    now = await transaction_time(session)
    depth, oldest = (await session.execute(queue_query())).one()
    ratios = {
        code: false / total
        for code, total, false in await session.execute(false_positive_ratio_query(now - WEEK))
    }
    raised, auto = (await session.execute(auto_dispatch_query(now - WEEK))).one()
    return {
        "computed_at": now,
        "queue_depth": int(depth),
        "queue_oldest_raised_at": oldest,
        "auto_dispatch_ratio": auto / raised if raised else 0.0,
        "false_positive_ratio": ratios,
    }


async def refresh_fleet_gauges(
    sessions: async_sessionmaker[AsyncSession], metrics: VisionMetrics, *, every_seconds: float
) -> bool:
    """Compute the figures if this replica's turn has come, then show the stored ones; returns
    whether this replica computed them."""
    computed = False
    async with sessions() as session, session.begin():
        if await session.scalar(select(func.pg_try_advisory_xact_lock(GAUGES_LOCK))):
            # Due when older than most of a period: replicas' jobs drift, and one of them should
            # find the figures due each period rather than every other one.
            fresh = await session.scalar(
                select(func.count())
                .select_from(FleetGauges)
                .where(
                    FleetGauges.id == GAUGES_ROW,
                    FleetGauges.computed_at > func.now() - timedelta(seconds=every_seconds * 0.8),
                )
            )
            if not fresh:
                await session.execute(text(f"SET LOCAL statement_timeout = '{ANALYTICS_TIMEOUT}'"))
                figures = await compute_fleet_gauges(session)
                await session.execute(
                    insert(FleetGauges)
                    .values(id=GAUGES_ROW, **figures)
                    .on_conflict_do_update(index_elements=[FleetGauges.id], set_=figures)
                )
                computed = True
    async with sessions() as session:
        row = (
            await session.execute(select(FleetGauges, func.now()).where(FleetGauges.id == GAUGES_ROW))
        ).first()
    if row is not None:
        show_fleet_gauges(metrics, row[0], row[1])
    return computed


def show_fleet_gauges(metrics: VisionMetrics, gauges: FleetGauges, now: datetime) -> None:
    metrics.queue_depth.set(gauges.queue_depth)
    oldest = gauges.queue_oldest_raised_at
    metrics.queue_oldest_age.set(max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
    metrics.auto_dispatch_ratio.set(gauges.auto_dispatch_ratio)
    # A class without reviews this week has no ratio: its series goes rather than stay stale.
    metrics.false_positive_ratio.clear()
    for code, ratio in gauges.false_positive_ratio.items():
        metrics.false_positive_ratio.labels(algorithm=code).set(ratio)
    metrics.figures_age.set(max((now - gauges.computed_at).total_seconds(), 0.0))
