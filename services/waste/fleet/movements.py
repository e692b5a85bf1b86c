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
3. for each vehicle with new positions, goes on from where ``vehicle_tracks`` says its derivation
   stands (the last position read, the places it was in, the stop under way), reading only what
   came after it; stores the new movements and the stops that ended, notes the vehicles for the
   chain round, writes each vehicle's new state, and moves the cursor.

Nothing of a vehicle is kept in a replica's memory: a replica taking over goes on exactly where the
last round left off. A position older than the vehicle's state (a terminal's blind-area upload, or
a batch that reached another replica and committed later) makes the round read that vehicle's track
again from the last *resume point* before it (a position that ends any stop) and replace the
movements it had read from positions after that point: the late position may change them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import UnitOfWork
from citygrid.fleet.horizon import HorizonReader
from citygrid.ids import replica_name
from citygrid.runtime import Runtime
from services.waste.chain.models import Movement as MovementRow
from services.waste.chain.models import MovementKind, MovementSource
from services.waste.chain.service import mark_dirty, store_movements
from services.waste.domain.chain import DepotDeparture, DepotReturn, FacilityArrival, Movement, Stop
from services.waste.domain.chain_movements import (
    Places,
    Position,
    TrackState,
    circle,
    derive_track,
    resume_points,
)
from services.waste.fleet.models import PositionCursor, VehicleTrack
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
    "SELECT plate, at, received_at, txid FROM positions "
    "WHERE at >= :since AND txid >= :low AND txid < :high ORDER BY txid LIMIT :limit"
)
# Of the new positions not after their vehicle's state, those that are not a report sent again.
LATE_POSITIONS = text(
    "SELECT n.plate, min(n.at) AS at "
    "FROM unnest(CAST(:plates AS text[]), CAST(:ats AS timestamptz[]), CAST(:received AS timestamptz[])) "
    "AS n(plate, at, received_at) WHERE NOT EXISTS (SELECT 1 FROM positions p "
    "WHERE p.plate = n.plate AND p.at = n.at AND p.received_at < n.received_at) GROUP BY n.plate"
)
# The positions before a late one, newest first, to find the resume point to read again from.
POSITIONS_BEFORE = text(
    "SELECT p.plate, p.at, p.lon, p.lat, p.speed_kmh "
    "FROM unnest(CAST(:plates AS text[]), CAST(:befores AS timestamptz[])) AS t(plate, before) "
    "CROSS JOIN LATERAL (SELECT DISTINCT ON (q.at) q.plate, q.at, q.lon, q.lat, q.speed_kmh "
    "FROM positions q WHERE q.plate = t.plate AND q.at < t.before AND q.at >= :since AND q.txid < :high "
    "ORDER BY q.at DESC, q.received_at LIMIT :back) p"
)
QUEUED = text(
    "SELECT plate, redo_from FROM vehicle_tracks WHERE redo_from IS NOT NULL ORDER BY redo_from LIMIT :limit"
)
DEFER = text(
    "UPDATE vehicle_tracks t SET redo_from = LEAST(coalesce(t.redo_from, d.at), d.at) "
    "FROM unnest(CAST(:plates AS text[]), CAST(:ats AS timestamptz[])) AS d(plate, at) WHERE t.plate = d.plate"
)
ANY_QUEUED = text("SELECT EXISTS (SELECT 1 FROM vehicle_tracks WHERE redo_from IS NOT NULL)")
DONE = text("UPDATE vehicle_tracks SET redo_from = NULL WHERE plate = ANY(CAST(:plates AS text[]))")
# Each vehicle's track from its start, one row per time (a report sent twice is one position), of the
# transactions read so far.
TRACKS = text(
    "SELECT p.plate, p.at, p.lon, p.lat, p.speed_kmh "
    "FROM unnest(CAST(:plates AS text[]), CAST(:starts AS timestamptz[])) AS t(plate, start) "
    "CROSS JOIN LATERAL (SELECT DISTINCT ON (q.at) q.plate, q.at, q.lon, q.lat, q.speed_kmh "
    "FROM positions q WHERE q.plate = t.plate AND q.at >= t.start AND q.txid < :high "
    "ORDER BY q.at, q.received_at LIMIT :track_limit) p"
)
REGISTER_FINGERPRINT = text(
    "SELECT concat_ws('|', "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM depots), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM facilities), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM collection_points), "
    "(SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM drop_off_points))"
)
ONE_MICROSECOND = timedelta(microseconds=1)
STATE_SLICE = 1000


