"""The fill check: a station's scale asks before it fills, and gets allow or every reason to refuse.

One round trip reads the station, the companies that entrust it and the cylinder together (a left
join on the code: an unregistered code still gets the station's reasons), with the database's
time; a second writes the answer (the station's pre-fill record), committing as it runs. A refusal counts in ``violations``
under (station, cylinder, city day); only the first of a day publishes ``gas.violation.detected``,
so the case service opens one enforcement case per cylinder, station and day, however many times
the scale asks again, on whichever replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Date, bindparam, cast, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert

from citygrid.auth import Principal, require_district
from citygrid.db import UnitOfWork
from citygrid.errors import Forbidden
from citygrid.runtime import Runtime
from contract.common import GeoPoint
from contract.gas import RefusalReason, ViolationDetected
from services.gas.domain import rules
from services.gas.domain.lifecycle import CylinderStatus
from services.gas.events import VIOLATION_CATEGORY, violation_reference
from services.gas.models import (
    Anomaly,
    AnomalyKind,
    Cylinder,
    Enterprise,
    EnterpriseKind,
    Entrustment,
    FillCheck,
    Violation,
)
from services.gas.registry import NotAStation, UnknownEnterprise, rules_today
from services.gas.schemas import FillCheckIn

CITY_ZONE = "Asia/Shanghai"


class NotThisStation(Forbidden):
    code = "gas.not_this_station"


ENTRUSTED = (
    select(func.coalesce(func.array_agg(Entrustment.company_code), literal_column("ARRAY[]::varchar[]")))
    .where(
        Entrustment.station_code == Enterprise.code,
        # Valid through the city's day (the entrustment's date is a day in Guangzhou).
        or_(
            Entrustment.valid_until.is_(None),
            Entrustment.valid_until >= cast(func.timezone(CITY_ZONE, func.now()), Date),
        ),
    )
    .scalar_subquery()
)
# Built once (a statement per request would cost SQLAlchemy its cache key each time).
STATION_AND_CYLINDER = (
    select(Enterprise, Cylinder, ENTRUSTED, func.now())
    .outerjoin(Cylinder, Cylinder.code == bindparam("cylinder_code"))
    .where(Enterprise.code == bindparam("station_code"))
)
RECORD_CHECK = insert(FillCheck).returning(FillCheck.id)
_violation = insert(Violation)
COUNT_VIOLATION = _violation.on_conflict_do_update(
    index_elements=[Violation.station_code, Violation.cylinder_code, Violation.day],
    set_={"refusals": Violation.refusals + 1, "last_at": _violation.excluded.last_at},
).returning(Violation.refusals)


@dataclass(frozen=True)
class CheckAnswer:
    id: object
    allowed: bool
    reasons: list[RefusalReason]
    cylinder_status: CylinderStatus | None
    checked_at: datetime
    case_reference: str | None
    first_of_day: bool


def facts_of(cylinder: Cylinder) -> rules.CylinderFacts:
    return rules.CylinderFacts(
        code=cylinder.code,
        status=CylinderStatus(cylinder.status),
        owner_enterprise=cylinder.owner_code,
        manufactured_on=cylinder.manufactured_on,
        last_passed_inspection_on=cylinder.last_passed_inspection_on,
        tare_kg=cylinder.tare_kg,
    )


def station_facts(station: Enterprise, entrusted_by: list[str]) -> rules.StationFacts:
    return rules.StationFacts(
        code=station.code,
        enterprise=station.company_code or station.code,
        licence_valid_until=station.licence_valid_until,
        locked=station.locked_at is not None,
        entrusted_by=frozenset(entrusted_by),
    )


# Who may ask for any station: the regulator's own checks (a scale's credential names its station).
OFFICIAL_ROLES = frozenset({"regulator", "supervisor"})


def require_own_station(principal: Principal, station_code: str) -> None:
    """A scale's credential names its station (the consumer's unit): it asks for that one only. A
    credential naming no station is refused unless it is the regulator's: otherwise one leaked key
    could raise enforcement cases against every station of the city."""
    if principal.unit is None:
        if not principal.has_any_role(OFFICIAL_ROLES):
            raise NotThisStation(
                "a fill check comes from a station's scale: its credential names the station (unit)"
            )
    elif principal.unit != station_code:
        raise NotThisStation(f"this credential belongs to station {principal.unit}, not {station_code}")


async def check_fill(runtime: Runtime, request: FillCheckIn, principal: Principal) -> CheckAnswer:
    """Two round trips for an allowed fill (the facts, then the record, each committing as it runs);
    a refusal records itself, counts the day's violation and publishes in one unit of work."""
    require_own_station(principal, request.station_code)
    async with runtime.autocommit() as session:
        row = (
            await session.execute(
                STATION_AND_CYLINDER,
                {"station_code": request.station_code, "cylinder_code": request.cylinder_code},
            )
        ).one_or_none()
        if row is None:
            raise UnknownEnterprise(f"no filling station {request.station_code}")
        station, cylinder, entrusted, now = row
        require_district(principal, station.district_code)
        if station.kind != EnterpriseKind.FILLING_STATION.value:
            raise NotAStation(f"{station.code} is a {station.kind}, not a filling station")
        today = rules_today(now)
        observed = rules.Observations(**request.observations.model_dump())
        facts = facts_of(cylinder) if cylinder is not None else None
        reasons = rules.fill_refusals(facts, station_facts(station, entrusted), today, observed)
        status = CylinderStatus(cylinder.status) if cylinder is not None else None
        record = {
            "at": now,
            "cylinder_code": request.cylinder_code,
            "station_code": station.code,
            "scale_id": request.scale_id,
            "operator": request.operator,
            "allowed": not reasons,
            "reasons": ",".join(reasons),
        }
        if not reasons:
            check_id = await session.scalar(RECORD_CHECK, record)
            return CheckAnswer(check_id, True, [], status, now, None, False)
    async with runtime.uow() as uow:
        check_id = await uow.session.scalar(RECORD_CHECK, record)
        reference = violation_reference(station.code, request.cylinder_code, today.isoformat())
        refusals = await uow.session.scalar(
            COUNT_VIOLATION,
            {
                "station_code": station.code,
                "cylinder_code": request.cylinder_code,
                "day": today,
                "reasons": record["reasons"],
                "first_at": now,
                "last_at": now,
            },
        )
        first = refusals == 1
        if first:
            _publish_violation(uow, station, request.cylinder_code, reasons, reference, now, today)
            if RefusalReason.NOT_OWNED_BY_FILLER in reasons and cylinder is not None:
                uow.session.add(
                    Anomaly(
                        kind=AnomalyKind.FILLED_OUTSIDE_NETWORK.value,
                        cylinder_code=cylinder.code,
                        enterprise_code=station.code,
                        detected_at=now,
                        details={"owner": cylinder.owner_code, "station_company": station.company_code},
                    )
                )
    return CheckAnswer(check_id, False, reasons, status, now, reference, first)


def _publish_violation(
    uow: UnitOfWork,
    station: Enterprise,
    cylinder_code: str,
    reasons: list[RefusalReason],
    reference: str,
    now: datetime,
    today: date,
) -> None:
    assert station.lon is not None
    assert station.lat is not None
    uow.publish(
        ViolationDetected(
            reference=reference,
            category_code=VIOLATION_CATEGORY,
            district_code=station.district_code,
            location=GeoPoint.of(station.lon, station.lat),
            address=station.name,
            description=(
                f"Filling station {station.code} ({station.name}) was refused cylinder {cylinder_code} "
                f"on {today.isoformat()}: {', '.join(reasons)}."
            ),
            detected_at=now,
            cylinder_code=cylinder_code,
            station_code=station.code,
            reasons=reasons,
        ),
        aggregate_id=reference,
        version=1,
    )
