"""Service functions of the manifests: one action applied to a row, with its step and its events in
the caller's transaction; the undelivered manifest of each truck; the overdue round."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.db import UnitOfWork
from citygrid.errors import Conflict, InvalidInput, NotFound
from citygrid.ids import new_id
from citygrid.runtime import Runtime
from contract import muck as contract
from services.muck.domain import manifests as domain
from services.muck.domain.manifests import AbnormalReason, ManifestAction, ManifestStatus, Outcome
from services.muck.domain.windows import CITY_TZ
from services.muck.manifests.schemas import ManifestIn
from services.muck.metrics import MuckMetrics
from services.muck.models import Driver, ManifestRow, ManifestStep, Route, Site, SiteKind, Truck

UNDELIVERED = (ManifestStatus.ISSUED, ManifestStatus.LOADED, ManifestStatus.IN_TRANSIT)


def manifest_of(row: ManifestRow) -> domain.Manifest:
    return domain.Manifest(
        status=ManifestStatus(row.status),
        declared_quantity_m3=row.declared_quantity_m3,
        received_quantity_m3=row.received_quantity_m3,
        window_end=row.window_end,
        origin_site=row.origin_site,
        disposal_site=row.disposal_site,
        abnormal_reason=AbnormalReason(row.abnormal_reason) if row.abnormal_reason else None,
    )


async def advance(
    uow: UnitOfWork,
    row: ManifestRow,
    action: ManifestAction,
    *,
    at: datetime,
    actor: str,
    detail: str | None = None,
    quantity_m3: float | None = None,
    reason: AbnormalReason | None = None,
    note: str | None = None,
) -> Outcome:
    """Apply ``action`` to the (locked) row: its fields, a step of its history, its events.

    InvalidManifestTransition (409) when its status forbids the action. Nothing is committed here.
    """
    outcome = domain.apply(manifest_of(row), action, at=at, quantity_m3=quantity_m3, reason=reason, note=note)
    row.status = outcome.status.value
    if "received_quantity_m3" in outcome.changes:
        row.received_quantity_m3 = outcome.manifest.received_quantity_m3
    if "abnormal_reason" in outcome.changes:
        reason_now = outcome.manifest.abnormal_reason
        row.abnormal_reason = reason_now.value if reason_now is not None else None
    if action is ManifestAction.LOAD:
        row.loaded_at = at
    elif action is ManifestAction.DELIVER:
        row.delivered_at = at
    elif action is ManifestAction.RESOLVE and note is not None:
        row.resolution_note = note.strip()
    if outcome.status in (ManifestStatus.CLOSED, ManifestStatus.CANCELLED):
        row.closed_at = at
    row.version += 1
    row.updated_at = at
    uow.session.add(
        ManifestStep(
            manifest_id=row.id, action=action.value, status=row.status, at=at, actor=actor, detail=detail
        )
    )
    for event in outcome.events:
        published = _contract_event(row, event)
        if published is not None:
            uow.publish(published, aggregate_id=str(row.id), version=row.version)
    await uow.session.flush()
    return outcome


def _contract_event(row: ManifestRow, event: domain.ManifestEvent) -> contract.ManifestEvent | None:
    common = {
        "manifest_id": row.id,
        "number": row.number,
        "plate": row.plate,
        "company_code": row.company_code,
        "origin_site": row.origin_site,
        "disposal_site": row.disposal_site,
        "district_code": row.district_code,
        "status": contract.ManifestStatus(row.status),
        "at": event.at,
    }
    if isinstance(event, domain.ManifestLoaded):
        return contract.ManifestLoaded(**common)
    if isinstance(event, domain.ManifestDelivered):
        return contract.ManifestDelivered(**common)
    if isinstance(event, domain.ManifestClosed):
        return contract.ManifestClosed(
            **common, received_quantity_m3=row.received_quantity_m3, resolution_note=row.resolution_note
        )
    if isinstance(event, domain.ManifestFlagged):
        return contract.ManifestAbnormal(**common, reason=event.reason.value)
    if isinstance(event, domain.ManifestCancelled):
        return contract.ManifestCancelled(**common)
    return None  # departed, confirmed: the status in the next event says it


def issued_event(row: ManifestRow) -> contract.ManifestIssued:
    return contract.ManifestIssued(
        manifest_id=row.id,
        number=row.number,
        plate=row.plate,
        company_code=row.company_code,
        origin_site=row.origin_site,
        disposal_site=row.disposal_site,
        district_code=row.district_code,
        status=contract.ManifestStatus(row.status),
        at=row.issued_at,
        waste_type=row.waste_type,
        declared_quantity_m3=row.declared_quantity_m3,
        window_start=row.window_start,
        window_end=row.window_end,
    )


async def undelivered_for(
    session: AsyncSession, plates: Collection[str], *, lock: bool = False
) -> dict[str, ManifestRow]:
    """Each plate's undelivered manifest (one at most: a partial unique index), locked if asked,
    in plate order so two lockers never wait on each other crosswise."""
    if not plates:
        return {}
    query = (
        select(ManifestRow)
        .where(ManifestRow.plate.in_(sorted(plates)), ManifestRow.status.in_([s.value for s in UNDELIVERED]))
        .order_by(ManifestRow.plate)
    )
    if lock:
        query = query.with_for_update()
    return {row.plate: row for row in (await session.scalars(query)).all()}


async def flag_overdue(runtime: Runtime, now: datetime | None = None, batch: int = 500) -> int:
    """Undelivered manifests whose window has ended become abnormal (overdue), each once: rows are
    claimed with ``SKIP LOCKED``, so replicas share the round and never repeat it."""
    async with runtime.uow() as uow:
        moment = now or await uow.now()
        rows = (
            await uow.session.scalars(
                select(ManifestRow)
                .where(
                    ManifestRow.status.in_([s.value for s in UNDELIVERED]),
                    ManifestRow.window_end <= moment,
                )
                .order_by(ManifestRow.window_end)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            await advance(
                uow,
                row,
                ManifestAction.FLAG,
                at=moment,
                actor="overdue",
                detail=f"not delivered by {row.window_end.isoformat()}",
                reason=AbnormalReason.OVERDUE,
            )
    return len(rows)


def new_number(manifest_id: uuid.UUID, issued_at: datetime) -> str:
    """A manifest's number: its day and the id's random tail, unique without a counter row."""
    return f"LD{issued_at:%Y%m%d}-{manifest_id.hex[-10:].upper()}"


# -- issuing, reading, closure --------------------------------------------------------------------


class ManifestRefused(InvalidInput):
    """A manifest that cannot be issued as asked; each subclass's ``code`` says why."""

    title = "Manifest refused"


