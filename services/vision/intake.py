"""Detection intake: per-item checks, then the pipeline per (camera, class) key under its lock.

Two replicas given the same burst serialise on each key's transaction-scoped advisory lock
(taken in key order, so they never deadlock): the second sees the first's alarm and merges into it.

A batch is staged first, before any database work (``stage``): items checked, snapshots decoded
and written to the blob store, fsync included. The transaction that takes the locks then only
names blobs that already exist. Blobs are content-addressed, so a snapshot the pipeline does not
keep, or one of a batch whose transaction rolls back, is an orphan file that nothing names and
nothing reads: harmless, and a retried batch finds it stored already.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ARRAY, String, Table, bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.blobs import BlobStore, StoredBlob, sniff_image
from citygrid.db import UnitOfWork
from citygrid.errors import DomainError
from citygrid.ids import new_id
from services.vision import events
from services.vision.catalogue import ActiveAlgorithm, CatalogueCache, load_algorithms, load_overrides
from services.vision.domain.geometry import Polygon, Rect
from services.vision.domain.pipeline import Item, KeyState, Observation, Outcome, best_outcome, observe
from services.vision.metrics import VisionMetrics
from services.vision.models import OPEN_ALARM_SQL, Alarm, AlarmStatus, Camera
from services.vision.schemas import DetectionIn, ItemResult, RegionPolygon

log = logging.getLogger("services.vision.intake")
DETECTION = TypeAdapter(DetectionIn)
POLYGONS: TypeAdapter[list[list[tuple[float, float]]]] = TypeAdapter(list[RegionPolygon])
OPEN_STATUSES = (
    AlarmStatus.CANDIDATE.value,
    AlarmStatus.PENDING_REVIEW.value,
    AlarmStatus.AUTO_CONFIRMED.value,
    AlarmStatus.CONFIRMED.value,
)
assert all(status in OPEN_ALARM_SQL for status in OPEN_STATUSES)
Key = tuple[str, str]
ALARMS: Table = Alarm.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class IntakeLimits:
    max_snapshot_bytes: int = 512 * 1024
    max_age: timedelta = timedelta(hours=24)
    max_ahead: timedelta = timedelta(minutes=5)


@dataclass
class Snapshot:
    data: bytes
    content_type: str
    sha256: str
    taken_at: datetime
    stored: StoredBlob | None = None  # set by ``stage`` once the blob store holds it


@dataclass
class Accepted:
    index: int
    detection: DetectionIn
    snapshot: Snapshot | None
    outcomes: list[Outcome] = field(default_factory=list)
    alarm_ids: set[Any] = field(default_factory=set)


def lock_key(key: Key) -> int:
    digest = hashlib.blake2b(f"vision:{key[0]}:{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def refusal(index: int, code: str, detail: str) -> ItemResult:
    return ItemResult(index=index, accepted=False, code=code, detail=detail[:500])


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "item"
    return f"{where}: {first['msg']}"


def _check(index: int, raw: Any, now: datetime, limits: IntakeLimits) -> Accepted | ItemResult:
    try:
        detection = DETECTION.validate_python(raw)
    except ValidationError as error:
        return refusal(index, "validation_failed", _first_error(error))
    if not now - limits.max_age <= detection.detected_at <= now + limits.max_ahead:
        return refusal(index, "vision.detection_out_of_time", "detected_at must lie within the last 24 hours")
    snapshot = None
    if detection.snapshot_base64 is not None:
        try:
            data = base64.b64decode(detection.snapshot_base64, validate=True)
            content_type = sniff_image(data, max_bytes=limits.max_snapshot_bytes)
        except binascii.Error:
            return refusal(index, "vision.invalid_snapshot", "snapshot_base64 is not base64")
        except DomainError as error:
            return refusal(index, error.code, error.detail)
        snapshot = Snapshot(data, content_type, hashlib.sha256(data).hexdigest(), detection.detected_at)
    return Accepted(index, detection, snapshot)


def rect_of(document: dict[str, float]) -> Rect:
    return Rect(document["x"], document["y"], document["width"], document["height"])


def _box(rect: Rect) -> dict[str, float]:
    return {"x": rect.x, "y": rect.y, "width": rect.width, "height": rect.height}


class InvalidRegions(ValueError):
    """A camera's stored regions of interest for a class are not polygons of the schema."""