@dataclass(frozen=True)
class MovementsConfig:
    lease: timedelta = timedelta(seconds=15)
    # Positions reach the round this long after their time at most: a blind-area upload older than
    # this is stored, not read for movements (its trips are long judged).
    lookback: timedelta = timedelta(days=2)
    # New positions a round reads: 5,800 vehicles at 1 Hz for three seconds; a full read makes the
    # job run again at once.
    chunk: int = 20_000
    # The positions of one vehicle a round derives from (14 hours at 1 Hz); the rest in the next.
    track_limit: int = 50_000
    # How far back before a late position its resume point is looked for, in positions.
    back: int = 2_000
    # Vehicles whose tracks a round reads again for late positions: the rest wait in
    # ``vehicle_tracks.redo_from`` for the rounds after, so a flood of blind-area uploads after an
    # outage keeps every round short.
    late_per_round: int = 100
    stop_speed_kmh: float = 3.0
    min_stop: timedelta = timedelta(minutes=2)
    # A collection or drop-off point: where a vehicle stops to lift bins, not a stop to report.
    point_radius_m: float = 30.0


@dataclass(frozen=True)
class MovementsResult:
    leader: bool = False
    positions: int = 0
    vehicles: int = 0
    movements: Counter[str] = field(default_factory=Counter)
    late_vehicles: int = 0
    more: bool = False
    lag_seconds: float | None = None


