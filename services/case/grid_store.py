"""The unit grid as this city has imported it: stored in the case database, indexed in memory in
every replica, and refreshed when another replica imports a new grid.

Parsing and validating a grid is pure-Python CPU work (seconds for a whole city), so it runs in a
process pool, never on the event loop and never in a thread (which would hold the GIL as well):

* ``parse_grid_file`` (a grid file on disk), ``check_against_kept`` (its cells against the stored
  cells an import keeps) and ``index_stored_features`` (the stored cells) run in a worker
  process, never while a database transaction is open. What crosses back is plain data in
  pickled chunks of ``CHUNK`` cells or rows, so the parent never unpickles a whole city at once.
* The parent unpickles one chunk at a time and builds its ``GridIndex`` a slice at a time
  (``GridIndex.build_stepwise``), yielding to the event loop in between: requests keep being
  served while a replica takes a new grid.

Measured on the 20,000-cell demo grid (9.4 MB of GeoJSON): parse and validate ~1.6 s in the
worker; unpickling the whole ``GridIndex`` ~0.4–0.6 s against unpickling its cells ~0.3–0.45 s
plus indexing them again ~0.1–0.3 s. The whole index is cheaper in total but one uninterruptible
block, so the cells cross, in chunks, and the index is rebuilt in slices. What still stops the
loop is the garbage collector's full pass while two indexes are alive (up to ~0.5 s there).

A broken pool (its worker killed, for memory most likely) answers ``GridWorkerFailed`` (503); the
process's own pool is then replaced at its next use.

The pool: ``create_grid_pool()`` makes one (spawned workers: a threaded server must not fork);
``GridHolder(pool=…)`` uses the one it is given, else the process's own (``grid_pool()``, made
on first use), which ``close_grid_pool()`` shuts down when the service stops.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, Text, bindparam, cast, delete, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.errors import DomainError
from services.case.domain.grid import GridCell, GridIndex, cells_from_geojson
from services.case.models import GridCellRow

CHUNK = 1000
# Any fixed 64-bit key, the same in every replica: "grid" in ASCII.
GRID_SEED_LOCK = 0x67726964
# Grid work is rare (an import, another replica's import) and imports take turns on the lock.
GRID_WORKERS = 1

T = TypeVar("T")


class GridWorkerFailed(DomainError):
    code = "case.grid_worker_failed"
    status = 503
    title = "Grid worker failed"


# --------------------------------------------------------------------------------------------------
# The process pool


def create_grid_pool(workers: int = GRID_WORKERS) -> ProcessPoolExecutor:
    """A pool for grid parsing and indexing. Spawned, not forked: forking a process that runs an
    event loop, a database pool and threads copies their locks in whatever state they are in."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


_shared_pool: ProcessPoolExecutor | None = None


def grid_pool() -> ProcessPoolExecutor:
    """The process's grid pool, made on first use (its worker spawns at its first task)."""
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = create_grid_pool()
    return _shared_pool


async def close_grid_pool() -> None:
    """Shut the process's grid pool down when the service stops; a later use makes a new one.

    Tasks already handed to it finish first (another app of the same process may be waiting for
    one), in a thread, so the event loop does not wait. Without this call, ``concurrent.futures``
    still stops the worker when the interpreter exits.
    """
    global _shared_pool
    pool, _shared_pool = _shared_pool, None
    if pool is not None:
        await asyncio.to_thread(pool.shutdown, wait=True)


