"""The unit grid as this city has imported it: stored in the case database, indexed in memory in
every replica, and refreshed when another replica imports a new grid."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.case.domain.grid import GridCell, GridIndex, cells_from_geojson
from services.case.models import GridCellRow

CHUNK = 1000
# Any fixed 64-bit key, the same in every replica: "grid" in ASCII.
GRID_SEED_LOCK = 0x67726964


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
    min_lon, min_lat, max_lon, max_lat = cell.bbox
    return {
        "code": str(cell.code),
        "district_code": cell.code.district,
        "street_code": cell.code.street,
        "community_code": cell.code.community,
        "name": cell.name,
        "feature": cell_feature(cell),
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
    }


def index_features(features: Sequence[dict[str, Any]]) -> GridIndex:
    """The index of stored features (validated when they were imported)."""
    cells = cells_from_geojson({"type": "FeatureCollection", "features": list(features)}) if features else []
    return GridIndex(cells, validate=False)


async def lock_grid(session: AsyncSession) -> None:
    """Take the grid's transaction-level advisory lock: imports and the demo seed take turns."""
    await session.execute(select(func.pg_advisory_xact_lock(GRID_SEED_LOCK)))


async def replace_grid(
    session: AsyncSession, cells: Sequence[GridCell], *, districts: set[str] | None = None
) -> int:
    """Replace the grid of the given districts (all districts of the cells by default) in one transaction."""
    covered = districts if districts is not None else {cell.code.district for cell in cells}
    # Imports take turns, and each stamps its rows after taking its turn, so the newest stamp
    # always belongs to the last import to commit: the version replicas compare stays monotonic.
    await lock_grid(session)
    stamp = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    await session.execute(delete(GridCellRow).where(GridCellRow.district_code.in_(sorted(covered))))
    for start in range(0, len(cells), CHUNK):
        # One prepared statement executed for many rows: far cheaper than a VALUES list this wide.
        await session.execute(
            insert(GridCellRow), [_row(c) | {"imported_at": stamp} for c in cells[start : start + CHUNK]]
        )
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


GridVersion = tuple[int, datetime | None]


@dataclass
class GridHolder:
    """The in-memory index every case point is resolved with."""

    index: GridIndex = field(default_factory=lambda: GridIndex([]))
    version: GridVersion | None = None

    @staticmethod
    async def _version(session: AsyncSession) -> GridVersion:
        # The count catches a district removed outright; the newest import time any re-import.
        count, newest = (await session.execute(select(func.count(), func.max(GridCellRow.imported_at)))).one()
        return int(count), newest

    async def current_version(self, sessions: async_sessionmaker[AsyncSession]) -> GridVersion:
        async with sessions() as session:
            return await self._version(session)

    async def reload(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        async with sessions() as session, session.begin():
            # One snapshot for the version and the rows, so a concurrent import is not half-seen.
            await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            version = await self._version(session)
            features = [row for (row,) in (await session.execute(select(GridCellRow.feature))).all()]
        # A city's grid takes seconds to parse and index: off the event loop, so requests go on.
        self.index = await asyncio.to_thread(index_features, features)
        self.version = version
        return len(self.index)

    async def adopt(self, sessions: async_sessionmaker[AsyncSession], cells: Sequence[GridCell]) -> None:
        """Index cells this replica has just stored itself, without reading them back."""
        self.index = GridIndex(cells, validate=False)
        self.version = await self.current_version(sessions)

    async def refresh_if_changed(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Reload when another replica imported a grid; 1 when it did, else 0 (a periodic job's count)."""
        if await self.current_version(sessions) == self.version:
            return 0
        await self.reload(sessions)
        return 1