class MovementsRound:
    """This replica's side of the movements: the lease; every vehicle's state is in the database."""

    def __init__(
        self, runtime: Runtime, metrics: FleetMetrics, config: MovementsConfig | None = None
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.config = config or MovementsConfig()
        self.owner = replica_name()
        self.reader = HorizonReader(NEW_POSITIONS, self.config.chunk)
        self.places: Places | None = None
        self.fingerprint: str | None = None
        self.last = MovementsResult()

    async def round(self) -> int:
        """One round; the new positions it read, or a full chunk when more wait (the job then runs
        again at once); 0 when another replica leads."""
        async with self.runtime.uow() as uow:
            result = await self._round(uow)
        # Counted once the round's transaction has committed.
        self.last = result
        self.metrics.movements_leader.set(1 if result.leader else 0)
        self.metrics.movements_positions.inc(result.positions)
        for kind, count in result.movements.items():
            self.metrics.movements.labels(kind).inc(count)
        if result.lag_seconds is not None:
            self.metrics.movements_lag.set(result.lag_seconds)
        return self.config.chunk if result.more else result.positions

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
        if cursor is None or (cursor.owner != self.owner and cursor.lease_until > now):
            return MovementsResult()  # another replica leads, or is in a round now
        read = await self.reader.read(session, low=cursor.horizon, since=now - self.config.lookback)
        result = MovementsResult(leader=True, positions=len(read.rows), more=read.more)
        if read.rows or await session.scalar(ANY_QUEUED):
            result = await self._derive(session, read.rows, read.cursor, result)
        if read.rows:
            result = _with_lag(result, (now - max(row.at for row in read.rows)).total_seconds())
        cursor.horizon = max(read.cursor, cursor.horizon)
        cursor.owner = self.owner
        # From the end of the round, not its start: a long round does not hand over a lapsed lease.
        ended: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
        cursor.lease_until = ended + self.config.lease
        cursor.updated_at = now
        return result

    async def _derive(
        self, session: AsyncSession, rows: Sequence[Any], high: int, result: MovementsResult
    ) -> MovementsResult:
        config = self.config
        first: dict[str, datetime] = {}
        for row in rows:
            first[row.plate] = min(first.get(row.plate, row.at), row.at)
        states = await _states(session, sorted(first))
        pending = await _late(session, rows, states)
        for plate, at in (await session.execute(QUEUED, {"limit": config.late_per_round})).all():
            pending[plate] = min(pending.get(plate, at), at)
        chosen = dict(sorted(pending.items(), key=lambda item: (item[1], item[0]))[: config.late_per_round])
        deferred = {plate: at for plate, at in pending.items() if plate not in chosen}
        starts: dict[str, datetime] = {}
        going_on: dict[str, TrackState] = {}
        for plate, at in first.items():
            state = states.get(plate)
            if plate in chosen:
                continue
            if state is None:
                starts[plate] = at  # a vehicle seen for the first time: its first position says where
            else:
                going_on[plate] = state
                starts[plate] = state.at + ONE_MICROSECOND
        if not first and not chosen:
            return result
        places = await self._places(session)
        earliest = min([*first.values(), *chosen.values()])
        replaced = await self._resume_before(session, chosen, places, earliest=earliest, high=high)
        starts |= {plate: start for plate, (start, _) in replaced.items()}
        plates = sorted(starts)
        track = (
            await session.execute(
                TRACKS,
                {
                    "plates": plates,
                    "starts": [starts[plate] for plate in plates],
                    "high": high,
                    "track_limit": config.track_limit,
                },
            )
        ).all()
        derived = derive_track(
            (Position(row.plate, row.at, row.lon, row.lat, row.speed_kmh) for row in track),
            places,
            states=going_on,
            stop_speed_kmh=config.stop_speed_kmh,
            min_stop=config.min_stop,
        )
        if replaced:
            # What was read from these vehicles' positions after the resume point, up to the last
            # position read again now, is read again.
            read_up_to: dict[str, datetime] = {}
            for row in track:
                read_up_to[row.plate] = max(read_up_to.get(row.plate, row.at), row.at)
            for plate, (start, inclusive) in replaced.items():
                if plate not in read_up_to:
                    continue
                await session.execute(
                    delete(MovementRow).where(
                        MovementRow.plate == plate,
                        MovementRow.source == MovementSource.POSITIONS.value,
                        MovementRow.at >= start if inclusive else MovementRow.at > start,
                        MovementRow.at <= read_up_to[plate],
                    )
                )
            await mark_dirty(session, {plate: start for plate, (start, _) in replaced.items()})
            await session.execute(DONE, {"plates": sorted(replaced)})
        if deferred:
            await session.execute(DEFER, {"plates": list(deferred), "ats": list(deferred.values())})
        movement_rows = sorted(
            (
                movement_row(m)
                for m in derived.movements
                if not _stored_already(m, going_on.get(m.plate), config.min_stop)
            ),
            key=lambda row: (row["plate"], row["at"], row["kind"], row["place"]),
        )
        kinds: Counter[str] = Counter()
        if movement_rows:
            stored = await store_movements(session, movement_rows)
            kinds.update(kind for (_, _, kind, _) in stored)
        await _save_states(session, {p: s for p, s in derived.states.items() if states.get(p) != s})
        return MovementsResult(
            leader=True,
            positions=result.positions,
            vehicles=len(first),
            movements=kinds,
            late_vehicles=len(chosen),
            more=result.more,
        )

    async def _resume_before(
        self,
        session: AsyncSession,
        late: Mapping[str, datetime],
        places: Places,
        *,
        earliest: datetime,
        high: int,
    ) -> dict[str, tuple[datetime, bool]]:
        """Where each vehicle with a late position is read again from, and whether a movement at that
        very time is read again too: the last resume point before it (not: a derivation starting at
        a position says nothing of what was crossed to reach it); else, inside a stop read from
        positions, the position before the stop's first (the stop itself is read again); else the
        oldest of the positions looked at."""
        if not late:
            return {}
        plates = sorted(late)
        since = earliest - self.config.lookback
        before = (
            await session.execute(
                POSITIONS_BEFORE,
                {
                    "plates": plates,
                    "befores": [late[plate] for plate in plates],
                    "since": since,
                    "high": high,
                    "back": self.config.back,
                },
            )
        ).all()
        tracks: dict[str, list[Position]] = {plate: [] for plate in plates}
        for row in before:
            tracks[row.plate].append(Position(row.plate, row.at, row.lon, row.lat, row.speed_kmh))
        starts: dict[str, tuple[datetime, bool]] = {}
        for plate in plates:
            track = sorted(tracks[plate], key=lambda p: p.at)
            points = resume_points(track, places, stop_speed_kmh=self.config.stop_speed_kmh)
            found = [p.at for p, is_point in zip(track, points, strict=True) if is_point]
            if found:
                starts[plate] = (found[-1], False)
                continue
            stop_at = await session.scalar(
                select(func.max(MovementRow.at)).where(
                    MovementRow.plate == plate,
                    MovementRow.source == MovementSource.POSITIONS.value,
                    MovementRow.kind == MovementKind.STOPPED.value,
                    MovementRow.at < late[plate],
                    MovementRow.at >= since,
                    (MovementRow.ended_at.is_(None)) | (MovementRow.ended_at >= late[plate]),
                )
            )
            if stop_at is not None:
                # The position before a stop's first ends whatever came before it: a resume point.
                ahead = await session.scalar(
                    text(
                        "SELECT max(at) FROM positions WHERE plate = :plate AND at < :stop_at "
                        "AND at >= :since AND txid < :high"
                    ),
                    {"plate": plate, "stop_at": stop_at, "since": since, "high": high},
                )
                starts[plate] = (ahead, False) if ahead is not None else (stop_at, True)
                continue
            starts[plate] = (track[0].at, False) if track else (late[plate], True)
        log.info("movements: %d vehicles read again from before a late position", len(starts))
        return starts

    async def _places(self, session: AsyncSession) -> Places:
        fingerprint = str(await session.scalar(REGISTER_FINGERPRINT))
        if self.places is None or fingerprint != self.fingerprint:
            self.places = await load_places(session, self.config.point_radius_m)
            self.fingerprint = fingerprint
        return self.places


def _with_lag(result: MovementsResult, lag: float) -> MovementsResult:
    return MovementsResult(
        result.leader,
        result.positions,
        result.vehicles,
        result.movements,
        result.late_vehicles,
        result.more,
        max(0.0, lag),
    )


def _stored_already(movement: Movement, state: TrackState | None, min_stop: timedelta) -> bool:
    """A stop still under way that the round before stored under way already: nothing to send."""
    return (
        isinstance(movement, Stop)
        and movement.ended_at is None
        and state is not None
        and state.stop is not None
        and state.stop[0].at == movement.at
        and state.stop_reported(min_stop)
    )


async def _states(session: AsyncSession, plates: Sequence[str]) -> dict[str, TrackState]:
    rows = await session.scalars(select(VehicleTrack).where(VehicleTrack.plate.in_(plates)))
    return {row.plate: state_of(row) for row in rows}


async def _late(
    session: AsyncSession, rows: Sequence[Any], states: Mapping[str, TrackState]
) -> dict[str, datetime]:
    """The vehicles with a new position not after their state (a report sent again aside), and the
    earliest such position of each."""
    candidates = [row for row in rows if row.plate in states and row.at <= states[row.plate].at]
    if not candidates:
        return {}
    found = await session.execute(
        LATE_POSITIONS,
        {
            "plates": [row.plate for row in candidates],
            "ats": [row.at for row in candidates],
            "received": [row.received_at for row in candidates],
        },
    )
    return {plate: at for plate, at in found}


def state_of(row: VehicleTrack) -> TrackState:
    stop: tuple[Position, Position] | None = None
    if (
        row.stop_at is not None
        and row.stop_last_at is not None
        and row.stop_lon is not None
        and row.stop_lat is not None
        and row.stop_last_lon is not None
        and row.stop_last_lat is not None
    ):
        stop = (
            Position(row.plate, row.stop_at, row.stop_lon, row.stop_lat, 0.0),
            Position(row.plate, row.stop_last_at, row.stop_last_lon, row.stop_last_lat, 0.0),
        )
    return TrackState(row.at, frozenset(row.depots), frozenset(row.facilities), row.registered, stop)


async def _save_states(session: AsyncSession, states: Mapping[str, TrackState]) -> None:
    rows = [
        {
            "plate": plate,
            "at": state.at,
            "depots": sorted(state.depots),
            "facilities": sorted(state.facilities),
            "registered": state.registered,
            "stop_at": state.stop[0].at if state.stop else None,
            "stop_lon": state.stop[0].lon if state.stop else None,
            "stop_lat": state.stop[0].lat if state.stop else None,
            "stop_last_at": state.stop[1].at if state.stop else None,
            "stop_last_lon": state.stop[1].lon if state.stop else None,
            "stop_last_lat": state.stop[1].lat if state.stop else None,
        }
        for plate, state in sorted(states.items())
    ]
    for start in range(0, len(rows), STATE_SLICE):
        statement = insert(VehicleTrack).values(rows[start : start + STATE_SLICE])
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[VehicleTrack.plate],
                set_={
                    **{name: statement.excluded[name] for name in rows[0] if name != "plate"},
                    "updated_at": func.now(),
                },
            )
        )


