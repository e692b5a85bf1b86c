"""The vehicles' movements read from their positions: left or back at a depot, arrived at a facility,
stopped outside every registered place. They are stored beside the movements platforms report (the
same identity, so whichever comes first is kept) and the vehicles are noted for the chain round,
which builds the trips from them.

One replica reads the fleet's positions at a time: the one holding the lease in
``position_cursor``. A round, in one transaction:

1. locks the cursor row (``SKIP LOCKED``: a round already running elsewhere means this one has
   nothing to do), and goes on only if this replica holds the lease or it has lapsed;
2. reads the positions stored since the cursor, up to the horizon (``citygrid.fleet.horizon``), so
   none is missed and none read twice, however many replicas stored them;
3. reads again each of those vehicles' tracks from its latest *resume point* (a position that ends
   any stop: see ``domain/chain_movements.py``) through its newest position, derives the movements,
   stores the new ones and the stops that have ended, notes the vehicles, and moves the cursor.

This replica remembers each vehicle's resume point while it holds the lease; a replica that takes
over, or a position older than the one remembered (a terminal's blind-area upload), finds it in the
database instead: the vehicle's latest moving position before the new ones, at most ``context``
back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import UnitOfWork
from citygrid.fleet.horizon import read_new
from citygrid.ids import replica_name
from citygrid.runtime import Runtime
from services.waste.chain.models import MovementKind, MovementSource
from services.waste.chain.service import store_movements
from services.waste.domain.chain import DepotDeparture, DepotReturn, FacilityArrival, Movement, Stop
from services.waste.domain.chain_movements import Places, Position, circle, derive_track
from services.waste.fleet.models import PositionCursor
from services.waste.metrics import FleetMetrics

log = logging.getLogger("services.waste.fleet.movements")

CURSOR = "movements"
# The first round ever starts at the horizon: positions stored before the round existed are history.
CREATE_CURSOR = text(
    "INSERT INTO position_cursor (name, horizon, owner, lease_until) "
    "VALUES (:name, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint, '', now()) "
    "ON CONFLICT (name) DO NOTHING"
)
NEW_POSITIONS = text(
    "SELECT plate, at, txid FROM positions "
    "WHERE at >= :since AND txid >= :low AND txid < :high ORDER BY txid LIMIT :limit"
)
# Where each vehicle's track is read from when this replica does not remember it: its latest moving
# position before the new ones (a resume point whatever the register says), at most ``context`` back.
RESUME_POINTS = text(
    "SELECT t.plate, (SELECT max(b.at) FROM positions b WHERE b.plate = t.plate AND b.at < t.first "
    "AND b.at >= t.first - CAST(:context AS interval) AND b.speed_kmh >= :moving) AS resume_at "
    "FROM unnest(CAST(:plates AS text[]), CAST(:firsts AS timestamptz[])) AS t(plate, first)"
)
# Each vehicle's track from its start, one row per time (a report sent twice is one position).
TRACKS = text(
    "SELECT p.plate, p.at, p.lon, p.lat, p.speed_kmh "
    "FROM unnest(CAST(:plates AS text[]), CAST(:starts AS timestamptz[])) AS t(plate, start) "
    "CROSS JOIN LATERAL (SELECT DISTINCT ON (q.at) q.plate, q.at, q.lon, q.lat, q.speed_kmh "
    "FROM positions q WHERE q.plate = t.plate AND q.at >= t.start "
    "ORDER BY q.at, q.received_at LIMIT :track_limit) p"
)
REGISTER_FINGERPRINT = text(
    "SELECT concat_ws('|', "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM depots), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM facilities), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM collection_points), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM drop_off_points))"
)


@dataclass(frozen=True)
class MovementsConfig:
    lease: timedelta = timedelta(seconds=15)
    # Positions reach the round this long after their time at most: a blind-area upload older than
    # this is stored, not read for movements (its trips are long judged).
    lookback: timedelta = timedelta(days=2)
    # How far back a vehicle's track is read to find where it stood, when this replica does not
    # remember: longer than a vehicle stands anywhere outside every place.
    context: timedelta = timedelta(hours=12)
    # New positions a round reads: 5,800 vehicles at 1 Hz for three seconds.
    chunk: int = 20_000
    # The positions of one vehicle a round derives from (14 hours at 1 Hz).
    track_limit: int = 50_000
    stop_speed_kmh: float = 3.0
    min_stop: timedelta = timedelta(minutes=2)
    # A collection or drop-off point: where a vehicle stops to lift bins, not a stop to report.
    point_radius_m: float = 30.0


@dataclass(frozen=True, slots=True)
class MovementsResult:
    leader: bool = False
    positions: int = 0
    vehicles: int = 0
    movements: int = 0


class MovementsRound:
    """This replica's side of the movements: the lease, the vehicles' resume points while it holds it."""

    def __init__(
        self, runtime: Runtime, metrics: FleetMetrics, config: MovementsConfig | None = None
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.config = config or MovementsConfig()
        self.owner = replica_name()
        self.places: Places | None = None
        self.fingerprint: str | None = None
        self.resume_at: dict[str, datetime] = {}
        self.horizon: int | None = None  # the cursor's horizon the resume points are at
        self.last = MovementsResult()

    async def round(self) -> int:
        """One round; returns how many new positions it read (0 when another replica leads)."""
        try:
            async with self.runtime.uow() as uow:
                result = await self._round(uow)
        except BaseException:
            # The transaction did not commit: what this replica remembers may be ahead of it.
            self.resume_at, self.horizon = {}, None
            raise
        self.last = result
        self.metrics.movements_leader.set(1 if result.leader else 0)
        self.metrics.movements_positions.inc(result.positions)
        return result.positions

    async def release(self) -> None:
        """Give the lease back as the replica stops, so another leads at its next round."""
        async with self.runtime.uow() as uow:
            await uow.session.execute(
                update(PositionCursor)
                .where(PositionCursor.name == CURSOR, PositionCursor.owner == self.owner)
                .values(lease_until=func.now())
            )

    async def _round(self, uow: UnitOfWork) -> MovementsResult:
        session = uow.session
        now = await uow.now()
        await session.execute(CREATE_CURSOR, {"name": CURSOR})
        cursor = await session.scalar(
            select(PositionCursor).where(PositionCursor.name == CURSOR).with_for_update(skip_locked=True)
        )
        if cursor is None:
            return MovementsResult()  # a round is running in another replica
        if cursor.owner != self.owner and cursor.lease_until > now:
            self.resume_at, self.horizon = {}, None
            return MovementsResult()
        if cursor.owner != self.owner or self.horizon != cursor.horizon:
            self.resume_at = {}
        rows, high = await read_new(
            session,
            NEW_POSITIONS,
            low=cursor.horizon,
            since=now - self.config.lookback,
            limit=self.config.chunk,
        )
        stored = 0
        if rows:
            stored = await self._derive(session, rows)
            self.metrics.movements_lag.set(max(0.0, (now - max(row.at for row in rows)).total_seconds()))
        cursor.horizon = max(high, cursor.horizon)
        cursor.owner = self.owner
        cursor.lease_until = now + self.config.lease
        cursor.updated_at = now
        await session.flush()
        self.horizon = cursor.horizon
        return MovementsResult(True, len(rows), len({row.plate for row in rows}), stored)

    async def _derive(self, session: AsyncSession, rows: Sequence[Any]) -> int:
        first: dict[str, datetime] = {}
        for row in rows:
            first[row.plate] = min(first.get(row.plate, row.at), row.at)
        starts = {
            plate: self.resume_at[plate]
            for plate, at in first.items()
            if plate in self.resume_at and self.resume_at[plate] <= at
        }
        unknown = sorted(set(first) - set(starts))
        if unknown:
            found = await session.execute(
                RESUME_POINTS,
                {
                    "plates": unknown,
                    "firsts": [first[plate] for plate in unknown],
                    "context": self.config.context,
                    "moving": self.config.stop_speed_kmh,
                },
            )
            for plate, resume_at in found:
                starts[plate] = resume_at or first[plate] - self.config.context
        plates = sorted(starts)
        track = (
            await session.execute(
                TRACKS,
                {
                    "plates": plates,
                    "starts": [starts[plate] for plate in plates],
                    "track_limit": self.config.track_limit,
                },
            )
        ).all()
        derived = derive_track(
            (Position(row.plate, row.at, row.lon, row.lat, row.speed_kmh) for row in track),
            await self._places(session),
            stop_speed_kmh=self.config.stop_speed_kmh,
            min_stop=self.config.min_stop,
        )
        self.resume_at.update(derived.resume_at)
        movement_rows = sorted(
            (movement_row(movement) for movement in derived.movements),
            key=lambda row: (row["plate"], row["at"], row["kind"], row["place"]),
        )
        if not movement_rows:
            return 0
        stored = await store_movements(session, movement_rows)
        for (_, _, kind, _), _outcome in stored.items():
            self.metrics.movements.labels(kind).inc()
        return len(stored)

    async def _places(self, session: AsyncSession) -> Places:
        fingerprint = str(await session.scalar(REGISTER_FINGERPRINT))
        if self.places is None or fingerprint != self.fingerprint:
            self.places = await load_places(session, self.config.point_radius_m)
            self.fingerprint = fingerprint
        return self.places


async def load_places(session: AsyncSession, point_radius_m: float) -> Places:
    """The register's places as the derivation's geometry: depots and facilities within their
    radius; collection and drop-off points within ``point_radius_m``, where stopping is the work."""
    depots = (await session.execute(text("SELECT code, lon, lat, radius_m FROM depots"))).all()
    facilities = (await session.execute(text("SELECT code, lon, lat, radius_m FROM facilities"))).all()
    points = (
        await session.execute(
            text(
                "SELECT 'c:' || code AS code, lon, lat FROM collection_points "
                "UNION ALL SELECT 'd:' || code, lon, lat FROM drop_off_points"
            )
        )
    ).all()
    return Places(
        depots={row.code: circle(row.lon, row.lat, row.radius_m) for row in depots},
        facilities={row.code: circle(row.lon, row.lat, row.radius_m) for row in facilities},
        others={row.code: circle(row.lon, row.lat, point_radius_m) for row in points},
    )


def movement_row(movement: Movement) -> dict[str, Any]:
    row: dict[str, Any] = {
        "plate": movement.plate,
        "at": movement.at,
        "place": "",
        "ended_at": None,
        "lon": None,
        "lat": None,
        "source": MovementSource.POSITIONS.value,
    }
    match movement:
        case DepotDeparture():
            row |= {"kind": MovementKind.DEPARTED_DEPOT.value, "place": movement.depot}
        case DepotReturn():
            row |= {"kind": MovementKind.RETURNED_TO_DEPOT.value, "place": movement.depot}
        case FacilityArrival():
            row |= {"kind": MovementKind.ARRIVED_AT_FACILITY.value, "place": movement.facility}
        case Stop():
            row |= {
                "kind": MovementKind.STOPPED.value,
                "ended_at": movement.ended_at,
                "lon": movement.lon,
                "lat": movement.lat,
            }
    return row
