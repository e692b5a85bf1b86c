"""Re-checks after a video case is handled: claim the due ones, ask the engine, publish the verdict.

A claim pushes ``due_at`` forward by a lease, so a replica that dies mid-call leaves the re-check
to be claimed again; ``FOR UPDATE SKIP LOCKED`` lets every replica run the job without repeats.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from citygrid.blobs import BlobStore, sniff_image
from citygrid.db import transaction_time
from citygrid.errors import DomainError
from citygrid.runtime import Runtime
from services.vision import events
from services.vision.catalogue import gates_of, get_algorithm, load_overrides
from services.vision.domain.geometry import Rect
from services.vision.domain.pipeline import problem_still_there
from services.vision.engines import EngineClient, EngineUnavailable
from services.vision.intake import rect_of, regions_of
from services.vision.metrics import VisionMetrics
from services.vision.models import Alarm, Camera, Recheck, RecheckStatus

LEASE = timedelta(minutes=2)


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
    limit: int = 20,
) -> int:
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
            row.due_at = func.now() + LEASE  # type: ignore[assignment]
        claimed = [Claimed(r.id, r.alarm_id, r.camera_id, r.algorithm_code, r.attempts) for r in rows]
    for item in claimed:
        await _recheck_one(runtime, engines, blobs, item, default_engine, max_snapshot_bytes, metrics)
    return len(claimed)


async def _recheck_one(
    runtime: Runtime,
    engines: EngineClient,
    blobs: BlobStore,
    item: Claimed,
    default_engine: str,
    max_snapshot_bytes: int,
    metrics: VisionMetrics | None,
) -> None:
    async with runtime.db() as session:
        camera = await session.get(Camera, item.camera_id)
        alarm = await session.get(Alarm, item.alarm_id)
        algorithm = await get_algorithm(session, item.algorithm_code)
        overrides = await load_overrides(session, [item.camera_id])
    assert camera is not None
    assert alarm is not None
    gates = gates_of(algorithm.gates).with_overrides(overrides.get((item.camera_id, item.algorithm_code)))
    regions = regions_of(camera.regions, item.algorithm_code)
    try:
        result = await engines.analyse(
            camera.engine or default_engine, item.camera_id, item.algorithm_code, regions
        )
    except EngineUnavailable as error:
        backoff = timedelta(seconds=min(30 * 2 ** min(item.attempts, 6), 3600))
        async with runtime.uow() as uow:
            row = await uow.session.get(Recheck, item.id, with_for_update=True)
            if row is not None and row.status == RecheckStatus.SCHEDULED.value:
                row.last_error = str(error)[:2000]
                row.due_at = func.now() + backoff  # type: ignore[assignment]
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
        if row is None or row.status != RecheckStatus.SCHEDULED.value:
            return
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
