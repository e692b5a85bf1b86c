"""The unit grid as this city has imported it: stored in the case database, indexed in memory in
every replica, and refreshed when another replica imports a new grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.case.domain.grid import GridCell, GridIndex, cells_from_geojson
from services.case.models import GridCellRow

CHUNK = 1000


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


async def replace_grid(
    session: AsyncSession, cells: Sequence[GridCell], *, districts: set[str] | None = None
) -> int:
    """Replace the grid of the given districts (all districts of the cells by default) in one transaction."""
    covered = districts if districts is not None else {cell.code.district for cell in cells}
    await session.execute(delete(GridCellRow).where(GridCellRow.district_code.in_(sorted(covered))))
    for start in range(0, len(cells), CHUNK):
        await session.execute(insert(GridCellRow).values([_row(c) for c in cells[start : start + CHUNK]]))
    return len(cells)


@dataclass
class GridHolder:
    """The in-memory index every case point is resolved with."""

    index: GridIndex = field(default_factory=lambda: GridIndex([]))
    version: datetime | None = None

    async def current_version(self, sessions: async_sessionmaker[AsyncSession]) -> datetime | None:
        async with sessions() as session:
            return (await session.execute(select(func.max(GridCellRow.imported_at)))).scalar_one()

    async def reload(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        async with sessions() as session:
            version = (await session.execute(select(func.max(GridCellRow.imported_at)))).scalar_one()
            features = [row for (row,) in (await session.execute(select(GridCellRow.feature))).all()]
        cells = cells_from_geojson({"type": "FeatureCollection", "features": features}) if features else []
        self.index = GridIndex(cells, validate=False)  # validated when imported
        self.version = version
        return len(cells)

    async def refresh_if_changed(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        if await self.current_version(sessions) == self.version:
            return 0
        return await self.reload(sessions)
