"""The gas service's routes: thin, each a call into the service functions beside it."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from citygrid.auth import CurrentPrincipal, Principal, district_scope, require_city_wide
from citygrid.db import transaction_time
from citygrid.errors import Forbidden
from citygrid.idempotency import Idempotency
from citygrid.masking import mask_address, mask_name, mask_phone, mask_position, mask_text
from citygrid.middleware import public_path
from citygrid.pagination import Cursor, Limit, Page
from citygrid.runtime import RuntimeDep
from citygrid.schemas import ImportResult
from citygrid.versioning import etag
from contract.common import GeoPoint
from contract.gas import CylinderCode
from services.gas import anomalies, bulk, checks, incidents, registry, scans
from services.gas.domain import rules
from services.gas.domain.incidents import IncidentStep, next_step
from services.gas.metrics import GasMetrics
from services.gas.models import (
    AnomalyKind,
    Cylinder,
    Enterprise,
    EnterpriseKind,
    GasUser,
    Incident,
    IncidentStepRecord,
    Scan,
    StationLock,
)
from services.gas.schemas import (
    AnomalyOut,
    BatchResult,
    CylinderImport,
    CylinderOut,
    DueOut,
    EnterpriseCode,
    EnterpriseImport,
    EnterpriseOut,
    EntrustmentIn,
    FillCheckIn,
    FillCheckOut,
    GasUserIn,
    GasUserOut,
    IncidentIn,
    IncidentOut,
    IncidentStepIn,
    IncidentStepOut,
    LockIn,
    RecallOut,
    ScanBatch,
    ScanOut,
    StationLockOut,
)

router = APIRouter(prefix="/v1", tags=["gas"])
# Routes whose body is a file, not JSON (the kit's JSON-only rule is not installed on them).
file_router = APIRouter(prefix="/v1", tags=["gas"])
PII_SCOPE = "pii:read"
# Who may lock a station's scales: the regulator (the city management bureau's gas office).
REGULATOR_ROLES = frozenset({"regulator", "supervisor"})
FillBatch = Annotated[str, Path(pattern=r"^[0-9A-Za-z][0-9A-Za-z._:\-]{0,63}$")]


class NotARegulator(Forbidden):
    code = "gas.not_a_regulator"


def gas_metrics(request: Request) -> GasMetrics:
    metrics: GasMetrics = request.app.state.gas_metrics
    return metrics


def enterprise_out(enterprise: Enterprise, entrusted_by: list[str] | None = None) -> EnterpriseOut:
    return EnterpriseOut(
        code=enterprise.code,
        kind=EnterpriseKind(enterprise.kind),
        name=enterprise.name,
        company_code=enterprise.company_code,
        licence_number=enterprise.licence_number,
        licence_valid_until=enterprise.licence_valid_until,
        district_code=enterprise.district_code,
        location=GeoPoint.of(enterprise.lon, enterprise.lat)
        if enterprise.lon is not None and enterprise.lat is not None
        else None,
        locked=enterprise.locked_at is not None,
        locked_at=enterprise.locked_at,
        locked_by=enterprise.locked_by,
        lock_reason=enterprise.lock_reason,
        entrusted_by=entrusted_by or [],
        version=enterprise.version,
        updated_at=enterprise.updated_at,
    )


def cylinder_out(cylinder: Cylinder, principal: Principal) -> CylinderOut:
    # Where a cylinder is and who holds it locates a household: rounded and left out without pii:read.
    reveal = principal.has_scope(PII_SCOPE)
    located = cylinder.last_lon is not None and cylinder.last_lat is not None
    return CylinderOut(
        code=cylinder.code,
        owner_code=cylinder.owner_code,
        manufacturer=cylinder.manufacturer,
        serial=cylinder.serial,
        manufactured_on=cylinder.manufactured_on,
        last_inspected_on=cylinder.last_inspected_on,
        last_passed_inspection_on=cylinder.last_passed_inspection_on,
        next_inspection_due=cylinder.next_inspection_due,
        end_of_life=cylinder.end_of_life,
        tare_kg=cylinder.tare_kg,
        capacity_kg=cylinder.capacity_kg,
        status=cylinder.status,  # type: ignore[arg-type]
        holder_id=cylinder.holder_id if reveal else None,
        last_scan_at=cylinder.last_scan_at,
        last_scan_kind=cylinder.last_scan_kind,  # type: ignore[arg-type]
        last_place=cylinder.last_place,
        last_location=_point(cylinder.last_lon, cylinder.last_lat, reveal) if located else None,
        last_fill_batch=cylinder.last_fill_batch,
        version=cylinder.version,
    )


def user_out(user: GasUser, principal: Principal) -> GasUserOut:
    # A household's name, phone and address are personal data: masked without pii:read.
    reveal = principal.has_scope(PII_SCOPE)
    located = user.lon is not None and user.lat is not None
    return GasUserOut(
        id=user.id,
        kind=user.kind,  # type: ignore[arg-type]
        name=user.name if reveal else mask_name(user.name),
        phone=user.phone if reveal else mask_phone(user.phone),
        address=user.address if reveal else mask_address(user.address),
        district_code=user.district_code,
        location=GeoPoint.of(user.lon, user.lat) if located and reveal else None,  # type: ignore[arg-type]
        supplier_code=user.supplier_code,
        stove_sold_on=user.stove_sold_on,
        stove_life_ends=rules.stove_life_ends(user.stove_sold_on) if user.stove_sold_on else None,
        version=user.version,
    )


def _point(lon: float | None, lat: float | None, reveal: bool) -> GeoPoint:
    assert lon is not None
    assert lat is not None
    return GeoPoint.of(lon, lat) if reveal else GeoPoint.of(*mask_position(lon, lat))


def scan_out(scan: Scan, principal: Principal) -> ScanOut:
    reveal = principal.has_scope(PII_SCOPE)
    return ScanOut(
        id=scan.id,
        cylinder_code=scan.cylinder_code,
        kind=scan.kind,  # type: ignore[arg-type]
        at=scan.at,
        status_after=scan.status_after,  # type: ignore[arg-type]
        enterprise_code=scan.enterprise_code,
        operator=scan.operator,
        scale_id=scan.scale_id,
        net_mass_kg=scan.net_mass_kg,
        fill_batch=scan.fill_batch,
        user_id=scan.user_id if reveal else None,
        location=_point(scan.lon, scan.lat, reveal)
        if scan.lon is not None and scan.lat is not None
        else None,
        passed=scan.passed,
        source=scan.source,
    )


def lock_out(lock: StationLock) -> StationLockOut:
    return StationLockOut(
        station_code=lock.station_code, locked=lock.locked, reason=lock.reason, actor=lock.actor, at=lock.at
    )


# -- enterprises -------------------------------------------------------------------------------------


@router.post("/enterprises/import", operation_id="import_enterprises")
async def import_enterprises(
    body: EnterpriseImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update up to 1,000 enterprises (upsert by code); a result per refused item."""
    require_city_wide(principal, "the register of gas enterprises")
    async with runtime.uow() as uow:
        return await registry.import_enterprises(uow.session, body.enterprises)


