"""Re-checks after a video case is handled: claim the due ones, ask the engine, publish the verdict.

A claim pushes ``due_at`` forward by a lease, so a replica that dies mid-call leaves the re-check
to be claimed again; ``FOR UPDATE SKIP LOCKED`` lets every replica run the job without repeats.

The lease covers the work: a round claims only as many re-checks as it works on at once
(``concurrency``), each claim is renewed right before its engine call, and the lease outlasts the
longest call the engine client can make (every retry timing out). A claim also carries its
``attempts`` count as a fencing token: a replica whose claim was taken over (its lease ran out,
another replica claimed the row again) finds the count changed, and neither calls the engine nor
writes a verdict.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select, update

from citygrid.blobs import BlobStore, sniff_image
from citygrid.db import transaction_time
from citygrid.errors import DomainError
from citygrid.runtime import Runtime
from services.vision import events
from services.vision.catalogue import gates_of, get_algorithm, load_overrides
from services.vision.domain.geometry import Rect
from services.vision.domain.pipeline import problem_still_there
from services.vision.engines import EngineClient, EngineUnavailable
from services.vision.intake import InvalidRegions, rect_of, regions_of
from services.vision.metrics import VisionMetrics
from services.vision.models import Alarm, Camera, Recheck, RecheckStatus

log = logging.getLogger("services.vision.recheck")
MIN_LEASE = timedelta(minutes=2)
CONCURRENCY = 4


def lease_for(engines: EngineClient) -> timedelta:
    """Long enough for the slowest call the client can make, twice over, and never under 2 minutes."""
    return max(MIN_LEASE, timedelta(seconds=2 * engines.longest_call_seconds + 10))


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    alarm_id: uuid.UUID
    camera_id: str
    algorithm_code: str
    attempts: int


async def run_due_rechecks(
    runtime: Runtime,
    engines: EngineClient,
    blobs: BlobStore,
    *,
    default_engine: str,
    max_snapshot_bytes: int,
    metrics: VisionMetrics | None = None,
    concurrency: int = CONCURRENCY,
) -> int:
    """One round: claim up to ``concurrency`` due re-checks and work on them at once; returns how
    many were claimed (a full round makes the job run again at once)."""
    lease = lease_for(engines)
    claimed = await claim_due(runtime, limit=concurrency, lease=lease)
    outcomes = await asyncio.gather(
        *[
            recheck_one(runtime, engines, blobs, item, default_engine, max_snapshot_bytes, metrics, lease)
            for item in claimed
        ],
        return_exceptions=True,  # one failing re-check neither hides nor orphans the others
    )
    for item, outcome in zip(claimed, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error(
                "re-check %s failed; it is claimed again when its lease ends", item.id, exc_info=outcome
            )
    return len(claimed)


async def claim_due(runtime: Runtime, *, limit: int, lease: timedelta) -> list[Claimed]:
    async with runtime.uow() as uow:
        rows = list(
            await uow.session.scalars(
                select(Recheck)
                .where(Recheck.status == RecheckStatus.SCHEDULED.value, Recheck.due_at <= func.now())
                .order_by(Recheck.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.attempts += 1
            row.due_at = func.now() + lease  # type: ignore[assignment]
        return [Claimed(r.id, r.alarm_id, r.camera_id, r.algorithm_code, r.attempts) for r in rows]


def _still_ours(item: Claimed) -> list[ColumnElement[bool]]:
    """The re-check is still scheduled and still under this claim (no replica claimed it since)."""
    return [
        Recheck.id == item.id,
        Recheck.status == RecheckStatus.SCHEDULED.value,
        Recheck.attempts == item.attempts,
    ]


async def renew(runtime: Runtime, item: Claimed, lease: timedelta) -> bool:
    """A fresh lease for the claim, from now; False when the claim is no longer ours."""
    async with runtime.uow() as uow:
        result = await uow.session.execute(
            update(Recheck)
            .where(*_still_ours(item))
            .values(due_at=func.now() + lease)
            .execution_options(synchronize_session=False)
        )
    return bool(getattr(result, "rowcount", 0))


async def recheck_one(
    runtime: Runtime,
    engines: EngineClient,
    blobs: BlobStore,
    item: Claimed,
    default_engine: str,
    max_snapshot_bytes: int,
    metrics: VisionMetrics | None,
    lease: timedelta,
) -> None:
    if not await renew(runtime, item, lease):
        log.info("re-check %s was claimed again by another replica; leaving it to that one", item.id)
        return
    async with runtime.db() as session:
        camera = await session.get(Camera, item.camera_id)
        alarm = await session.get(Alarm, item.alarm_id)
        algorithm = await get_algorithm(session, item.algorithm_code)
        overrides = await load_overrides(session, [item.camera_id])
    assert camera is not None
    assert alarm is not None
    gates = gates_of(algorithm.gates).with_overrides(overrides.get((item.camera_id, item.algorithm_code)))
    try:
        regions = regions_of(camera.regions, item.algorithm_code)
        result = await engines.analyse(
            camera.engine or default_engine, item.camera_id, item.algorithm_code, regions
        )
    except (EngineUnavailable, InvalidRegions) as error:
        reason = (
            f"camera regions of interest are invalid: {error}"
            if isinstance(error, InvalidRegions)
            else str(error)
        )
        backoff = timedelta(seconds=min(30 * 2 ** min(item.attempts, 6), 3600))
        async with runtime.uow() as uow:
            await uow.session.execute(
                update(Recheck)
                .where(*_still_ours(item))
                .values(last_error=reason[:2000], due_at=func.now() + backoff)
                .execution_options(synchronize_session=False)
            )
        if metrics is not None:
            metrics.rechecks.labels(outcome="error").inc()
        return
    detections = [
        (d.confidence, Rect(b.x, b.y, b.width, b.height)) for d in result.detections for b in d.boxes
    ]
    failed = problem_still_there(detections, rect_of(alarm.best_box), gates, regions)
    stored = None
    if result.snapshot_base64:
        try:
            data = base64.b64decode(result.snapshot_base64, validate=True)
            stored = await blobs.put(data, sniff_image(data, max_bytes=max_snapshot_bytes))
        except (binascii.Error, DomainError):
            stored = None
    async with runtime.uow() as uow:
        row = await uow.session.get(Recheck, item.id, with_for_update=True)
        if row is None or row.status != RecheckStatus.SCHEDULED.value or row.attempts != item.attempts:
            return  # decided meanwhile, or claimed again by another replica: that one publishes
        row.status = (RecheckStatus.FAILED if failed else RecheckStatus.PASSED).value
        row.checked_at = await transaction_time(uow.session)
        row.last_error = None
        if stored is not None:
            row.snapshot_sha256 = stored.sha256
            row.snapshot_content_type = stored.content_type
            row.snapshot_size = stored.size_bytes
        note = (
            f"{len(detections)} detection(s) of {item.algorithm_code} still in the region"
            if failed
            else f"no {item.algorithm_code} left in the region"
        )
        events.record_recheck(uow, row, note)
    if metrics is not None:
        metrics.rechecks.labels(outcome="failed" if failed else "passed").inc()