async def load_places(session: AsyncSession, point_radius_m: float) -> Places:
    """The register's places as the derivation's geometry: depots and facilities within their
    radius; collection and drop-off points within ``point_radius_m``, where stopping is the work. A
    place that cannot be drawn (a location outside ±85° of latitude) is left out and logged: it
    must not stop the movements of the whole fleet."""
    depots = (await session.execute(text("SELECT code, lon, lat, radius_m FROM depots"))).all()
    facilities = (await session.execute(text("SELECT code, lon, lat, radius_m FROM facilities"))).all()
    points = (
        await session.execute(
            text(
                "SELECT 'c:' || code AS code, lon, lat, CAST(:radius AS float8) AS radius_m FROM collection_points "
                "UNION ALL SELECT 'd:' || code, lon, lat, :radius FROM drop_off_points"
            ),
            {"radius": point_radius_m},
        )
    ).all()
    return Places(depots=_circles(depots), facilities=_circles(facilities), others=_circles(points))


def _circles(rows: Sequence[Any]) -> dict[str, BaseGeometry]:
    drawn: dict[str, BaseGeometry] = {}
    for row in rows:
        try:
            drawn[row.code] = circle(row.lon, row.lat, row.radius_m)
        except ValueError as error:
            log.warning("movements: place %s is left out: %s", row.code, error)
    return drawn


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
