"""The transport rules as periodic work: every stored position evaluated once, whichever replica
stored it and however many replicas run.

Rules follow each truck over minutes, so one replica evaluates the whole fleet: the one holding the
lease in ``rule_cursor``. A round, in one transaction:

1. locks the cursor row (``SKIP LOCKED``: a round already running elsewhere means this one has
   nothing to do), and goes on only if this replica holds the lease or it has lapsed;
2. reads the horizon ``hi``, the oldest transaction still running: every position stored by a
   transaction below it is committed (or never will be), so reading ``[horizon, hi)`` of
   ``positions.txid`` misses none, not even a batch that committed minutes late after PostgreSQL
   was away, and reads none twice;
3. evaluates them, applies the manifest steps, records the violations (one per truck, kind,
   severity and episode: a unique key, so a second evaluation of the same episode records nothing)
   with their events in the outbox, and moves the cursor and the lease on.

A replica that takes over, or whose memory is not at the cursor, first replays the last
``replay_window`` of positions below the horizon, to pick up the episodes under way. A long
transaction elsewhere in the database holds the horizon back: violations wait, none is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import UnitOfWork
from citygrid.fleet.horizon import HorizonReader
from citygrid.ids import new_id, replica_name
from citygrid.runtime import Runtime
from contract.common import EvidenceRef, GeoPoint
from contract.muck import TransportViolation, ViolationDetected
from services.muck.domain.geofences import Corridor, Site
from services.muck.domain.manifests import InvalidManifestTransition, ManifestStatus
from services.muck.domain.tracks import simplify
from services.muck.domain.violations import (
    DEFAULT_SETTINGS,
    Finding,
    Load,
    RuleSettings,
    ViolationKind,
    offline,
)
from services.muck.domain.windows import parse_window
from services.muck.manifests import service as manifests
from services.muck.metrics import MuckMetrics
from services.muck.models import ManifestRow, RuleCursor, Violation
from services.muck.rules.evaluation import Area, Carried, Detected, Evaluator, Fix, Geography

log = logging.getLogger("services.muck.rules")

CURSOR = "positions"
OFFLINE_LOCK: Final = 7_744_003
# Muck, hauled, dumped: the city-management categories a violation's case is raised in.
DUMPING_CATEGORY: Final = "20115"  # 建筑垃圾乱倒, illegally dumped construction waste
TRANSPORT_CATEGORY: Final = "20312"  # 渣土车违规运输, muck truck transport violation
CATEGORY_OF: Final[dict[str, str]] = {
    ViolationKind.ILLEGAL_DUMPING: DUMPING_CATEGORY,
    ViolationKind.UNLOADED_OUTSIDE_SITE: DUMPING_CATEGORY,
}
MAX_TRACK_POINTS: Final = 500
TRACK_SIMPLIFY_M: Final = 5.0
LOADS: Final[dict[int | None, Load]] = {0: "empty", 1: "half", 3: "full"}

# The first round ever starts at the horizon: positions stored before the rules existed are history.
CREATE_CURSOR = text(
    "INSERT INTO rule_cursor (name, horizon, owner, lease_until) "
    "VALUES (:name, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint, '', now()) "
    "ON CONFLICT (name) DO NOTHING"
)
NEW_POSITIONS = text(
    "SELECT plate, at, lon, lat, speed_kmh, load, txid FROM positions "
    "WHERE at >= :since AND txid >= :low AND txid < :high ORDER BY txid LIMIT :limit"
)
# The positions a takeover replays: each truck's recent stretch of its primary key.
REPLAYED_POSITIONS = text(
    "SELECT p.plate, p.at, p.lon, p.lat, p.speed_kmh, p.load FROM trucks t "
    "CROSS JOIN LATERAL (SELECT plate, at, lon, lat, speed_kmh, load FROM positions "
    "WHERE plate = t.plate AND at >= :since AND txid < :low ORDER BY at) p"
)
EPISODE_TRACK = text(
    "SELECT DISTINCT ON (at) at, lon, lat, speed_kmh, load FROM positions "
    "WHERE plate = :plate AND at >= :since AND at <= :until ORDER BY at, received_at LIMIT 5000"
)
TRUCK_DISTRICT = text(
    "SELECT t.company_code, c.district_code FROM trucks t JOIN companies c ON c.code = t.company_code "
    "WHERE t.plate = :plate"
)
REGISTER_FINGERPRINT = text(
    "SELECT (SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM sites) || '|' || "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM routes) || '|' || "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM transport_areas)"
)
LAST_SEEN_ON_THE_ROAD = text(
    "SELECT m.id, m.plate, m.loaded_at, m.issued_at, m.origin_site, last.at AS last_at, last.lon, last.lat "
    "FROM manifests m LEFT JOIN LATERAL ("
    "  SELECT at, lon, lat FROM positions p WHERE p.plate = m.plate AND p.at >= :since "
    "  ORDER BY at DESC LIMIT 1) last ON true "
    "WHERE m.status IN ('loaded', 'in_transit')"
)


@dataclass(frozen=True)
class RulesConfig:
    settings: RuleSettings = DEFAULT_SETTINGS
    lease: timedelta = timedelta(seconds=15)
    # Positions reach the rules this long after their time at most (a terminal's blind-area
    # upload older than this is stored, not evaluated: its truck's rules have moved past it).
    lookback: timedelta = timedelta(days=2)
    # Long enough to hold the longest episode a rule waits for (off route, severe: 15 minutes).
    replay_window: timedelta = timedelta(minutes=30)
    # Positions per round: under a second of work, so the manifests a round locks are not held past
    # a request's lock timeout (2 s); a writer's transaction holds at most 5,000, fewer than this.
    chunk: int = 20_000


def load_of(value: int | None) -> Load:
    return LOADS.get(value, "unknown")


class TransportRules:
    """This replica's side of the rules: the lease, the trucks' episodes while it holds it."""

    def __init__(self, runtime: Runtime, metrics: MuckMetrics, config: RulesConfig | None = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.config = config or RulesConfig()
        self.owner = replica_name()
        self.evaluator: Evaluator | None = None
        self.horizon: int | None = None  # the cursor's horizon this replica's evaluator is at
        self.fingerprint: str | None = None
        self.reader = HorizonReader(NEW_POSITIONS, self.config.chunk)
        self.more = False  # the last round's read left positions waiting

    async def round(self) -> int:
        """One round; returns how many positions it evaluated (0 when another replica leads), or at
        least a full batch when more wait, so the job runs again at once."""
        self.more = False
        try:
            async with self.runtime.uow() as uow:
                evaluated = await self._round(uow)
        except BaseException:
            # The transaction did not commit, but the episodes in memory moved on: replay.
            self.evaluator, self.horizon = None, None
            raise
        return max(evaluated, self.config.chunk) if self.more else evaluated

    async def _round(self, uow: UnitOfWork) -> int:
        session = uow.session
        now = await uow.now()
        cursor = await self._cursor(session)
        if cursor is None:
            return 0  # a round is running in another replica
        if cursor.owner != self.owner and cursor.lease_until > now:
            self.evaluator, self.horizon = None, None
            self.metrics.rules_leader.set(0)
            return 0
        fingerprint = str(await session.scalar(REGISTER_FINGERPRINT))
        if fingerprint != self.fingerprint or self.evaluator is None:
            geography = await load_geography(session)
            if self.evaluator is None:
                self.evaluator = Evaluator(geography, self.config.settings)
            else:
                self.evaluator.geography = geography
            self.fingerprint = fingerprint
        if self.horizon != cursor.horizon or cursor.owner != self.owner:
            await self._replay(session, now, cursor.horizon)
        read = await self.reader.read(session, low=cursor.horizon, since=now - self.config.lookback)
        rows, high, self.more = read.rows, read.cursor, read.more
        evaluated = await self._evaluate(uow, rows)
        cursor.horizon = max(high, cursor.horizon)
        cursor.owner = self.owner
        cursor.lease_until = now + self.config.lease
        cursor.updated_at = now
        await session.flush()
        self.horizon = cursor.horizon
        self.metrics.rules_leader.set(1)
        self.metrics.rules_trucks.set(len(self.evaluator))
        if rows:
            self.metrics.rules_lag.set(max(0.0, (now - max(row.at for row in rows)).total_seconds()))
        return evaluated

    async def _cursor(self, session: AsyncSession) -> RuleCursor | None:
        await session.execute(CREATE_CURSOR, {"name": CURSOR})
        return await session.scalar(
            select(RuleCursor).where(RuleCursor.name == CURSOR).with_for_update(skip_locked=True)
        )

    async def _replay(self, session: AsyncSession, now: datetime, below: int) -> None:
        assert self.evaluator is not None
        self.evaluator = Evaluator(self.evaluator.geography, self.config.settings)
        rows = (
            await session.execute(
                REPLAYED_POSITIONS, {"since": now - self.config.replay_window, "low": below}
            )
        ).all()
        fixes = [_fix(row) for row in rows]
        carried = await self._carried(session, {fix.plate for fix in fixes}, lock=False)
        self.evaluator.evaluate(fixes, {plate: c for plate, (c, _) in carried.items()}, replay=True)
        log.info("transport rules: replayed %d positions of %d trucks", len(fixes), len(self.evaluator))

    async def _carried(
        self, session: AsyncSession, plates: Collection[str], *, lock: bool
    ) -> dict[str, tuple[Carried, ManifestRow]]:
        rows = await manifests.undelivered_for(session, plates, lock=lock)
        return {plate: (carried_of(row), row) for plate, row in rows.items()}

    async def _evaluate(self, uow: UnitOfWork, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        assert self.evaluator is not None
        fixes = [_fix(row) for row in rows]
        carried = await self._carried(uow.session, sorted({fix.plate for fix in fixes}), lock=True)
        evaluation = self.evaluator.evaluate(fixes, {plate: c for plate, (c, _) in carried.items()})
        for step in evaluation.steps:
            _, row = carried[step.plate]
            try:
                async with uow.session.begin_nested():
                    await manifests.advance(
                        uow,
                        row,
                        step.action,
                        at=step.at,
                        actor="rules",
                        detail=step.detail,
                        reason=step.reason,
                    )
            except InvalidManifestTransition as refused:
                # The row moved in a way the rules did not see (a person's action in between): the
                # step is not applied, and one manifest cannot stop the rules of the whole fleet.
                await uow.session.refresh(row)
                log.warning("transport rules: manifest %s: %s", row.number, refused)
        for detected in evaluation.detected:
            await record_violation(uow, self.metrics, self.evaluator.geography, detected)
        self.metrics.rules_positions.inc(evaluation.taken)
        return len(rows)


def _fix(row: Any) -> Fix:
    return Fix(row.plate, row.at, row.lon, row.lat, row.speed_kmh, load_of(row.load))


def carried_of(row: ManifestRow) -> Carried:
    return Carried(
        manifest_id=str(row.id),
        number=row.number,
        status=ManifestStatus(row.status),
        origin_site=row.origin_site,
        disposal_site=row.disposal_site,
        route_code=row.route_code,
        district_code=row.district_code,
    )


async def load_geography(session: AsyncSession) -> Geography:
    """The register's sites, routes and transport areas as the rules' indexes."""
    sites = (await session.execute(text("SELECT code, kind, district_code, boundary FROM sites"))).all()
    routes = (await session.execute(text("SELECT code, line, width_m FROM routes"))).all()
    areas = (await session.execute(text("SELECT code, boundary, windows FROM transport_areas"))).all()
    return Geography(
        sites=[Site(row.code, row.kind, [tuple(point) for point in row.boundary]) for row in sites],
        corridors=[Corridor(row.code, [tuple(point) for point in row.line], row.width_m) for row in routes],
        areas=[
            Area(
                row.code,
                [tuple(point) for point in row.boundary],
                tuple(parse_window(window) for window in row.windows),
            )
            for row in areas
        ],
        site_districts={row.code: row.district_code for row in sites},
    )


# -- violations and their evidence --------------------------------------------------------------------


def track_document(violation_id: str, plate: str, kind: str, track: Sequence[Sequence[Any]]) -> bytes:
    """The episode's track as a GeoJSON Feature, in bytes that hash the same every time it is built."""
    coordinates = [[point[1], point[2]] for point in track]
    geometry: dict[str, Any] = (
        {"type": "LineString", "coordinates": coordinates}
        if len(coordinates) > 1
        else {"type": "Point", "coordinates": coordinates[0] if coordinates else []}
    )
    feature = {
        "type": "Feature",
        "id": violation_id,
        "geometry": geometry,
        "properties": {
            "plate": plate,
            "kind": kind,
            "times": [point[0] for point in track],
            "speeds_kmh": [point[3] for point in track],
            "loads": [point[4] for point in track],
        },
    }
    return json.dumps(feature, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


async def episode_track(
    session: AsyncSession, plate: str, since: datetime, until: datetime
) -> list[list[Any]]:
    """The positions of the episode, simplified for evidence: [[iso time, lon, lat, km/h, load], ...]."""
    rows = (await session.execute(EPISODE_TRACK, {"plate": plate, "since": since, "until": until})).all()
    kept = simplify([(row.at, row.lon, row.lat) for row in rows], TRACK_SIMPLIFY_M) if len(rows) > 2 else None
    chosen = [rows[i] for i in kept] if kept is not None else list(rows)
    if len(chosen) > MAX_TRACK_POINTS:
        step = len(chosen) / MAX_TRACK_POINTS
        chosen = [chosen[int(i * step)] for i in range(MAX_TRACK_POINTS - 1)] + [chosen[-1]]
    return [[row.at.isoformat(), row.lon, row.lat, row.speed_kmh, load_of(row.load)] for row in chosen]


async def record_violation(
    uow: UnitOfWork, metrics: MuckMetrics, geography: Geography, detected: Detected
) -> uuid.UUID | None:
    """Store the violation with its track and queue its event; None when its episode is recorded."""
    session, finding, carried = uow.session, detected.finding, detected.manifest
    company_code, district_code = await _truck_district(session, detected.plate)
    if carried is not None and carried.district_code is not None:
        district_code = carried.district_code
    track = await episode_track(session, detected.plate, finding.episode_started_at, finding.at)
    return await _store(uow, metrics, detected.plate, finding, carried, company_code, district_code, track)


async def _truck_district(session: AsyncSession, plate: str) -> tuple[str | None, str | None]:
    found = (await session.execute(TRUCK_DISTRICT, {"plate": plate})).first()
    return (found.company_code, found.district_code) if found is not None else (None, None)


async def _store(
    uow: UnitOfWork,
    metrics: MuckMetrics,
    plate: str,
    finding: Finding,
    carried: Carried | None,
    company_code: str | None,
    district_code: str | None,
    track: list[list[Any]],
) -> uuid.UUID | None:
    violation_id = new_id()
    document = track_document(str(violation_id), plate, finding.kind.value, track)
    digest = hashlib.sha256(document).hexdigest()
    values = insert(Violation).values(
        id=violation_id,
        plate=plate,
        kind=finding.kind.value,
        severity=finding.severity,
        episode_started_at=finding.episode_started_at,
        at=finding.at,
        lon=finding.lon,
        lat=finding.lat,
        detail=finding.detail[:500],
        manifest_id=uuid.UUID(carried.manifest_id) if carried is not None else None,
        manifest_number=carried.number if carried is not None else None,
        company_code=company_code,
        district_code=district_code,
        track=track,
        track_sha256=digest,
    )
    # The episode recorded already: nothing, unless it has now grown severe (escalated in place).
    escalate = {name: values.excluded[name] for name in ("severity", "at", "lon", "lat", "detail", "track")}
    stored: Any = (
        await uow.session.execute(
            values.on_conflict_do_update(
                constraint="uq_violations_episode",
                set_=escalate,
                where=(Violation.severity == "normal") & (values.excluded.severity == "severe"),
            ).returning(Violation.id, literal_column("xmax = 0").label("inserted"))
        )
    ).first()
    if stored is None:
        return None
    if not stored.inserted:
        # The escalated row keeps its id; its track document is rebuilt under that id.
        document = track_document(str(stored.id), plate, finding.kind.value, track)
        digest = hashlib.sha256(document).hexdigest()
        await uow.session.execute(
            update(Violation).where(Violation.id == stored.id).values(track_sha256=digest)
        )
    on = f" on manifest {carried.number}" if carried is not None else ""
    uow.publish(
        ViolationDetected(
            reference=str(stored.id),
            category_code=CATEGORY_OF.get(finding.kind, TRANSPORT_CATEGORY),
            district_code=district_code,
            location=GeoPoint.of(finding.lon, finding.lat),
            description=f"Muck truck {plate}{on}: {finding.detail}.",
            detected_at=finding.at,
            evidence=[
                EvidenceRef(
                    sha256=digest,
                    content_type="application/geo+json",
                    size_bytes=len(document),
                    url=f"/api/muck/v1/violations/{stored.id}/track",
                    taken_at=finding.at,
                )
            ]
            if track
            else [],
            plate=plate,
            kind=TransportViolation(finding.kind.value),
            manifest_number=carried.number if carried is not None else None,
            severity=finding.severity,
            episode_started_at=finding.episode_started_at,
            company_code=company_code,
        ),
        aggregate_id=str(stored.id),
        version=1 if stored.inserted else 2,
    )
    metrics.violations.labels(finding.kind.value, finding.severity).inc()
    return uuid.UUID(str(stored.id))


# -- terminals offline on a manifest ------------------------------------------------------------------


async def offline_round(
    runtime: Runtime, metrics: MuckMetrics, settings: RuleSettings = DEFAULT_SETTINGS
) -> int:
    """Trucks on the road with a manifest whose terminal has sent nothing for ``offline_after``.

    Once across replicas: the round holds a transaction-level advisory lock, and an episode (the
    truck's silence since its last position) is recorded once whoever finds it.
    """
    found = 0
    async with runtime.uow() as uow:
        session = uow.session
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(OFFLINE_LOCK))):
            return 0
        now = await uow.now()
        rows = (await session.execute(LAST_SEEN_ON_THE_ROAD, {"since": now - timedelta(days=1)})).all()
        silent = [row for row in rows if offline(row.last_at, now, True, settings)]
        if not silent:
            return 0
        geography = await load_geography(session) if any(row.last_at is None for row in silent) else None
        loaded = await session.scalars(
            select(ManifestRow).where(ManifestRow.id.in_([row.id for row in silent]))
        )
        by_id: Mapping[uuid.UUID, ManifestRow] = {row.id: row for row in loaded}
        for row in silent:
            manifest = by_id[row.id]
            since = row.last_at or manifest.loaded_at or manifest.issued_at
            lon, lat = (row.lon, row.lat) if row.last_at is not None else _centre(geography, row.origin_site)
            silence = int((now - since).total_seconds() // 60)
            finding = Finding(
                ViolationKind.TERMINAL_OFFLINE,
                "normal",
                since,
                now,
                lon,
                lat,
                f"terminal silent for {silence} min while on the road",
            )
            company_code, _ = await _truck_district(session, row.plate)
            if await _store(
                uow,
                metrics,
                row.plate,
                finding,
                carried_of(manifest),
                company_code,
                manifest.district_code,
                [],
            ):
                found += 1
    return found


def _centre(geography: Geography | None, site: str) -> tuple[float, float]:
    assert geography is not None
    return geography.sites.centre(site)


__all__ = [
    "CATEGORY_OF",
    "RulesConfig",
    "TransportRules",
    "carried_of",
    "episode_track",
    "load_geography",
    "offline_round",
    "record_violation",
    "track_document",
]
