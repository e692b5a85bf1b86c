"""Review: the queue by district, class and age; confirm (raises the case), reject with a reason,
bulk actions; false-positive rates per class and camera, and the threshold they recommend."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.clock import within_range
from citygrid.db import UnitOfWork, transaction_time
from citygrid.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from services.vision import events
from services.vision.catalogue import active_of, get_algorithm, load_algorithms
from services.vision.domain.review_stats import Reviewed, recommend_threshold
from services.vision.metrics import VisionMetrics
from services.vision.models import Alarm, AlarmStatus, Camera, Recheck, Review
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


async def _pending(session: AsyncSession, alarm_id: uuid.UUID, expected_version: int | None) -> Alarm:
    alarm = await get_alarm(session, alarm_id, for_update=True)
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
    alarm = await _pending(uow.session, alarm_id, expected_version)
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
    alarm = await _pending(uow.session, alarm_id, expected_version)
    await _decide(uow, alarm, principal, false_positive=True, note=reason)
    if metrics is not None:
        metrics.reviews.labels(algorithm=alarm.algorithm_code, verdict="false_positive").inc()
    return alarm


async def false_positive_stats(session: AsyncSession, *, days: int, target_rate: float) -> FalsePositiveStats:
    since = await session.scalar(select(func.now() - timedelta(days=days)))
    assert since is not None
    algorithms = await load_algorithms(session)
    by_class: dict[str, list[Reviewed]] = {}
    for code, confidence, false_positive in await session.execute(
        select(Review.algorithm_code, Review.confidence, Review.false_positive).where(Review.at >= since)
    ):
        by_class.setdefault(code, []).append(Reviewed(confidence, false_positive))
    classes = []
    for code in sorted(by_class):
        current = algorithms[code].gates.min_confidence if code in algorithms else 0.0
        recommendation = recommend_threshold(by_class[code], current, target_rate=target_rate)
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
    false_count = func.sum(case((Review.false_positive, 1), else_=0))
    cameras = [
        CameraRate(
            camera_id=camera_id, reviewed=total, false_positives=false, false_positive_rate=false / total
        )
        for camera_id, total, false in await session.execute(
            select(Review.camera_id, func.count(), false_count)
            .where(Review.at >= since)
            .group_by(Review.camera_id)
            .order_by((false_count * 1.0 / func.count()).desc(), Review.camera_id)
            .limit(100)
        )
    ]
    return FalsePositiveStats(since=since, classes=classes, cameras=cameras)


async def refresh_gauges(session: AsyncSession, metrics: VisionMetrics) -> None:
    """Queue depth and age, FP ratio per class and the auto-dispatch share, for /metrics."""
    depth, oldest = (
        await session.execute(
            select(func.count(), func.extract("epoch", func.now() - func.min(Alarm.raised_at))).where(
                Alarm.status == AlarmStatus.PENDING_REVIEW.value
            )
        )
    ).one()
    metrics.queue_depth.set(depth)
    metrics.queue_oldest_age.set(float(oldest or 0.0))
    week = func.now() - timedelta(days=7)
    for code, total, false in await session.execute(
        select(Review.algorithm_code, func.count(), func.sum(case((Review.false_positive, 1), else_=0)))
        .where(Review.at >= week)
        .group_by(Review.algorithm_code)
    ):
        metrics.false_positive_ratio.labels(algorithm=code).set(false / total)
    raised, auto = (
        await session.execute(
            select(func.count(), func.sum(case((Alarm.auto_confirmed, 1), else_=0))).where(
                Alarm.raised_at >= week
            )
        )
    ).one()
    metrics.auto_dispatch_ratio.set((auto or 0) / raised if raised else 0.0)