def regions_of(camera_regions: Any, code: str) -> list[Polygon]:
    """The camera's polygons for the class (none: the whole image), or ``InvalidRegions``.

    Stored regions are checked again: rows imported before the import checked them, or written
    by hand, may hold anything, and one such camera must not fail a batch of others.
    """
    if not isinstance(camera_regions, dict):
        raise InvalidRegions("regions are not an object of classes")
    raw = camera_regions.get(code)
    if raw is None or raw == []:
        return []
    try:
        polygons = POLYGONS.validate_python(raw)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRegions(f"{code}{'.' + where if where else ''}: {first['msg']}") from None
    return [[(x, y) for x, y in polygon] for polygon in polygons]


@dataclass
class StagedBatch:
    """A batch checked item by item, its snapshots already in the blob store."""

    raw_items: Sequence[Any]
    results: dict[int, ItemResult]  # the items refused by the checks
    accepted: list[Accepted]


async def stage(raw_items: Sequence[Any], *, blobs: BlobStore, limits: IntakeLimits) -> StagedBatch:
    """Check each item and write the distinct snapshots to the blob store: call it before opening
    the transaction, so no lock or database connection waits on a write and its fsync.

    A batch's snapshots are bounded by its body limit (1 MiB over HTTP and NATS)."""
    now = datetime.now(UTC)
    results: dict[int, ItemResult] = {}
    accepted: list[Accepted] = []
    for index, raw in enumerate(raw_items):
        checked = _check(index, raw, now, limits)
        if isinstance(checked, ItemResult):
            results[index] = checked
        else:
            accepted.append(checked)
    distinct = {a.snapshot.sha256: a.snapshot for a in accepted if a.snapshot is not None}
    stored = await asyncio.gather(*[blobs.put(s.data, s.content_type) for s in distinct.values()])
    by_sha = {blob.sha256: blob for blob in stored}
    for item in accepted:
        if item.snapshot is not None:
            item.snapshot.stored = by_sha[item.snapshot.sha256]
    return StagedBatch(raw_items, results, accepted)


async def ingest(
    uow: UnitOfWork,
    batch: Sequence[Any] | StagedBatch,
    *,
    blobs: BlobStore,
    metrics: VisionMetrics | None = None,
    limits: IntakeLimits | None = None,
    catalogue: CatalogueCache | None = None,
) -> list[ItemResult]:
    """Run a batch through the pipeline; every item gets its own result, in the order given.

    ``batch`` is best a ``StagedBatch`` staged before ``uow`` was opened; raw items are staged
    here, before the first query (the unit of work's transaction starts with its first query).
    ``catalogue``: the replica's cached catalogue; without it the catalogue is read per batch.
    """
    limits = limits or IntakeLimits()
    staged = batch if isinstance(batch, StagedBatch) else await stage(batch, blobs=blobs, limits=limits)
    raw_items = staged.raw_items
    results = dict(staged.results)
    accepted = staged.accepted
    session = uow.session

    camera_ids = sorted({a.detection.camera_id for a in accepted})
    cameras = (
        {
            c.camera_id: c
            for c in await session.scalars(select(Camera).where(Camera.camera_id.in_(camera_ids)))
        }
        if camera_ids
        else {}
    )
    algorithms = await catalogue.get(session) if catalogue is not None else await load_algorithms(session)
    overrides = await load_overrides(session, cameras) if cameras else {}
    by_key: dict[Key, list[Accepted]] = defaultdict(list)
    regions: dict[Key, list[Polygon]] = {}
    misconfigured: dict[Key, str] = {}
    for item in accepted:
        detection = item.detection
        algorithm = algorithms.get(detection.algorithm_code)
        if detection.camera_id not in cameras:
            results[item.index] = refusal(
                item.index, "vision.unknown_camera", f"camera {detection.camera_id} is not registered"
            )
        elif algorithm is None or not algorithm.active:
            results[item.index] = refusal(
                item.index,
                "vision.unknown_algorithm",
                f"{detection.algorithm_code} is not an active class of the catalogue",
            )
        else:
            key = (detection.camera_id, detection.algorithm_code)
            if key not in regions and key not in misconfigured:
                try:
                    regions[key] = regions_of(cameras[key[0]].regions, key[1])
                except InvalidRegions as error:
                    misconfigured[key] = str(error)
                    log.warning("camera %s has invalid regions of interest: %s", key[0], error)
            if key in misconfigured:
                results[item.index] = refusal(
                    item.index,
                    "vision.invalid_camera_regions",
                    f"camera {key[0]} has invalid regions of interest ({misconfigured[key]}); "
                    f"an admin sets them again with PUT /v1/cameras/{key[0]}/regions",
                )
            else:
                by_key[key].append(item)

    if by_key:
        await _run_pipeline(uow, by_key, cameras, regions, algorithms, overrides, metrics)
    # Counted per batch, then added once per series: a label lookup per item costs more than the item.
    counted: Counter[tuple[str, str]] = Counter()
    for key, items in by_key.items():
        for item in items:
            outcome = best_outcome(item.outcomes)
            results[item.index] = ItemResult(
                index=item.index, accepted=True, outcome=outcome, alarm_ids=sorted(item.alarm_ids, key=str)
            )
            counted[(key[1], outcome.value)] += 1
    if metrics is not None:
        for index, raw in enumerate(raw_items):
            # Only catalogue codes become labels: a client cannot grow the series.
            code = raw.get("algorithm_code") if isinstance(raw, dict) else None
            label = code if isinstance(code, str) and code in algorithms else "unknown"
            counted[(label, "received")] += 1
            if not results[index].accepted:
                counted[(label, "refused")] += 1
        for (code_label, outcome_label), amount in counted.items():
            metrics.detections.labels(algorithm=code_label, outcome=outcome_label).inc(amount)
    return [results[index] for index in range(len(raw_items))]