def _refusal(code: str) -> type[ManifestRefused]:
    return type(code.split(".")[1].title().replace("_", ""), (ManifestRefused,), {"code": code})


REFUSALS: dict[str, type[ManifestRefused]] = {
    code: _refusal(code)
    for code in (
        "muck.unknown_truck",
        "muck.unknown_site",
        "muck.unknown_driver",
        "muck.unknown_route",
        "muck.not_a_construction_site",
        "muck.not_a_disposal_site",
        "muck.site_permit_not_valid",
        "muck.truck_approval_expired",
        "muck.over_capacity",
        "muck.driver_of_another_company",
    )
}


def refused(code: str, detail: str) -> ManifestRefused:
    return REFUSALS[code](detail)


class TruckHasOpenManifest(Conflict):
    code = "muck.truck_has_open_manifest"
    title = "The truck carries another load"


class StepTimeInvalid(InvalidInput):
    code = "muck.step_time_invalid"
    title = "The step's time is not possible"


# A gate scanner's clock may run this far ahead of the platform's.
STEP_CLOCK_TOLERANCE = timedelta(minutes=5)


def step_time(row: ManifestRow, at: datetime | None, now: datetime) -> datetime:
    """When a step reported by a device (a gate scan) happened: ``at`` if it says, else now.
    StepTimeInvalid when it is before the manifest was issued or ahead of the platform's clock."""
    if at is None:
        return now
    if at < row.issued_at:
        raise StepTimeInvalid(
            f"{at.isoformat()} is before the manifest was issued ({row.issued_at.isoformat()})"
        )
    if at > now + STEP_CLOCK_TOLERANCE:
        raise StepTimeInvalid(f"{at.isoformat()} is ahead of the platform's clock ({now.isoformat()})")
    return at


async def unfinished_by_status(session: AsyncSession) -> dict[ManifestStatus, int]:
    """How many manifests are in each unfinished status (a partial index: finished ones are not read)."""
    unfinished = [status for status in ManifestStatus if status not in domain.FINAL]
    counted = dict(
        (
            await session.execute(
                select(ManifestRow.status, func.count())
                .where(ManifestRow.status.not_in([status.value for status in domain.FINAL]))
                .group_by(ManifestRow.status)
            )
        ).all()
    )
    return {status: int(counted.get(status.value, 0)) for status in unfinished}


async def show_unfinished(runtime: Runtime, metrics: MuckMetrics) -> int:
    """Set the gauge of manifests by state from the database (each replica, each minute)."""
    async with runtime.reads() as session:
        counts = await unfinished_by_status(session)
    for status, count in counts.items():
        metrics.manifests.labels(status=status.value).set(count)
    return 0


class UnknownManifest(NotFound):
    code = "muck.unknown_manifest"
    title = "Unknown manifest"


