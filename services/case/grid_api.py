"""The unit grid over HTTP: locate a point, list cells, and (admins) import a city's grid file."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import select

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, require_scope
from citygrid.clock import CityTime
from citygrid.errors import InvalidInput, NotFound
from citygrid.http import UnsupportedMediaType
from citygrid.middleware import PayloadTooLarge
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from contract.common import GUANGZHOU_DISTRICTS, DistrictCode
from services.case.context import Grid
from services.case.domain.grid import GridIndex
from services.case.grid_store import Refusal
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


class GridFileTooLarge(PayloadTooLarge):
    title = "Grid file too large"


# A grid file is the body itself, with a limit of its own: a whole city's grid is tens of MB.
GRID_TYPES = ("application/geo+json", "application/json")
DEFAULT_GRID_IMPORT_MAX_BYTES = 64 * 1024 * 1024
WRITE_BATCH = 1024 * 1024


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
    code: Annotated[str, PathParam(pattern=r"^[0-9]{15}$")], runtime: RuntimeDep
) -> CellDetailOut:
    """One cell with its geometry."""
    async with runtime.db() as session:
        row = await session.get(GridCellRow, code)
    if row is None:
        raise GridCellNotFound(f"no grid cell {code}")
    return CellDetailOut.model_validate({**_cell_out(row), "feature": row.feature})


def _feature_error(message: str) -> dict[str, Any]:
    found = re.match(r"feature (\d+)", message)
    loc: list[str | int] = ["body", "features", int(found.group(1))] if found else ["body"]
    return {"loc": loc, "type": "grid.invalid_feature" if found else "grid.invalid_document", "msg": message}


def _refused(refusal: Refusal) -> Exception:
    """The problem a refused grid file is answered with (the codes a JSON body had before)."""
    if refusal.kind == "json":
        position = refusal.position if refusal.position is not None else 0
        return RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", position),
                    "msg": "JSON decode error",
                    "ctx": {"error": refusal.message},
                }
            ]
        )
    if refusal.kind == "not_object":
        return RequestValidationError(
            [{"type": "dict_type", "loc": ("body",), "msg": "Input should be a valid dictionary"}]
        )
    if refusal.kind == "empty":
        return InvalidGrid(
            "the grid file has no features",
            errors=[{"loc": ["body", "features"], "type": "grid.empty", "msg": "no features"}],
        )
    if refusal.kind == "unknown_district":
        return InvalidGrid(
            refusal.message,
            errors=[
                {
                    "loc": ["body", "features", index],
                    "type": "grid.unknown_district",
                    "msg": f"district {district}",
                }
                for index, district in refusal.features[:100]
            ],
        )
    if refusal.kind == "inconsistent":
        return InvalidGrid(
            "the grid file was refused",
            errors=[{"loc": ["body", "features"], "type": "grid.inconsistent", "msg": refusal.message}],
        )
    return InvalidGrid("the grid file was refused", errors=[_feature_error(refusal.message)])


def import_limit(settings: object) -> int:
    """The largest grid file accepted: ``grid_import_max_bytes`` of the service's settings."""
    limit = getattr(settings, "grid_import_max_bytes", DEFAULT_GRID_IMPORT_MAX_BYTES)
    return int(limit)


async def receive_grid_file(request: Request, max_bytes: int) -> Path:
    """The request body, streamed to a temporary file (the caller removes it), at most ``max_bytes``.

    Nothing is parsed here and no file call runs on the event loop: chunks are gathered into
    batches of ``WRITE_BATCH`` bytes and written in a thread.
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in GRID_TYPES:
        raise UnsupportedMediaType(
            f"send the grid as application/geo+json or application/json, not '{content_type or 'nothing'}'"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise GridFileTooLarge(f"the grid file is over {max_bytes} bytes", limit=max_bytes)
    handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix="citygrid-grid-", suffix=".json")
    path = Path(name)
    try:
        try:
            file = await asyncio.to_thread(os.fdopen, handle, "wb")
        except BaseException:
            os.close(handle)
            raise
        try:
            received = 0
            pending = bytearray()
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise GridFileTooLarge(f"the grid file is over {max_bytes} bytes", limit=max_bytes)
                pending += chunk
                if len(pending) >= WRITE_BATCH:
                    await asyncio.to_thread(file.write, pending)
                    pending.clear()
            if pending:
                await asyncio.to_thread(file.write, pending)
        finally:
            await asyncio.to_thread(file.close)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path


@router.post(
    "/admin/grid/import",
    operation_id="import_grid",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A GeoJSON FeatureCollection of grid cells (RFC 7946), sent as the body itself.",
            "content": {media: {"schema": {"type": "object"}} for media in GRID_TYPES},
        }
    },
    responses={
        413: {"description": "The file is over the grid import limit (`grid_import_max_bytes`)."},
        415: {"description": "The body is not `application/geo+json` or `application/json`."},
    },
)
async def import_grid(
    request: Request,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    grid: Grid,
    replace: Replace = Replace.DISTRICTS,
) -> ImportOut:
    """Import a city's unit grid from GeoJSON (admin).

    The body is the file itself (``application/geo+json`` or ``application/json``), up to the
    service's ``grid_import_max_bytes`` (64 MiB by default): a whole city's grid in one request.
    Each Feature is one cell: a Polygon or MultiPolygon in WGS84/CGCS2000 with ``properties.code``
    (15 digits) and optional ``name``, ``street_name``, ``community_name``. The cells of every district
    the file covers are replaced (``replace=all``: the whole grid); the file is refused whole, as 422
    ``case.invalid_grid`` with ``errors[]``, when a feature is invalid, a district is not one of the
    city's, or cells overlap. Every replica picks the new grid up within ``grid_refresh_seconds``.
    """
    require_scope(principal, ADMIN_SCOPE)
    path = await receive_grid_file(request, import_limit(runtime.settings))
    try:
        # Parsed and checked in the grid's worker process; written under the grid's lock.
        outcome = await grid.import_file(
            runtime.db,
            path,
            replace_all=replace is Replace.ALL,
            city_districts=frozenset(GUANGZHOU_DISTRICTS),
        )
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    if isinstance(outcome, Refusal):
        raise _refused(outcome)
    version = grid.version[1] if grid.version else None
    return ImportOut.model_validate(
        {
            **_summary(grid.index, version),
            "imported": outcome.imported,
            "replaced_districts": outcome.replaced_districts,
        }
    )