async def _run_pipeline(
    uow: UnitOfWork,
    by_key: dict[Key, list[Accepted]],
    cameras: dict[str, Camera],
    regions: dict[Key, list[Polygon]],
    algorithms: dict[str, ActiveAlgorithm],
    overrides: dict[Key, dict[str, Any]],
    metrics: VisionMetrics | None,
) -> None:
    session = uow.session
    keys = sorted(by_key)
    await session.execute(
        text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": [lock_key(key) for key in sorted(keys, key=lock_key)]},
    )
    gates = {key: algorithms[key[1]].gates.with_overrides(overrides.get(key)) for key in keys}
    earliest = min(a.detection.detected_at for items in by_key.values() for a in items)
    longest = max(g.dedup_window_seconds for g in gates.values())
    # The keys as two array parameters joined in SQL, not an IN list of a bind pair per key: one
    # statement text for any batch, and a plan that walks the (camera, class) index per key.
    batch_keys = (
        select(
            func.unnest(bindparam("key_cameras", [k[0] for k in keys], type_=ARRAY(String))).label(
                "camera_id"
            ),
            func.unnest(bindparam("key_classes", [k[1] for k in keys], type_=ARRAY(String))).label("code"),
        )
    ).subquery("batch_keys")
    key_filter = tuple_(ALARMS.c.camera_id, ALARMS.c.algorithm_code).in_(
        select(batch_keys.c.camera_id, batch_keys.c.code)
    )
    # Core rows, not ORM objects: intake reads hundreds per batch and changes them in bulk below.
    open_rows = await session.execute(
        select(
            ALARMS.c.id,
            ALARMS.c.camera_id,
            ALARMS.c.algorithm_code,
            ALARMS.c.status,
            ALARMS.c.box,
            ALARMS.c.best_box,
            ALARMS.c.first_seen_at,
            ALARMS.c.last_seen_at,
            ALARMS.c.best_confidence,
            ALARMS.c.track_id,
            ALARMS.c.detections,
            ALARMS.c.raised_at,
            ALARMS.c.snapshot_sha256,
        ).where(
            key_filter,
            ALARMS.c.status.in_(OPEN_STATUSES),
            ALARMS.c.last_seen_at >= earliest - timedelta(seconds=longest),
        )
    )
    states: dict[Key, KeyState] = {key: KeyState() for key in keys}
    for row in open_rows:
        states[(row.camera_id, row.algorithm_code)].items.append(
            Item(
                id=row.id,
                is_alarm=row.status != AlarmStatus.CANDIDATE.value,
                box=rect_of(row.box),
                first_seen=row.first_seen_at,
                last_seen=row.last_seen_at,
                best_confidence=row.best_confidence,
                best_box=rect_of(row.best_box),
                track_id=row.track_id,
                detections=row.detections,
                raised_at=row.raised_at,
                has_evidence=row.snapshot_sha256 is not None,
            )
        )
    for camera_id, code, last in await session.execute(
        select(ALARMS.c.camera_id, ALARMS.c.algorithm_code, func.max(ALARMS.c.raised_at))
        .where(key_filter, ALARMS.c.raised_at.is_not(None))
        .group_by(ALARMS.c.camera_id, ALARMS.c.algorithm_code)
    ):
        states[(camera_id, code)].last_raised_at = last

    touched: dict[Key, list[Item]] = defaultdict(list)
    for key in keys:
        state, key_gates, key_regions = states[key], gates[key], regions[key]
        for accepted in sorted(by_key[key], key=lambda a: a.detection.detected_at):
            d = accepted.detection
            for box in d.boxes:
                observation = Observation(
                    d.detected_at,
                    d.confidence,
                    Rect(box.x, box.y, box.width, box.height),
                    d.track_id,
                    accepted if accepted.snapshot is not None else None,
                )
                outcome, item = observe(state, observation, key_gates, key_regions, new_id)
                accepted.outcomes.append(outcome)
                if item is not None:
                    if item.is_alarm:
                        accepted.alarm_ids.add(item.id)
                    if all(other is not item for other in touched[key]):
                        touched[key].append(item)

    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    raised: list[tuple[Key, Any, bool]] = []
    for key, items in touched.items():
        camera, algorithm, key_gates = cameras[key[0]], algorithms[key[1]], gates[key]
        for item in items:
            values: dict[str, Any] = {
                "box": _box(item.box),
                "best_box": _box(item.best_box),
                "track_id": item.track_id,
                "best_confidence": item.best_confidence,
                "detections": item.detections,
                "first_seen_at": item.first_seen,
                "last_seen_at": item.last_seen,
            }
            if item.just_raised:
                values["raised_at"] = item.raised_at
                values["status"] = (
                    AlarmStatus.AUTO_CONFIRMED.value
                    if item.auto_dispatch
                    else AlarmStatus.PENDING_REVIEW.value
                )
                values["auto_confirmed"] = item.auto_dispatch
                raised.append((key, item.id, item.auto_dispatch))
            source = item.evidence
            if isinstance(source, Accepted) and source.snapshot is not None:
                stored = source.snapshot.stored
                assert stored is not None, "snapshots are stored before the transaction"
                values |= {
                    "snapshot_sha256": stored.sha256,
                    "snapshot_content_type": stored.content_type,
                    "snapshot_size": stored.size_bytes,
                    "snapshot_taken_at": source.snapshot.taken_at,
                }
            if item.new:
                new_rows.append(
                    {
                        "id": item.id,
                        "camera_id": key[0],
                        "algorithm_code": key[1],
                        "category_code": algorithm.category_code,
                        "district_code": camera.district_code,
                        "severity": key_gates.severity.value,
                        "status": AlarmStatus.CANDIDATE.value,
                        "auto_confirmed": False,
                        "raised_at": None,
                        "snapshot_sha256": None,
                        "snapshot_content_type": None,
                        "snapshot_size": None,
                        "snapshot_taken_at": None,
                        **values,
                    }
                )
            else:
                changed_rows.append({"id": item.id, **values})
    if new_rows:
        await session.execute(insert(ALARMS), new_rows)
    # One executemany per shape of change (merged only, raised, with a better snapshot).
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for changed in changed_rows:
        columns = tuple(sorted(k for k in changed if k != "id"))
        shapes[columns].append({"alarm_id": changed["id"], **{f"v_{c}": changed[c] for c in columns}})
    for columns, params in shapes.items():
        statement = (
            update(ALARMS)
            .where(ALARMS.c.id == bindparam("alarm_id"))
            .values({c: bindparam(f"v_{c}") for c in columns} | {"updated_at": func.now()})
        )
        await session.execute(statement, params)
    for key, alarm_id, auto in raised:
        if auto:
            alarm = await session.get(Alarm, alarm_id, populate_existing=True)
            assert alarm is not None
            events.record_confirmed(uow, alarm, cameras[key[0]], algorithms[key[1]], "auto")
        if metrics is not None:
            metrics.alarms_raised.labels(algorithm=key[1], dispatch="auto" if auto else "review").inc()


async def expire_candidates(sessions: async_sessionmaker[AsyncSession], older_than: timedelta) -> int:
    """Candidates not seen again for longer than any dedup window can never become alarms: drop them."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            delete(ALARMS).where(
                ALARMS.c.status == AlarmStatus.CANDIDATE.value,
                ALARMS.c.last_seen_at < func.now() - older_than,
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)