async def issue(uow: UnitOfWork, body: ManifestIn, principal: Principal) -> ManifestRow:
    """Issue a manifest for one load, after checking the truck, the sites, the driver and the route."""
    session = uow.session
    now = await uow.now()
    truck = await session.get(Truck, body.plate)
    if truck is None:
        raise refused("muck.unknown_truck", f"no truck {body.plate} in the register")
    origin = await session.get(Site, body.origin_site)
    if origin is None:
        raise refused("muck.unknown_site", f"no site {body.origin_site}")
    require_district(principal, origin.district_code)
    disposal = await session.get(Site, body.disposal_site)
    if disposal is None:
        raise refused("muck.unknown_site", f"no site {body.disposal_site}")
    day = body.window_start.astimezone(CITY_TZ).date()
    if origin.kind != SiteKind.CONSTRUCTION:
        raise refused("muck.not_a_construction_site", f"{origin.code} is not a construction site")
    if disposal.kind != SiteKind.DISPOSAL:
        raise refused("muck.not_a_disposal_site", f"{disposal.code} is not a disposal site")
    if not origin.permit_valid_from <= day <= origin.permit_valid_until:
        raise refused("muck.site_permit_not_valid", f"the permit of {origin.code} is not valid on {day}")
    if truck.approval_valid_until < day:
        raise refused(
            "muck.truck_approval_expired", f"the approval of {truck.plate} ended {truck.approval_valid_until}"
        )
    if body.declared_quantity_m3 > truck.capacity_m3:
        raise refused(
            "muck.over_capacity",
            f"{body.declared_quantity_m3} m³ is over the {truck.capacity_m3} m³ {truck.plate} carries",
        )
    if body.driver_id is not None:
        driver = await session.get(Driver, body.driver_id)
        if driver is None:
            raise refused("muck.unknown_driver", f"no driver {body.driver_id}")
        if driver.company_code != truck.company_code:
            raise refused("muck.driver_of_another_company", "the driver works for another company")
    if body.route_code is not None and await session.get(Route, body.route_code) is None:
        raise refused("muck.unknown_route", f"no route {body.route_code}")
    if await undelivered_for(session, [truck.plate]):
        raise TruckHasOpenManifest(f"{truck.plate} has an undelivered manifest")
    manifest_id = new_id()
    row = ManifestRow(
        id=manifest_id,
        number=new_number(manifest_id, now.astimezone(CITY_TZ)),
        plate=truck.plate,
        company_code=truck.company_code,
        driver_id=body.driver_id,
        origin_site=origin.code,
        disposal_site=disposal.code,
        district_code=origin.district_code,
        route_code=body.route_code,
        waste_type=body.waste_type,
        declared_quantity_m3=body.declared_quantity_m3,
        window_start=body.window_start,
        window_end=body.window_end,
        status=ManifestStatus.ISSUED.value,
        issued_by=principal.subject,
        issued_at=now,
        version=1,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as error:
        # Two issues for one truck at once: the partial unique index lets one in.
        if "uq_manifests_undelivered_plate" in str(error.orig):
            raise TruckHasOpenManifest(f"{truck.plate} has an undelivered manifest") from None
        raise
    session.add(
        ManifestStep(manifest_id=row.id, action="issue", status=row.status, at=now, actor=principal.subject)
    )
    uow.publish(issued_event(row), aggregate_id=str(row.id), version=1)
    return row


async def locked(session: AsyncSession, manifest_id: uuid.UUID, principal: Principal) -> ManifestRow:
    row = await session.get(ManifestRow, manifest_id, with_for_update=True)
    if row is None:
        raise UnknownManifest(f"no manifest {manifest_id}")
    require_district(principal, row.district_code)
    return row


async def detail(
    session: AsyncSession, manifest_id: uuid.UUID, principal: Principal
) -> tuple[ManifestRow, list[ManifestStep]]:
    row = await session.get(ManifestRow, manifest_id)
    if row is None:
        raise UnknownManifest(f"no manifest {manifest_id}")
    require_district(principal, row.district_code)
    steps = await session.scalars(
        select(ManifestStep).where(ManifestStep.manifest_id == manifest_id).order_by(ManifestStep.id)
    )
    return row, list(steps.all())


CLOSURE_KEYS = {
    "site": ManifestRow.origin_site,
    "company": ManifestRow.company_code,
    "district": ManifestRow.district_code,
}


async def closure(
    session: AsyncSession, by: str, since: datetime, until: datetime, district: str | None
) -> list[tuple[str, int, int, float | None]]:
    """Per site, company or district: manifests due to close in the period, those closed, the rate."""
    key = CLOSURE_KEYS[by]
    closed = ManifestRow.status == ManifestStatus.CLOSED.value
    due = (ManifestRow.status != ManifestStatus.CANCELLED.value) & (
        closed | (ManifestRow.window_end <= func.now())
    )
    query = (
        select(key, func.count().filter(due), func.count().filter(closed))
        .where(ManifestRow.issued_at >= since, ManifestRow.issued_at < until)
        .group_by(key)
        .order_by(key)
    )
    if district is not None:
        query = query.where(ManifestRow.district_code == district)
    return [
        (str(name), int(due_count), int(closed_count), domain.closure_rate(int(closed_count), int(due_count)))
        for name, due_count, closed_count in (await session.execute(query)).all()
    ]
