"""The register's routes: thin, each a call into ``registry.service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from citygrid.auth import CurrentPrincipal, Principal, district_scope, require_city_wide, require_district
from citygrid.masking import mask_id_number, mask_name, mask_phone
from citygrid.pagination import Cursor, Limit, Page, page_by_key
from citygrid.runtime import RuntimeDep
from citygrid.schemas import ImportResult
from citygrid.versioning import etag
from contract.common import Code
from contract.muck import Plate
from services.muck.models import Company, Driver, Route, Site, SiteKind, TransportArea, Truck
from services.muck.registry import service
from services.muck.registry.schemas import (
    AreaImport,
    AreaOut,
    CompanyImport,
    CompanyOut,
    DriverIn,
    DriverOut,
    RouteImport,
    RouteOut,
    SiteImport,
    SiteOut,
    TruckImport,
    TruckOut,
)

router = APIRouter(prefix="/v1", tags=["muck register"])
PII_SCOPE = "pii:read"
REGISTER_SCOPE = "muck:write"
CodePath = Annotated[Code, Path()]


def truck_out(truck: Truck, principal: Principal) -> TruckOut:
    # A terminal's number is half of what it takes to register in its place: the register's only.
    shown = TruckOut.model_validate(truck)
    if not principal.has_scope(REGISTER_SCOPE):
        shown.terminal_phone = None
    return shown


def driver_out(driver: Driver, principal: Principal) -> DriverOut:
    # A driver's name, phone and ID number are personal data.
    reveal = principal.has_scope(PII_SCOPE)
    return DriverOut(
        id=str(driver.id),
        company_code=driver.company_code,
        name=driver.name if reveal else mask_name(driver.name),
        phone=driver.phone if reveal else mask_phone(driver.phone),
        id_number=driver.id_number if reveal else mask_id_number(driver.id_number),
        # A Chinese driving licence's number is its holder's ID number.
        licence_number=driver.licence_number if reveal else mask_id_number(driver.licence_number) or "",
    )


@router.post("/companies/import", operation_id="import_companies")
async def import_companies(
    body: CompanyImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update up to 1,000 transport companies (by code)."""
    require_city_wide(principal, "the register of transport companies")
    async with runtime.uow() as uow:
        return await service.import_companies(uow.session, body.companies)


@router.get("/companies", operation_id="list_companies")
async def list_companies(runtime: RuntimeDep, limit: Limit = 50, cursor: Cursor = None) -> Page[CompanyOut]:
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(session, Company, Company.code, limit=limit, cursor=cursor)
    return Page[CompanyOut](items=[CompanyOut.model_validate(c) for c in found], next_cursor=next_cursor)


@router.post("/trucks/import", operation_id="import_trucks")
async def import_trucks(body: TruckImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update up to 1,000 trucks (by plate) with their terminals' numbers."""
    require_city_wide(principal, "the register of muck trucks")
    async with runtime.uow() as uow:
        return await service.import_trucks(uow.session, body.trucks)


@router.get("/trucks", operation_id="list_trucks")
async def list_trucks(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    company: Annotated[Code | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TruckOut]:
    where = [Truck.company_code == company] if company else []
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Truck, Truck.plate, limit=limit, cursor=cursor, where=where
        )
    return Page[TruckOut](items=[truck_out(t, principal) for t in found], next_cursor=next_cursor)


@router.get("/trucks/{plate}", operation_id="get_truck")
async def get_truck(
    plate: Annotated[Plate, Path()], runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> TruckOut:
    async with runtime.reads() as session:
        truck = await service.one(session, Truck, plate)
    response.headers["ETag"] = etag(truck.version)
    return truck_out(truck, principal)


@router.post("/trucks/{plate}/terminal/release", operation_id="release_terminal")
async def release_terminal(
    plate: Annotated[Plate, Path()], runtime: RuntimeDep, principal: CurrentPrincipal
) -> TruckOut:
    """Let the truck's terminal register again (a unit replaced or reset); until then a second
    registration of its number is refused, so nobody who knows the number can take the truck over."""
    require_city_wide(principal, "the register of muck trucks")
    async with runtime.uow() as uow:
        truck = await service.release_terminal(uow.session, plate)
        return truck_out(truck, principal)


@router.post("/drivers", operation_id="add_driver", status_code=201)
async def add_driver(body: DriverIn, runtime: RuntimeDep, principal: CurrentPrincipal) -> DriverOut:
    """Register a driver, or update the one with this ID number."""
    require_city_wide(principal, "the register of drivers")
    async with runtime.uow() as uow:
        driver = await service.add_driver(uow.session, body)
        return driver_out(driver, principal)


@router.get("/drivers", operation_id="list_drivers")
async def list_drivers(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    company: Annotated[Code | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DriverOut]:
    async with runtime.reads() as session:
        found, next_cursor = await service.drivers_page(session, company, limit=limit, cursor=cursor)
    return Page[DriverOut](items=[driver_out(d, principal) for d in found], next_cursor=next_cursor)


@router.post("/sites/import", operation_id="import_sites")
async def import_sites(body: SiteImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update up to 1,000 construction and disposal sites (by code) with their boundaries."""
    require_city_wide(principal, "the register of sites")
    async with runtime.uow() as uow:
        return await service.import_sites(uow.session, body.sites)


@router.get("/sites", operation_id="list_sites")
async def list_sites(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    kind: SiteKind | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SiteOut]:
    where = []
    if (scoped := district_scope(principal, district)) is not None:
        where.append(Site.district_code == scoped)
    if kind is not None:
        where.append(Site.kind == kind.value)
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, Site, Site.code, limit=limit, cursor=cursor, where=where
        )
    return Page[SiteOut](items=[SiteOut.model_validate(s) for s in found], next_cursor=next_cursor)


@router.get("/sites/{code}", operation_id="get_site")
async def get_site(
    code: CodePath, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> SiteOut:
    async with runtime.reads() as session:
        site = await service.one(session, Site, code)
    require_district(principal, site.district_code)
    response.headers["ETag"] = etag(site.version)
    return SiteOut.model_validate(site)


@router.post("/routes/import", operation_id="import_routes")
async def import_routes(body: RouteImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update up to 1,000 approved routes (by code): centre line and corridor width."""
    require_city_wide(principal, "the approved routes")
    async with runtime.uow() as uow:
        return await service.import_routes(uow.session, body.routes)


@router.get("/routes/{code}", operation_id="get_route")
async def get_route(code: CodePath, runtime: RuntimeDep) -> RouteOut:
    async with runtime.reads() as session:
        return RouteOut.model_validate(await service.one(session, Route, code))


@router.post("/areas/import", operation_id="import_areas")
async def import_areas(body: AreaImport, runtime: RuntimeDep, principal: CurrentPrincipal) -> ImportResult:
    """Register or update the areas whose transport is limited to time windows."""
    require_city_wide(principal, "the transport areas")
    async with runtime.uow() as uow:
        return await service.import_areas(uow.session, body.areas)


@router.get("/areas", operation_id="list_areas")
async def list_areas(runtime: RuntimeDep, limit: Limit = 50, cursor: Cursor = None) -> Page[AreaOut]:
    async with runtime.reads() as session:
        found, next_cursor = await page_by_key(
            session, TransportArea, TransportArea.code, limit=limit, cursor=cursor
        )
    return Page[AreaOut](items=[AreaOut.model_validate(a) for a in found], next_cursor=next_cursor)