async def _in_pool(pool: Executor | None, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in ``pool`` (``None``: the process's grid pool)."""
    global _shared_pool
    executor = pool if pool is not None else grid_pool()
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)
    except BrokenProcessPool:
        # A worker died (killed for its memory, most likely): this pool is unusable from now on.
        if executor is _shared_pool:
            _shared_pool = None  # the next use makes a fresh one
        raise GridWorkerFailed("the grid worker process died; try again") from None


# --------------------------------------------------------------------------------------------------
# Rows


def cell_feature(cell: GridCell) -> dict[str, Any]:
    """A cell as a GeoJSON Feature (MultiPolygon, rings closed), the form it is stored in."""

    def ring(points: Sequence[tuple[float, float]]) -> list[list[float]]:
        return [[x, y] for x, y in points] + [[points[0][0], points[0][1]]]

    return {
        "type": "Feature",
        "properties": {
            "code": str(cell.code),
            "name": cell.name,
            "street_name": cell.street_name,
            "community_name": cell.community_name,
        },
        "geometry": {
            "type": "MultiPolygon",
            "coordinates": [[ring(p.outer), *(ring(h) for h in p.holes)] for p in cell.polygons],
        },
    }


def _row(cell: GridCell) -> dict[str, Any]:
    """The row of a cell, its feature as JSON text (the database parses it, not this process)."""
    min_lon, min_lat, max_lon, max_lat = cell.bbox
    return {
        "code": str(cell.code),
        "district_code": cell.code.district,
        "street_code": cell.code.street,
        "community_code": cell.code.community,
        "name": cell.name,
        "feature": json.dumps(cell_feature(cell), ensure_ascii=False, separators=(",", ":")),
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
    }


_INSERT = insert(GridCellRow).values(
    {
        **{name: bindparam(name) for name in ("code", "district_code", "street_code", "community_code")},
        "name": bindparam("name"),
        "feature": cast(bindparam("feature", type_=Text), JSONB),
        **{name: bindparam(name) for name in ("min_lon", "min_lat", "max_lon", "max_lat")},
        "imported_at": bindparam("imported_at"),
    }
)


def _chunks(items: Sequence[Any]) -> list[bytes]:
    return [
        pickle.dumps(list(items[start : start + CHUNK]), protocol=pickle.HIGHEST_PROTOCOL)
        for start in range(0, len(items), CHUNK)
    ]


def _cells_of(features: Iterable[str]) -> list[GridCell]:
    """Cells of stored features (JSON text), validated when they were imported."""
    parsed = [json.loads(feature) for feature in features]
    return cells_from_geojson({"type": "FeatureCollection", "features": parsed}) if parsed else []


# --------------------------------------------------------------------------------------------------
# Work done in the pool's worker process: module-level functions of plain arguments and results


def index_stored_features(features: Sequence[str]) -> list[bytes]:
    """(worker) The stored features' cells, in code order, as pickled chunks for the parent."""
    cells = _cells_of(features)
    cells.sort(key=lambda cell: cell.code.value)
    return _chunks(cells)


RefusalKind = Literal["json", "not_object", "invalid", "empty", "unknown_district", "inconsistent"]


@dataclass(frozen=True)
class Refusal:
    """Why a grid file is refused, as plain data the HTTP layer turns into a problem."""

    kind: RefusalKind
    message: str
    position: int | None = None  # where the JSON broke
    features: tuple[tuple[int, str], ...] = ()  # (feature index, district) outside the city


BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ParsedGrid:
    """A grid file parsed and checked on its own, as plain data for the parent."""

    rows: list[bytes]  # the new rows, pickled chunks of ``_row`` dicts
    cells: list[bytes]  # the new cells, code order, pickled chunks
    count: int
    districts: list[str]  # the districts the file covers
    bbox: BBox  # of all its cells


def parse_grid_file(path: str, city_districts: frozenset[str]) -> ParsedGrid | Refusal:
    """(worker) Parse and check the grid file at ``path`` on its own: GeoJSON, every feature, the
    city's districts, codes that repeat and cells that overlap each other."""
    raw = Path(path).read_bytes()
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        return Refusal("json", error.msg, position=error.pos)
    except (ValueError, RecursionError) as error:  # not UTF-8, or nested beyond the parser
        return Refusal("json", str(error) or type(error).__name__)
    del raw
    if not isinstance(document, dict):
        return Refusal("not_object", "the grid file must be a JSON object (a GeoJSON FeatureCollection)")
    try:
        cells = cells_from_geojson(document)
    except ValueError as error:
        return Refusal("invalid", str(error))
    del document
    if not cells:
        return Refusal("empty", "no features")
    outside = tuple(
        (index, cell.code.district)
        for index, cell in enumerate(cells)
        if cell.code.district not in city_districts
    )
    if outside:
        return Refusal("unknown_district", "the grid file names districts outside the city", features=outside)
    try:
        index = GridIndex.build(cells, validate=True)
    except ValueError as error:
        return Refusal("inconsistent", str(error))
    bounds = index.bounds
    assert bounds is not None  # not empty
    return ParsedGrid(
        rows=_chunks([_row(cell) for cell in cells]),
        cells=_chunks(list(index)),
        count=len(cells),
        districts=sorted({cell.code.district for cell in cells}),
        bbox=bounds,
    )


def _touch(a: BBox, b: BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def check_against_kept(cells: Sequence[bytes], kept_features: Sequence[str]) -> Refusal | None:
    """(worker) Whether the new cells overlap the stored cells an import keeps (``kept_features``,
    those whose box meets the file's). Only new cells whose box meets a kept cell's box can."""
    kept = _cells_of(kept_features)
    if not kept:
        return None
    new = [cell for chunk in cells for cell in pickle.loads(chunk)]  # noqa: S301 (our own)
    kept_box = (
        min(c.bbox[0] for c in kept),
        min(c.bbox[1] for c in kept),
        max(c.bbox[2] for c in kept),
        max(c.bbox[3] for c in kept),
    )
    near = [cell for cell in new if _touch(cell.bbox, kept_box)]
    try:
        GridIndex.build([*kept, *near], validate=True)
    except ValueError as error:
        return Refusal("inconsistent", str(error))
    return None


# --------------------------------------------------------------------------------------------------
# The database side


async def lock_grid(session: AsyncSession) -> None:
    """Take the grid's transaction-level advisory lock: imports and the demo seed take turns."""
    await session.execute(select(func.pg_advisory_xact_lock(GRID_SEED_LOCK)))


async def _write_rows(
    session: AsyncSession, districts: Iterable[str], chunks: Iterable[list[dict[str, Any]]]
) -> datetime:
    """Delete the districts' cells and insert the rows; the import's stamp. Call under the lock."""
    # Imports take turns, and each stamps its rows after taking its turn, so the newest stamp
    # always belongs to the last import to commit: the version replicas compare stays monotonic.
    stamp: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    await session.execute(delete(GridCellRow).where(GridCellRow.district_code.in_(sorted(districts))))
    for rows in chunks:
        # One prepared statement executed for many rows: far cheaper than a VALUES list this wide.
        await session.execute(_INSERT, [row | {"imported_at": stamp} for row in rows])
    return stamp


async def replace_grid(
    session: AsyncSession, cells: Sequence[GridCell], *, districts: set[str] | None = None
) -> int:
    """Replace the grid of the given districts (all districts of the cells by default) in one
    transaction, with cells this process holds already (the demo grid at startup)."""
    covered = districts if districts is not None else {cell.code.district for cell in cells}
    await lock_grid(session)
    rows = [_row(cell) for cell in cells]
    await _write_rows(session, covered, (rows[start : start + CHUNK] for start in range(0, len(rows), CHUNK)))
    return len(cells)


async def seed_demo_grid_if_empty(
    sessions: async_sessionmaker[AsyncSession], cells: Sequence[GridCell]
) -> int:
    """Store the demo grid when no grid was ever imported, so a fresh city has points to resolve.

    Replicas starting together take a transaction-level advisory lock: one seeds, the others see
    the rows and do nothing.
    """
    async with sessions() as session, session.begin():
        await lock_grid(session)  # re-entrant: replace_grid takes it again
        if await session.scalar(select(GridCellRow.code).limit(1)) is not None:
            return 0
        return await replace_grid(session, cells)


async def _streamed(session: AsyncSession, query: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """All rows of ``query`` as plain tuples, fetched in batches so the event loop runs between them."""
    rows: list[tuple[Any, ...]] = []
    result = await session.stream(query.execution_options(yield_per=CHUNK * 5))
    async for partition in result.partitions():
        rows.extend(tuple(row) for row in partition)  # plain tuples: they cross to the worker
    return rows


# Stored features as JSON text: the database renders them, this process does not parse them.
_FEATURE_TEXT = cast(GridCellRow.feature, Text)


async def _unpickled_cells(chunks: Sequence[bytes]) -> list[GridCell]:
    cells: list[GridCell] = []
    for chunk in chunks:
        cells.extend(pickle.loads(chunk))  # noqa: S301 (made by our own worker process)
        await asyncio.sleep(0)
    return cells


async def build_index(cells: Iterable[GridCell], *, step: int = CHUNK) -> GridIndex:
    """Index validated cells on the event loop a slice at a time, letting other tasks run between."""
    building = GridIndex.build_stepwise(cells, step=step)
    while True:
        try:
            next(building)
        except StopIteration as done:
            index: GridIndex = done.value
            return index
        await asyncio.sleep(0)


GridVersion = tuple[int, datetime | None]


async def _version(session: AsyncSession) -> GridVersion:
    # The count catches a district removed outright; the newest import time any re-import.
    count, newest = (await session.execute(select(func.count(), func.max(GridCellRow.imported_at)))).one()
    return int(count), newest


class GridChanged(DomainError):
    code = "case.grid_changed"
    status = 409
    title = "Grid changed"


@dataclass(frozen=True)
class Imported:
    imported: int
    replaced_districts: list[str]


# An import retries its check this often when other imports keep committing in between.
IMPORT_ATTEMPTS = 3


async def _kept_candidates(session: AsyncSession, replaced: Iterable[str], bbox: BBox) -> list[str]:
    """The stored cells an import keeps whose box meets ``bbox``: the only ones it can overlap."""
    min_lon, min_lat, max_lon, max_lat = bbox
    query = select(_FEATURE_TEXT).where(
        GridCellRow.district_code.not_in(sorted(replaced)),
        GridCellRow.min_lon <= max_lon,
        GridCellRow.max_lon >= min_lon,
        GridCellRow.min_lat <= max_lat,
        GridCellRow.max_lat >= min_lat,
    )
    return [feature for (feature,) in await _streamed(session, query)]


async def _kept_cells(index: GridIndex, replaced: set[str]) -> list[GridCell]:
    kept: list[GridCell] = []
    for n, cell in enumerate(index, 1):
        if cell.code.district not in replaced:
            kept.append(cell)
        if n % CHUNK == 0:
            await asyncio.sleep(0)
    return kept


@dataclass
class GridHolder:
    """The in-memory index every case point is resolved with.

    ``pool`` is where grids are parsed (``None``: the process's own grid pool). Loads take turns,
    so a refresh that read the grid before an import committed cannot install its older index
    after the import's.
    """

    index: GridIndex = field(default_factory=lambda: GridIndex([]))
    version: GridVersion | None = None
    pool: Executor | None = None
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False, compare=False)

    async def current_version(self, sessions: async_sessionmaker[AsyncSession]) -> GridVersion:
        async with sessions() as session:
            return await _version(session)

    async def reload(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        async with self._turn:
            return await self._reload(sessions)

    async def _reload(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        async with sessions() as session, session.begin():
            # One snapshot for the version and the rows, so a concurrent import is not half-seen.
            await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            version = await _version(session)
            features = [feature for (feature,) in await _streamed(session, select(_FEATURE_TEXT))]
        # Parsed in the pool after the transaction: no connection waits on the worker.
        chunks = await _in_pool(self.pool, index_stored_features, features)
        del features
        self.index = await build_index(await _unpickled_cells(chunks))
        self.version = version
        return len(self.index)

    async def adopt(self, sessions: async_sessionmaker[AsyncSession], cells: Sequence[GridCell]) -> None:
        """Index cells this replica has just stored itself, without reading them back."""
        async with self._turn:
            index = await build_index(cells)
            self.index, self.version = index, await self.current_version(sessions)

    async def refresh_if_changed(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Reload when another replica imported a grid; 1 when it did, else 0 (a periodic job's count)."""
        if await self.current_version(sessions) == self.version:
            return 0
        await self.reload(sessions)
        return 1

    async def import_file(
        self,
        sessions: async_sessionmaker[AsyncSession],
        path: Path,
        *,
        replace_all: bool,
        city_districts: frozenset[str],
    ) -> Imported | Refusal:
        """Import the grid file at ``path``: the districts it covers are replaced (every district
        with ``replace_all``), the others kept, and nothing is written when it is refused.

        No transaction waits on the worker. The file is parsed and checked on its own first; then
        against the cells the import keeps, as one snapshot of the stored grid shows them; then
        written under the grid's lock if the grid is still at that snapshot's version (another
        import committed in between: checked again, ``IMPORT_ATTEMPTS`` times at most).
        """
        parsed = await _in_pool(self.pool, parse_grid_file, str(path), city_districts)
        if isinstance(parsed, Refusal):
            return parsed
        for _ in range(IMPORT_ATTEMPTS):
            async with sessions() as session, session.begin():
                await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                seen = await _version(session)
                stored = set((await session.scalars(select(GridCellRow.district_code).distinct())).all())
                replaced = set(parsed.districts) | stored if replace_all else set(parsed.districts)
                candidates = await _kept_candidates(session, replaced, parsed.bbox)
            if candidates:
                refusal = await _in_pool(self.pool, check_against_kept, parsed.cells, candidates)
                if refusal is not None:
                    return refusal
            del candidates
            async with sessions() as session, session.begin():
                await lock_grid(session)
                if await _version(session) != seen:
                    continue  # another import committed since the snapshot: check again
                stamp = await _write_rows(
                    session,
                    replaced,
                    (pickle.loads(chunk) for chunk in parsed.rows),  # noqa: S301 (our own worker's)
                )
                # The version this transaction leaves: the next import waits for the lock, so this
                # is what every replica reads once it commits.
                count = int(await session.scalar(select(func.count()).select_from(GridCellRow)) or 0)
            await self._install(sessions, parsed, replaced, before=seen, after=(count, stamp))
            return Imported(parsed.count, sorted(replaced))
        raise GridChanged("other imports kept changing the grid while this one was checked; send it again")

    async def _install(
        self,
        sessions: async_sessionmaker[AsyncSession],
        parsed: ParsedGrid,
        replaced: set[str],
        *,
        before: GridVersion,
        after: GridVersion,
    ) -> None:
        """Take the grid an import committed: the cells this replica holds of the districts kept,
        and the new ones, when it held the grid the import started from; else read it back."""
        async with self._turn:
            if self.version == after:
                return  # a refresh took it already
            if self.version != before:
                await self._reload(sessions)
                return
            kept = await _kept_cells(self.index, replaced)
            self.index = await build_index([*kept, *await _unpickled_cells(parsed.cells)])
            self.version = after
