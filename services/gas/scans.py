"""Scans, the cylinder's lifecycle: a batch of up to 1,000 in one transaction, a result per item.

The batch's cylinders are locked in one statement (in code order, so two batches never deadlock),
each scan is applied in time order to the state it finds (``domain.lifecycle``), and the accepted
scans go in with one statement built once. A refused scan changes nothing; the others still count.
A fill is held to the fill check's rules too: a scale that skipped the check is refused here.

A scan older than the cylinder's last one is refused (``gas.scan_out_of_order``): the handset sends
its scans in order, and a late one would rewind the state that later scans built on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.ids import new_id
from citygrid.pagination import cursor_time, cursor_value, decode_cursor, encode_cursor
from services.gas import partitions
from services.gas.checks import facts_of, station_facts
from services.gas.domain import rules
from services.gas.domain.lifecycle import CylinderStatus, ScanKind, next_status
from services.gas.models import (
    Anomaly,
    AnomalyKind,
    Cylinder,
    Enterprise,
    EnterpriseKind,
    Entrustment,
    GasUser,
    Scan,
)
from services.gas.registry import rules_today
from services.gas.schemas import ScanIn, ScanResult

SCAN_INSERT = insert(cast(Table, Scan.__table__))
ANOMALY_INSERT = insert(cast(Table, Anomaly.__table__))
CYLINDER_UPDATE_COLUMNS = (
    "status",
    "holder_id",
    "last_scan_at",
    "last_scan_kind",
    "last_lon",
    "last_lat",
    "last_place",
    "last_fill_batch",
    "last_inspected_on",
    "last_passed_inspection_on",
    "next_inspection_due",
    "end_of_life",
)


@dataclass
class Refused(Exception):
    code: str
    detail: str


async def _enterprises(
    session: AsyncSession, codes: set[str], today: date
) -> dict[str, tuple[Enterprise, list[str]]]:
    """The enterprises scanned at, each with the companies entrusting it today (as the check reads them)."""
    if not codes:
        return {}
    found: dict[str, tuple[Enterprise, list[str]]] = {
        e.code: (e, [])
        for e in (await session.scalars(select(Enterprise).where(Enterprise.code.in_(codes)))).all()
    }
    entrusted = await session.execute(
        select(Entrustment.station_code, Entrustment.company_code).where(
            Entrustment.station_code.in_(codes),
            or_(Entrustment.valid_until.is_(None), Entrustment.valid_until >= today),
        )
    )
    for station_code, company_code in entrusted:
        found[station_code][1].append(company_code)
    return found


# Scans that end a cylinder's life or take it out of circulation: the owning company's, or the regulator's.
TERMINAL_KINDS = frozenset({ScanKind.SCRAP, ScanKind.VOID, ScanKind.REPORT_LOST})
OFFICIAL_ROLES = frozenset({"regulator", "supervisor"})


def _company_of(enterprise: Enterprise) -> str:
    return enterprise.company_code or enterprise.code


def _authorise(
    principal: Principal, scan: ScanIn, cylinder: Cylinder, places: dict[str, tuple[Enterprise, list[str]]]
) -> None:
    """A handset or scale credential names its enterprise (the consumer's unit): it scans there only,
    and only its company's cylinders or those of a company that entrusts it. Scrapping, voiding and
    reporting lost are the owning company's, or the regulator's. A credential naming no enterprise
    (a city integration) may not end a cylinder's life."""
    official = principal.has_any_role(OFFICIAL_ROLES)
    if principal.unit is None:
        if scan.kind in TERMINAL_KINDS and not official:
            raise Refused(
                "gas.not_the_owner", f"a {scan.kind.value} is the owning company's or the regulator's"
            )
        return
    if scan.enterprise_code is not None and scan.enterprise_code != principal.unit:
        raise Refused("gas.not_this_enterprise", f"this credential scans at {principal.unit} only")
    own = places.get(principal.unit)
    if own is None:
        raise Refused(
            "gas.unknown_enterprise", f"the credential's enterprise {principal.unit} is not registered"
        )
    company = _company_of(own[0])
    entrusting = set(own[1])
    if cylinder.owner_code != company and cylinder.owner_code not in entrusting:
        raise Refused(
            "gas.not_the_owner",
            f"cylinder {cylinder.code} belongs to {cylinder.owner_code}, not to {company}",
        )
    if scan.kind in TERMINAL_KINDS and cylinder.owner_code != company and not official:
        raise Refused("gas.not_the_owner", f"a {scan.kind.value} is the owning company's or the regulator's")


def _where(scan: ScanIn, place: tuple[Enterprise, list[str]] | None) -> tuple[float, float] | None:
    if scan.location is not None:
        return (scan.location.lon, scan.location.lat)
    if place is not None and place[0].lon is not None and place[0].lat is not None:
        return (place[0].lon, place[0].lat)
    return None


def travel_anomaly(
    cylinder: Cylinder, scan: ScanIn, here: tuple[float, float] | None
) -> dict[str, Any] | None:
    """An anomaly row when this scan puts the cylinder farther from its last place than a vehicle
    could have taken it since (``rules.implausible_travel``)."""
    if (
        here is None
        or cylinder.last_scan_at is None
        or cylinder.last_lon is None
        or cylinder.last_lat is None
    ):
        return None
    before = (cylinder.last_lon, cylinder.last_lat)
    if not rules.implausible_travel(before, cylinder.last_scan_at, here, scan.at):
        return None
    return {
        "id": new_id(),
        "kind": AnomalyKind.IMPLAUSIBLE_TRAVEL.value,
        "cylinder_code": cylinder.code,
        "enterprise_code": scan.enterprise_code,
        "detected_at": scan.at,
        "details": {
            "from": {"lon": before[0], "lat": before[1], "at": cylinder.last_scan_at.isoformat()},
            "to": {"lon": here[0], "lat": here[1], "at": scan.at.isoformat()},
            "distance_m": round(rules.distance_m(before, here)),
            "scan_kind": scan.kind.value,
        },
    }


def _apply(
    cylinder: Cylinder,
    scan: ScanIn,
    place: tuple[Enterprise, list[str]] | None,
    users: set[uuid.UUID],
) -> CylinderStatus:
    """Apply one scan to the cylinder's row in memory; raises ``Refused`` and changes nothing."""
    if cylinder.last_scan_at is not None and scan.at < cylinder.last_scan_at:
        raise Refused(
            "gas.scan_out_of_order",
            f"this scan ({scan.at.isoformat()}) is older than the cylinder's last one "
            f"({cylinder.last_scan_at.isoformat()})",
        )
    if scan.kind == ScanKind.DELIVER and scan.user_id not in users:
        raise Refused("gas.unknown_user", f"no gas user {scan.user_id}")
    if scan.kind == ScanKind.FILL:
        if place is None or place[0].kind != EnterpriseKind.FILLING_STATION.value:
            raise Refused("gas.not_a_station", "a fill is scanned at a filling station (enterprise_code)")
        reasons = rules.fill_refusals(facts_of(cylinder), station_facts(*place), rules_today(scan.at))
        if reasons:
            raise Refused("gas.fill_refused", "the fill check refuses this cylinder: " + ", ".join(reasons))
    try:
        status = next_status(CylinderStatus(cylinder.status), scan.kind, passed=scan.passed)
    except ValueError as error:  # IllegalScan, or a verdict the kind does not take
        raise Refused("gas.illegal_scan", str(error)) from None
    cylinder.status = status.value
    cylinder.last_scan_at = scan.at
    cylinder.last_scan_kind = scan.kind.value
    here = _where(scan, place)
    if here is not None:
        cylinder.last_lon, cylinder.last_lat = here
    if place is not None:
        cylinder.last_place = place[0].code
    if scan.kind == ScanKind.DELIVER:
        cylinder.holder_id = scan.user_id
    elif scan.kind in (ScanKind.RECOVER, ScanKind.SCRAP, ScanKind.VOID):
        cylinder.holder_id = None
    if scan.kind == ScanKind.FILL:
        cylinder.last_fill_batch = scan.fill_batch
    if scan.kind == ScanKind.INSPECT:
        inspected = rules_today(scan.at)
        cylinder.last_inspected_on = inspected
        if scan.passed:
            cylinder.last_passed_inspection_on = inspected
        cylinder.next_inspection_due = rules.inspection_due(
            cylinder.manufactured_on, cylinder.last_passed_inspection_on
        )
        cylinder.end_of_life = rules.end_of_life(cylinder.manufactured_on, cylinder.last_passed_inspection_on)
    return status


async def ingest(
    uow: UnitOfWork, scans: Sequence[ScanIn], principal: Principal, *, source: str = "api"
) -> list[ScanResult]:
    session = uow.session
    now = await uow.now()
    first_day, last_day = partitions.accepted_range(rules_today(now))
    codes = sorted({scan.cylinder_code for scan in scans})
    cylinders = {
        c.code: c
        for c in (
            await session.scalars(
                select(Cylinder).where(Cylinder.code.in_(codes)).order_by(Cylinder.code).with_for_update()
            )
        ).all()
    }
    places = await _enterprises(
        session,
        {s.enterprise_code for s in scans if s.enterprise_code}
        | ({principal.unit} if principal.unit else set()),
        rules_today(now),
    )
    wanted_users = {s.user_id for s in scans if s.user_id is not None}
    users = set(
        (await session.scalars(select(GasUser.id).where(GasUser.id.in_(wanted_users)))).all()
        if wanted_users
        else []
    )
    results: list[ScanResult | None] = [None] * len(scans)
    rows: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    changed: set[str] = set()
    for index in sorted(range(len(scans)), key=lambda i: scans[i].at):
        scan = scans[index]
        cylinder = cylinders.get(scan.cylinder_code)
        try:
            if not first_day <= rules_today(scan.at) <= last_day:
                raise Refused(
                    "gas.scan_time_out_of_range",
                    f"a scan's time must fall between {first_day} and {last_day}",
                )
            if scan.at > now + partitions.FUTURE_TOLERANCE:
                raise Refused("gas.scan_in_the_future", "a scan's time is later than now")
            if cylinder is None:
                raise Refused("gas.unknown_cylinder", f"no cylinder {scan.cylinder_code}")
            if scan.enterprise_code is not None and scan.enterprise_code not in places:
                raise Refused("gas.unknown_enterprise", f"no enterprise {scan.enterprise_code}")
            _authorise(principal, scan, cylinder, places)
            place = places.get(scan.enterprise_code) if scan.enterprise_code else None
            before = {name: getattr(cylinder, name) for name in CYLINDER_UPDATE_COLUMNS}
            travel = travel_anomaly(cylinder, scan, _where(scan, place))
            try:
                status = _apply(cylinder, scan, place, users)
            except Refused:
                for name, value in before.items():
                    setattr(cylinder, name, value)
                raise
            if travel is not None:
                anomalies.append(travel)
        except Refused as refusal:
            if refusal.code == "gas.unknown_user":
                anomalies.append(
                    {
                        "id": new_id(),
                        "kind": AnomalyKind.DELIVERY_TO_UNREGISTERED_USER.value,
                        "cylinder_code": scan.cylinder_code,
                        "enterprise_code": scan.enterprise_code,
                        "detected_at": scan.at,
                        "details": {"user_id": str(scan.user_id), "recorded_by": principal.subject},
                    }
                )
            results[index] = ScanResult(
                index=index,
                cylinder_code=scan.cylinder_code,
                accepted=False,
                code=refusal.code,
                detail=refusal.detail,
            )
            continue
        scan_id = new_id()
        rows.append(
            {
                "id": scan_id,
                "at": scan.at,
                "cylinder_code": scan.cylinder_code,
                "kind": scan.kind.value,
                "status_after": status.value,
                "enterprise_code": scan.enterprise_code,
                "operator": scan.operator,
                "scale_id": scan.scale_id,
                "net_mass_kg": scan.net_mass_kg,
                "fill_batch": scan.fill_batch,
                "user_id": scan.user_id,
                "lon": scan.location.lon if scan.location else None,
                "lat": scan.location.lat if scan.location else None,
                "passed": scan.passed,
                "note": scan.note,
                "source": source,
                "recorded_by": principal.subject,
                "recorded_at": now,
            }
        )
        changed.add(scan.cylinder_code)
        results[index] = ScanResult(
            index=index, cylinder_code=scan.cylinder_code, accepted=True, status=status, scan_id=scan_id
        )
    if anomalies:
        await session.execute(ANOMALY_INSERT, anomalies)
    if rows:
        await session.execute(SCAN_INSERT, rows)
        for code in changed:
            cylinders[code].version += 1
            cylinders[code].updated_at = now
        await session.flush()
    return [result for result in results if result is not None]


async def history(
    session: AsyncSession, code: str, *, limit: int, cursor: str | None
) -> tuple[list[Scan], str | None]:
    """A cylinder's scans, oldest first (the index on code and time: every partition, no scan)."""
    query = select(Scan).where(Scan.cylinder_code == code).order_by(Scan.at, Scan.id).limit(limit + 1)
    if cursor:
        at, scan_id = decode_cursor(cursor, 2)
        after = cursor_time(at)
        query = query.where(
            or_(Scan.at > after, and_(Scan.at == after, Scan.id > cursor_value(uuid.UUID, scan_id)))
        )
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.at.isoformat(), str(last.id))
    return found[:limit], next_cursor


async def recall(
    session: AsyncSession, fill_batch: str, limit: int, cursor: str | None = None
) -> tuple[list[Cylinder], str | None]:
    """The cylinders filled in ``fill_batch``, as they are now (where, who holds them), by code."""
    filled = select(Scan.cylinder_code).where(Scan.fill_batch == fill_batch, Scan.kind == ScanKind.FILL.value)
    query = select(Cylinder).where(Cylinder.code.in_(filled)).order_by(Cylinder.code).limit(limit + 1)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(Cylinder.code > cursor_value(str, after))
    found = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(found[limit - 1].code) if len(found) > limit else None
    return found[:limit], next_cursor