@router.get("/enterprises", operation_id="list_enterprises")
async def list_enterprises(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    kind: EnterpriseKind | None = None,
    company: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[EnterpriseOut]:
    async with runtime.reads() as session:
        found, next_cursor = await registry.list_enterprises(
            session,
            district=district_scope(principal, district),
            kind=kind,
            company=company,
            limit=limit,
            cursor=cursor,
        )
    return Page[EnterpriseOut](items=[enterprise_out(e) for e in found], next_cursor=next_cursor)


@router.get("/enterprises/{code}", operation_id="get_enterprise")
async def get_enterprise(
    code: Annotated[EnterpriseCode, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    response: Response,
) -> EnterpriseOut:
    async with runtime.db() as session:
        view = await registry.get_enterprise(session, code, principal)
    response.headers["ETag"] = etag(view.enterprise.version)
    return enterprise_out(view.enterprise, view.entrusted_by)


@router.put("/stations/{code}/entrustments", operation_id="entrust_station", status_code=204)
async def entrust_station(
    code: Annotated[EnterpriseCode, Path()],
    body: EntrustmentIn,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> None:
    """A gas company entrusts this station to fill its cylinders (until ``valid_until``)."""
    require_city_wide(principal, "the register of gas enterprises")
    async with runtime.uow() as uow:
        await registry.entrust(uow.session, code, body.company_code, body.valid_until)


def require_regulator(principal: Principal) -> None:
    if not principal.has_any_role(REGULATOR_ROLES):
        raise NotARegulator("locking a station's scales is the regulator's (role regulator or supervisor)")


@router.post("/stations/{code}/lock", operation_id="lock_station")
async def lock_station(
    code: Annotated[EnterpriseCode, Path()], body: LockIn, runtime: RuntimeDep, principal: CurrentPrincipal
) -> EnterpriseOut:
    """Lock the station's scales remotely: its fill checks refuse (``station_locked``) until unlocked."""
    require_regulator(principal)
    async with runtime.uow() as uow:
        station = await registry.set_lock(uow, code, locked=True, reason=body.reason, actor=principal)
        return enterprise_out(station)


@router.post("/stations/{code}/unlock", operation_id="unlock_station")
async def unlock_station(
    code: Annotated[EnterpriseCode, Path()], body: LockIn, runtime: RuntimeDep, principal: CurrentPrincipal
) -> EnterpriseOut:
    require_regulator(principal)
    async with runtime.uow() as uow:
        station = await registry.set_lock(uow, code, locked=False, reason=body.reason, actor=principal)
        return enterprise_out(station)


@router.get("/stations/{code}/locks", operation_id="list_station_locks")
async def list_station_locks(
    code: Annotated[EnterpriseCode, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 50,
) -> list[StationLockOut]:
    """The audit trail of the station's locks and unlocks, newest first."""
    async with runtime.reads() as session:
        await registry.get_enterprise(session, code, principal)
        return [lock_out(lock) for lock in await registry.lock_history(session, code, limit)]


@router.get("/enterprises/{code}/inspections-due", operation_id="list_inspections_due")
async def list_inspections_due(
    code: Annotated[EnterpriseCode, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    days: Annotated[int, Query(ge=0, le=366)] = 30,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CylinderOut]:
    """The company's live cylinders due for inspection within ``days``, soonest first."""
    async with runtime.db() as session:
        await registry.get_enterprise(session, code, principal)
        today = registry.rules_today(await transaction_time(session))
        found, next_cursor = await registry.inspections_due(
            session, code, until=today + timedelta(days=days), limit=limit, cursor=cursor
        )
    return Page[CylinderOut](items=[cylinder_out(c, principal) for c in found], next_cursor=next_cursor)


# -- users -------------------------------------------------------------------------------------------


@router.post("/users", operation_id="create_gas_user", status_code=201, response_model=GasUserOut)
async def create_user(
    body: GasUserIn, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> GasUserOut | JSONResponse:
    """Register a gas user. Send an ``Idempotency-Key`` to make retries safe."""
    idempotency = await Idempotency.from_request(request, principal.subject)
    async with runtime.uow() as uow:
        replay = await idempotency.replay(uow.session)
        if replay is not None:
            return replay
        user = await registry.create_user(uow.session, body, principal)
        out = user_out(user, principal)
        response.headers["Location"] = public_path(request, f"/v1/users/{user.id}")
        await idempotency.remember(uow.session, 201, out.model_dump(mode="json"), headers=response.headers)
    return out


@router.get("/users/{user_id}", operation_id="get_gas_user")
async def get_user(user_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal) -> GasUserOut:
    async with runtime.reads() as session:
        return user_out(await registry.get_user(session, user_id, principal), principal)


@router.get("/users/{user_id}/cylinders", operation_id="list_user_cylinders")
async def list_user_cylinders(
    user_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal, limit: Limit = 100
) -> list[CylinderOut]:
    """The cylinders this user holds now (delivered and not recovered)."""
    async with runtime.db() as session:
        user = await registry.get_user(session, user_id, principal)
        return [cylinder_out(c, principal) for c in await registry.cylinders_held(session, user, limit)]


# -- cylinders ---------------------------------------------------------------------------------------


@router.post("/cylinders/import", operation_id="import_cylinders")
async def import_cylinders(
    body: CylinderImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register up to 1,000 cylinders; a code is registered once and never reused."""
    require_city_wide(principal, "the register of cylinders")
    async with runtime.uow() as uow:
        return await registry.import_cylinders(uow.session, body.cylinders)


@file_router.post(
    "/cylinders/import-file",
    operation_id="import_cylinder_file",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A CSV file (UTF-8, a header row naming the columns): "
            + ", ".join(bulk.CSV_COLUMNS),
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
    responses={
        413: {"description": "The file is over `cylinder_import_max_bytes`."},
        415: {"description": "The body is not `text/csv`."},
        422: {"description": "Rows were refused (`errors[]` with their lines): nothing was registered."},
    },
)
async def import_cylinder_file(
    request: Request, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register millions of cylinders from a CSV upload, streamed into COPY in one transaction: all
    of them, or none and every refused row's line (``gas.import_refused``)."""
    require_city_wide(principal, "the register of cylinders")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "text/csv":
        raise bulk.NotCsv(f"send the file as text/csv, not '{content_type or 'nothing'}'")
    limit = int(getattr(runtime.settings, "cylinder_import_max_bytes", bulk.DEFAULT_MAX_BYTES))
    created = await bulk.import_csv(runtime.db, request.stream(), max_bytes=limit)
    return ImportResult(received=created, created=created, updated=0, refused=[])


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


@router.get(
    "/cylinders/export",
    operation_id="export_cylinders",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
async def export_cylinders(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    format: ExportFormat = ExportFormat.CSV,
    owner: Annotated[str | None, Query(max_length=32)] = None,
) -> StreamingResponse:
    """Every cylinder (of one owner), streamed by code as CSV or as a JSON array."""
    require_city_wide(principal, "the register of cylinders")
    if format == ExportFormat.CSV:
        return StreamingResponse(bulk.export_csv(runtime.reads, owner), media_type="text/csv")
    return StreamingResponse(bulk.export_json(runtime.reads, owner), media_type="application/json")


@router.get("/cylinders/{code}", operation_id="get_cylinder")
async def get_cylinder(
    code: Annotated[CylinderCode, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    response: Response,
) -> CylinderOut:
    async with runtime.reads() as session:
        cylinder = await registry.get_cylinder(session, code, principal)
    response.headers["ETag"] = etag(cylinder.version)
    return cylinder_out(cylinder, principal)


@router.get("/cylinders/{code}/scans", operation_id="list_cylinder_scans")
async def list_cylinder_scans(
    code: Annotated[CylinderCode, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ScanOut]:
    """The cylinder's whole history, oldest first (its trace)."""
    async with runtime.db() as session:
        await registry.get_cylinder(session, code, principal)
        found, next_cursor = await scans.history(session, code, limit=limit, cursor=cursor)
    return Page[ScanOut](items=[scan_out(s, principal) for s in found], next_cursor=next_cursor)


@router.get("/fill-batches/{fill_batch}/cylinders", operation_id="recall_fill_batch")
async def recall_fill_batch(
    fill_batch: FillBatch,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 500,
    cursor: Cursor = None,
) -> RecallOut:
    """Recall: every cylinder filled in this batch and where each is now, by code, page by page."""
    require_city_wide(principal, "a recall")
    async with runtime.reads() as session:
        found, next_cursor = await scans.recall(session, fill_batch, limit, cursor)
    return RecallOut(
        fill_batch=fill_batch, cylinders=[cylinder_out(c, principal) for c in found], next_cursor=next_cursor
    )


@router.get("/anomalies", operation_id="list_anomalies")
async def list_anomalies(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    kind: AnomalyKind | None = None,
    cylinder: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AnomalyOut]:
    """Traces that should not be: a cylinder at two places faster than a vehicle could go, a
    delivery to an unregistered user, a fill outside the owner's network. Newest first."""
    require_city_wide(principal, "the cylinders' anomalies")
    async with runtime.reads() as session:
        found, next_cursor = await anomalies.list_anomalies(
            session, kind=kind, cylinder=cylinder, limit=limit, cursor=cursor
        )
    items = [
        AnomalyOut(
            id=a.id,
            kind=a.kind,
            cylinder_code=a.cylinder_code,
            enterprise_code=a.enterprise_code,
            detected_at=a.detected_at,
            details=a.details,
        )
        for a in found
    ]
    return Page[AnomalyOut](items=items, next_cursor=next_cursor)


@router.get("/inspections-due", operation_id="summarise_inspections_due")
async def summarise_inspections_due(
    runtime: RuntimeDep, principal: CurrentPrincipal, days: Annotated[int, Query(ge=0, le=366)] = 30
) -> list[DueOut]:
    """Per owning company: live cylinders due for inspection within ``days`` (the list of each is
    ``/v1/enterprises/{code}/inspections-due``)."""
    require_city_wide(principal, "the inspections due across companies")
    async with runtime.db() as session:
        today = registry.rules_today(await transaction_time(session))
        rows = await anomalies.inspections_due_by_owner(session, today + timedelta(days=days))
    return [
        DueOut(owner_code=owner, cylinders=count, earliest_due=earliest) for owner, count, earliest in rows
    ]


# -- scans and the fill check ------------------------------------------------------------------------


@router.post("/scans", operation_id="ingest_scans")
async def ingest_scans(
    body: ScanBatch, runtime: RuntimeDep, principal: CurrentPrincipal, request: Request
) -> BatchResult:
    """Up to 1,000 scans from stations' scales and couriers' handsets, in one transaction: each is
    applied in time order or refused with its reason; the others still count."""
    async with runtime.uow() as uow:
        results = await scans.ingest(uow, body.scans, principal)
    metrics = gas_metrics(request)
    for result in results:
        outcome = "accepted" if result.accepted else result.code or "refused"
        metrics.scans.labels(kind=body.scans[result.index].kind.value, outcome=outcome).inc()
    accepted = sum(result.accepted for result in results)
    return BatchResult(
        received=len(results), accepted=accepted, refused=len(results) - accepted, results=results
    )


@router.post("/fill-checks", operation_id="check_fill")
async def check_fill(
    body: FillCheckIn, runtime: RuntimeDep, principal: CurrentPrincipal, request: Request
) -> FillCheckOut:
    """Before it fills, a station's scale asks: allowed, or refused with every reason. A refusal
    opens an enforcement case (one per cylinder, station and day)."""
    started = time.perf_counter()
    answer = await checks.check_fill(runtime, body, principal)
    metrics = gas_metrics(request)
    metrics.fill_check_seconds.observe(time.perf_counter() - started)
    metrics.fill_checks.labels(outcome="allowed" if answer.allowed else "refused").inc()
    for reason in answer.reasons:
        metrics.refusal_reasons.labels(reason=reason.value).inc()
    return FillCheckOut(
        id=answer.id,  # type: ignore[arg-type]
        allowed=answer.allowed,
        reasons=answer.reasons,
        cylinder_code=body.cylinder_code,
        station_code=body.station_code,
        cylinder_status=answer.cylinder_status,
        checked_at=answer.checked_at,
        case_reference=answer.case_reference,
    )


# -- leak incidents ----------------------------------------------------------------------------------


def incident_out(incident: Incident, steps: list[IncidentStepRecord], principal: Principal) -> IncidentOut:
    reveal = principal.has_scope(PII_SCOPE)
    home = incident.premises_type == "household"
    return IncidentOut(
        id=incident.id,
        step=IncidentStep(incident.step),
        next_step=next_step(IncidentStep(incident.step)),
        premises_type=incident.premises_type,  # type: ignore[arg-type]
        source=incident.source,  # type: ignore[arg-type]
        # A household's leak is at a home: its address and point are personal data there.
        place=incident.place if reveal or not home else mask_address(incident.place) or "",
        district_code=incident.district_code,
        location=_point(incident.lon, incident.lat, reveal or not home),
        description=incident.description if reveal else mask_text(incident.description) or "",
        reporter_name=incident.reporter_name if reveal else mask_name(incident.reporter_name),
        reporter_phone=incident.reporter_phone if reveal else mask_phone(incident.reporter_phone),
        cylinder_code=incident.cylinder_code,
        reported_at=incident.reported_at,
        closed_at=incident.closed_at,
        steps=[
            IncidentStepOut(step=IncidentStep(s.step), at=s.at, actor=s.actor, note=s.note) for s in steps
        ],
        version=incident.version,
    )


@router.post("/incidents", operation_id="report_incident", status_code=201, response_model=IncidentOut)
async def report_incident(
    body: IncidentIn, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> IncidentOut | JSONResponse:
    """Report a gas leak: an urgent case opens, and the response follows the drill step by step.
    Send an ``Idempotency-Key``: a report retried after a timeout must not open a second incident."""
    idempotency = await Idempotency.from_request(request, principal.subject)
    async with runtime.uow() as uow:
        replay = await idempotency.replay(uow.session)
        if replay is not None:
            return replay
        incident = await incidents.report(uow, body, principal)
        steps = await incidents.steps_of(uow.session, incident.id)
        out = incident_out(incident, steps, principal)
        response.headers["Location"] = public_path(request, f"/v1/incidents/{incident.id}")
        response.headers["ETag"] = etag(incident.version)
        await idempotency.remember(uow.session, 201, out.model_dump(mode="json"), headers=response.headers)
    return out


@router.get("/incidents", operation_id="list_open_incidents")
async def list_open_incidents(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    limit: Limit = 50,
) -> list[IncidentOut]:
    """Incidents not closed yet, newest first."""
    async with runtime.db() as session:
        found = await incidents.list_open(session, district_scope(principal, district), limit)
        steps = await incidents.steps_for(session, [i.id for i in found])
    return [incident_out(i, steps[i.id], principal) for i in found]


@router.get("/incidents/{incident_id}", operation_id="get_incident")
async def get_incident(
    incident_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> IncidentOut:
    async with runtime.db() as session:
        incident = await incidents.get(session, incident_id, principal)
        steps = await incidents.steps_of(session, incident.id)
    response.headers["ETag"] = etag(incident.version)
    return incident_out(incident, steps, principal)


@router.post("/incidents/{incident_id}/steps", operation_id="take_incident_step")
async def take_incident_step(
    incident_id: uuid.UUID,
    body: IncidentStepIn,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    response: Response,
) -> IncidentOut:
    """Record the next step of the drill (409 ``gas.incident_step_out_of_order`` for any other)."""
    async with runtime.uow() as uow:
        incident = await incidents.take_step(uow, incident_id, body.step, body.note, principal)
        steps = await incidents.steps_of(uow.session, incident.id)
    response.headers["ETag"] = etag(incident.version)
    return incident_out(incident, steps, principal)
