"""The unit grid over HTTP: locate a point, list cells, and (admins) import a city's grid file."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, require_scope
from citygrid.clock import CityTime
from citygrid.errors import InvalidInput, NotFound
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from contract.common import GUANGZHOU_DISTRICTS, DistrictCode
from services.case.context import Grid
from services.case.domain.grid import GridCell, GridIndex, cells_from_geojson
from services.case.grid_store import lock_grid, replace_grid
from services.case.models import GridCellRow

router = APIRouter(prefix="/v1", tags=["grid"])

StreetCode = Annotated[str, Query(pattern=r"^[0-9]{9}$", description="9-digit street code.")]
CommunityCode = Annotated[str, Query(pattern=r"^[0-9]{12}$", description="12-digit community code.")]


class OffGrid(NotFound):
    code = "case.off_grid"
    title = "Off the grid"


class GridCellNotFound(NotFound):
    code = "case.grid_cell_not_found"


class InvalidGrid(InvalidInput):
    code = "case.invalid_grid"
    title = "Invalid grid"


class Replace(StrEnum):
    DISTRICTS = "districts"  # the districts the file covers; others stay
    ALL = "all"  # the whole grid: districts the file lacks are removed


class GridSummary(BaseModel):
    cells: int
    districts: dict[str, int] = Field(description="Cells per district code.")
    version: CityTime | None = Field(description="When the newest cells were imported.")


class LocatedOut(BaseModel):
    grid_code: str
    name: str
    community_code: str
    community_name: str | None
    street_code: str
    street_name: str | None
    district_code: str


class CellOut(BaseModel):
    code: str
    name: str
    district_code: str
    street_code: str
    community_code: str
    street_name: str | None
    community_name: str | None
    bbox: tuple[float, float, float, float] = Field(description="min lon, min lat, max lon, max lat")


class CellDetailOut(CellOut):
    feature: dict[str, Any] = Field(description="The cell as a GeoJSON Feature (MultiPolygon).")


class ImportOut(GridSummary):
    imported: int
    replaced_districts: list[str]


def _summary(index: GridIndex, version: CityTime | None) -> dict[str, Any]:
    districts: dict[str, int] = {}
    for cell in index:
        districts[cell.code.district] = districts.get(cell.code.district, 0) + 1
    return {"cells": len(index), "districts": districts, "version": version}


def _cell_out(row: GridCellRow) -> dict[str, Any]:
    properties = row.feature.get("properties", {})
    return {
        "code": row.code,
        "name": row.name,
        "district_code": row.district_code,
        "street_code": row.street_code,
        "community_code": row.community_code,
        "street_name": properties.get("street_name"),
        "community_name": properties.get("community_name"),
        "bbox": (row.min_lon, row.min_lat, row.max_lon, row.max_lat),
    }


@router.get("/grid", operation_id="get_grid_summary")
async def get_grid_summary(grid: Grid) -> GridSummary:
    """The grid this replica resolves points with: cells per district and the import version."""
    version = grid.version[1] if grid.version else None
    return GridSummary.model_validate(_summary(grid.index, version))


@router.get("/grid/locate", operation_id="locate_point")
async def locate_point(
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False, description="Longitude, WGS84.")],
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False, description="Latitude, WGS84.")],
    grid: Grid,
) -> LocatedOut:
    """The grid cell, community, street and district a point lies in; 404 ``case.off_grid`` outside every cell."""
    cell = grid.index.locate(lon, lat)
    if cell is None:
        raise OffGrid(f"({lon}, {lat}) lies outside every grid cell", lon=lon, lat=lat)
    return LocatedOut(
        grid_code=cell.code.value,
        name=cell.name,
        community_code=cell.code.community,
        community_name=cell.community_name,
        street_code=cell.code.street,
        street_name=cell.street_name,
        district_code=cell.code.district,
    )


@router.get("/grid/cells", operation_id="list_grid_cells")
async def list_grid_cells(
    runtime: RuntimeDep,
    district: Annotated[DistrictCode | None, Query()] = None,
    street: StreetCode | None = None,
    community: CommunityCode | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[CellOut]:
    """Cells in code order, optionally within a district, street or community (codes are prefixes)."""
    query = select(GridCellRow).order_by(GridCellRow.code).limit(limit + 1)
    for prefix in (district, street, community):
        if prefix is not None:
            # A range on the primary key: the codes under a prefix are contiguous.
            query = query.where(GridCellRow.code.between(prefix.ljust(15, "0"), prefix.ljust(15, "9")))
    if cursor is not None:
        (raw,) = decode_cursor(cursor, 1)
        after = cursor_value(lambda value: _grid_code(str(value)), raw)
        query = query.where(GridCellRow.code > after)
    async with runtime.db() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(rows[limit - 1].code) if len(rows) > limit else None
    return Page[CellOut](
        items=[CellOut.model_validate(_cell_out(row)) for row in rows[:limit]], next_cursor=next_cursor
    )


def _grid_code(value: str) -> str:
    if re.fullmatch(r"[0-9]{15}", value) is None:
        raise ValueError(value)
    return value


@router.get("/grid/cells/{code}", operation_id="get_grid_cell")
async def get_grid_cell(
    code: Annotated[str, Path(pattern=r"^[0-9]{15}$")], runtime: RuntimeDep
) -> CellDetailOut:
    """One cell with its geometry."""
    async with runtime.db() as session:
        row = await session.get(GridCellRow, code)
    if row is None:
        raise GridCellNotFound(f"no grid cell {code}")
    return CellDetailOut.model_validate({**_cell_out(row), "feature": row.feature})


def _refuse_overlaps(kept_features: Sequence[dict[str, Any]], cells: list[GridCell]) -> None:
    """Raise ValueError when the new cells overlap each other or the cells the import keeps."""
    kept = (
        cells_from_geojson({"type": "FeatureCollection", "features": list(kept_features)})
        if kept_features
        else []
    )
    GridIndex.build([*kept, *cells], validate=True)


def _feature_error(message: str) -> dict[str, Any]:
    found = re.match(r"feature (\d+)", message)
    loc: list[str | int] = ["body", "features", int(found.group(1))] if found else ["body"]
    return {"loc": loc, "type": "grid.invalid_feature" if found else "grid.invalid_document", "msg": message}


@router.post("/admin/grid/import", operation_id="import_grid")
async def import_grid(
    document: Annotated[dict[str, Any], Body(description="A GeoJSON FeatureCollection of grid cells.")],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    grid: Grid,
    replace: Replace = Replace.DISTRICTS,
) -> ImportOut:
    """Import a city's unit grid from GeoJSON (admin).

    Each Feature is one cell: a Polygon or MultiPolygon in WGS84/CGCS2000 with ``properties.code``
    (15 digits) and optional ``name``, ``street_name``, ``community_name``. The cells of every district
    the file covers are replaced (``replace=all``: the whole grid); the file is refused whole, as 422
    ``case.invalid_grid`` with ``errors[]``, when a feature is invalid, a district is not one of the
    city's, or cells overlap. Every replica picks the new grid up within ``grid_refresh_seconds``.
    """
    require_scope(principal, ADMIN_SCOPE)
    try:
        cells = await asyncio.to_thread(cells_from_geojson, document)
    except ValueError as error:
        raise InvalidGrid("the grid file was refused", errors=[_feature_error(str(error))]) from None
    if not cells:
        raise InvalidGrid(
            "the grid file has no features",
            errors=[{"loc": ["body", "features"], "type": "grid.empty", "msg": "no features"}],
        )
    unknown = sorted({cell.code.district for cell in cells} - set(GUANGZHOU_DISTRICTS))
    if unknown:
        raise InvalidGrid(
            "the grid file names districts outside the city",
            errors=[
                {
                    "loc": ["body", "features", i],
                    "type": "grid.unknown_district",
                    "msg": f"district {c.code.district}",
                }
                for i, c in enumerate(cells)
                if c.code.district in unknown
            ][:100],
        )
    covered = {cell.code.district for cell in cells}
    async with runtime.uow() as uow:
        session = uow.session
        await lock_grid(session)  # read the kept districts as the import that follows will leave them
        existing = await session.scalars(select(GridCellRow.district_code).distinct())
        replaced = covered | set(existing.all()) if replace is Replace.ALL else covered
        kept_features = (
            await session.scalars(
                select(GridCellRow.feature).where(GridCellRow.district_code.not_in(replaced))
            )
        ).all()
        try:
            await asyncio.to_thread(_refuse_overlaps, kept_features, cells)
        except ValueError as error:
            raise InvalidGrid(
                "the grid file was refused",
                errors=[{"loc": ["body", "features"], "type": "grid.inconsistent", "msg": str(error)}],
            ) from None
        imported = await replace_grid(session, cells, districts=replaced)
    await grid.reload(runtime.db)
    version = grid.version[1] if grid.version else None
    return ImportOut.model_validate(
        {**_summary(grid.index, version), "imported": imported, "replaced_districts": sorted(replaced)}
    )
