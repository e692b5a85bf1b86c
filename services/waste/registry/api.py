"""The register's routes: thin, each a call into ``registry.service``. Imports are the whole city's;
lists and records are the caller's district's when it is bound to one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from citygrid.auth import CurrentPrincipal, Principal, district_scope, require_city_wide, require_district
from citygrid.masking import PII_SCOPE, mask_name, mask_phone
from citygrid.pagination import Cursor, Limit, Page, page_by_key
from citygrid.runtime import RuntimeDep
from citygrid.schemas import ImportResult
from contract.common import Code, KnownDistrict
from contract.waste import WasteStream
from services.waste.models import (
    Bin,
    CollectionPoint,
    Depot,
    DropOffPoint,
    Facility,
    FacilityKind,
    Route,
    Vehicle,
)
from services.waste.registry import service
from services.waste.registry.schemas import (
    BinOut,
    CollectionPointImport,
    CollectionPointOut,
    DepotImport,
    DepotOut,
    FacilityImport,
    FacilityOut,
    Plate,
    PointImport,
    PointOut,
    RouteImport,
    RouteOut,
    VehicleImport,
    VehicleOut,
)

router = APIRouter(prefix="/v1", tags=["waste register"])
REGISTER_SCOPE = "waste:write"
CodePath = Annotated[Code, Path()]
PlatePath = Annotated[Plate, Path()]
DistrictQuery = Annotated[KnownDistrict | None, Query()]


def point_out(point: DropOffPoint, bins: Sequence[Bin], principal: Principal) -> PointOut:
    shown = PointOut.model_validate(point)
    shown.bins = [BinOut.model_validate(b) for b in bins]
    if not principal.has_scope(PII_SCOPE):
        shown.contact_name = mask_name(point.contact_name)
        shown.contact_phone = mask_phone(point.contact_phone)
    return shown


def vehicle_out(vehicle: Vehicle, principal: Principal) -> VehicleOut:
    shown = VehicleOut.model_validate(vehicle)
    if not principal.has_scope(REGISTER_SCOPE):
        shown.terminal_phone = None
    if not principal.has_scope(PII_SCOPE):
        shown.driver_name = mask_name(vehicle.driver_name)
        shown.driver_phone = mask_phone(vehicle.driver_phone)
    return shown


def in_district(principal: Principal, column: Any, requested: str | None) -> list[Any]:
    scoped = district_scope(principal, requested)
    return [column == scoped] if scoped is not None else []


# -- drop-off points ------------------------------------------------------------------------------


@router.post("/points/import", operation_id="import_points")
async def import_points(body: PointImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update up to 1,000 drop-off points (by code), each with its bins (which replace
    the ones registered), opening hours and cameras."""
    require_city_wide(principal, "the register of drop-off points")
    async with runtime.uow() as uow:
        return await service.import_points(uow.session, body.points)


@router.get("/points", operation_id="list_points")
async def list_points(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    community: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PointOut]:
    where = in_district(principal, DropOffPoint.district_code, district)
    if community is not None:
        where.append(DropOffPoint.community == community)
    async with runtime.db() as session:
        found, next_cursor = await page_by_key(
            session, DropOffPoint, DropOffPoint.code, limit=limit, cursor=cursor, where=where
        )
        bins = await service.bins_of(session, [p.code for p in found])
    return Page[PointOut](
        items=[point_out(p, bins[p.code], principal) for p in found], next_cursor=next_cursor
    )


@router.get("/points/{code}", operation_id="get_point")
async def get_point(code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> PointOut:
    async with runtime.db() as session:
        point = await service.one(session, DropOffPoint, code)
        require_district(principal, point.district_code)
        bins = await service.bins_of(session, [code])
    return point_out(point, bins[code], principal)


# -- collection points ----------------------------------------------------------------------------


@router.post("/collection-points/import", operation_id="import_collection_points")
async def import_collection_points(
    body: CollectionPointImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update up to 1,000 collection points (by code) and the streams collected there."""
    require_city_wide(principal, "the register of collection points")
    async with runtime.uow() as uow:
        return await service.import_collection_points(uow.session, body.collection_points)


@router.get("/collection-points", operation_id="list_collection_points")
async def list_collection_points(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CollectionPointOut]:
    where = in_district(principal, CollectionPoint.district_code, district)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, CollectionPoint, CollectionPoint.code, limit=limit, cursor=cursor, where=where
        )
    return Page[CollectionPointOut](
        items=[CollectionPointOut.model_validate(c) for c in found], next_cursor=next_cursor
    )


@router.get("/collection-points/{code}", operation_id="get_collection_point")
async def get_collection_point(
    code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal
) -> CollectionPointOut:
    async with runtime.reads() as session:
        found = await service.one(session, CollectionPoint, code)
    require_district(principal, found.district_code)
    return CollectionPointOut.model_validate(found)


# -- vehicles -------------------------------------------------------------------------------------


@router.post("/vehicles/import", operation_id="import_vehicles")
async def import_vehicles(
    body: VehicleImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update up to 1,000 collection and cleaning vehicles (by plate) with their terminals."""
    require_city_wide(principal, "the register of sanitation vehicles")
    async with runtime.uow() as uow:
        return await service.import_vehicles(uow.session, body.vehicles)


@router.get("/vehicles", operation_id="list_vehicles")
async def list_vehicles(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    stream: WasteStream | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[VehicleOut]:
    where = in_district(principal, Vehicle.district_code, district)
    if stream is not None:
        where.append(Vehicle.stream == stream.value)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Vehicle, Vehicle.plate, limit=limit, cursor=cursor, where=where
        )
    return Page[VehicleOut](items=[vehicle_out(v, principal) for v in found], next_cursor=next_cursor)


@router.get("/vehicles/{plate}", operation_id="get_vehicle")
async def get_vehicle(plate: PlatePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> VehicleOut:
    async with runtime.reads() as session:
        found = await service.one(session, Vehicle, plate)
    require_district(principal, found.district_code)
    return vehicle_out(found, principal)


# -- facilities -----------------------------------------------------------------------------------


@router.post("/facilities/import", operation_id="import_facilities")
async def import_facilities(
    body: FacilityImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update end facilities and transfer stations (by code): the streams each accepts,
    its weighbridges."""
    require_city_wide(principal, "the register of end facilities")
    async with runtime.uow() as uow:
        return await service.import_facilities(uow.session, body.facilities)


@router.get("/facilities", operation_id="list_facilities")
async def list_facilities(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    kind: FacilityKind | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[FacilityOut]:
    where = in_district(principal, Facility.district_code, district)
    if kind is not None:
        where.append(Facility.kind == kind.value)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Facility, Facility.code, limit=limit, cursor=cursor, where=where
        )
    return Page[FacilityOut](items=[FacilityOut.model_validate(f) for f in found], next_cursor=next_cursor)


@router.get("/facilities/{code}", operation_id="get_facility")
async def get_facility(code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> FacilityOut:
    async with runtime.reads() as session:
        found = await service.one(session, Facility, code)
    require_district(principal, found.district_code)
    return FacilityOut.model_validate(found)


# -- depots ---------------------------------------------------------------------------------------


@router.post("/depots/import", operation_id="import_depots")
async def import_depots(body: DepotImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update the vehicles' depots (by code): a trip starts when a vehicle's positions
    leave one's radius, and ends when they come back inside."""
    require_city_wide(principal, "the register of depots")
    async with runtime.uow() as uow:
        return await service.import_depots(uow.session, body.depots)


@router.get("/depots", operation_id="list_depots")
async def list_depots(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DepotOut]:
    where = in_district(principal, Depot.district_code, district)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Depot, Depot.code, limit=limit, cursor=cursor, where=where
        )
    return Page[DepotOut](items=[DepotOut.model_validate(d) for d in found], next_cursor=next_cursor)


@router.get("/depots/{code}", operation_id="get_depot")
async def get_depot(code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> DepotOut:
    async with runtime.reads() as session:
        found = await service.one(session, Depot, code)
    require_district(principal, found.district_code)
    return DepotOut.model_validate(found)


# -- routes ---------------------------------------------------------------------------------------


@router.post("/routes/import", operation_id="import_routes")
async def import_routes(body: RouteImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update up to 1,000 routes (by code): the vehicle, its stops in order, its days of
    the week and window, the facility it unloads at."""
    require_city_wide(principal, "the routes and schedules")
    async with runtime.uow() as uow:
        return await service.import_routes(uow.session, body.routes)


@router.get("/routes", operation_id="list_routes")
async def list_routes(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    plate: Annotated[Plate | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RouteOut]:
    where = in_district(principal, Route.district_code, district)
    if plate is not None:
        where.append(Route.plate == plate)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Route, Route.code, limit=limit, cursor=cursor, where=where
        )
    return Page[RouteOut](items=[RouteOut.model_validate(r) for r in found], next_cursor=next_cursor)


@router.get("/routes/{code}", operation_id="get_route")
async def get_route(code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal) -> RouteOut:
    async with runtime.reads() as session:
        found = await service.one(session, Route, code)
    require_district(principal, found.district_code)
    return RouteOut.model_validate(found)
