"""The fill check: a station's scale asks before it fills, and gets allow or every reason to refuse.

One round trip reads the station, the companies that entrust it and the cylinder together (a left
join on the code: an unregistered code still gets the station's reasons), with the database's
time; a second writes the answer (the station's pre-fill record), committing as it runs. A refusal counts in ``violations``
under (station, cylinder, city day); only the first of a day publishes ``gas.violation.detected``,
so the case service opens one enforcement case per cylinder, station and day, however many times
the scale asks again, on whichever replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, bindparam, cast, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert

from citygrid.auth import Principal, require_district
from citygrid.db import DriverRead, UnitOfWork, driver_connection
from citygrid.errors import Forbidden
from citygrid.ids import new_id
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
# Built once and read on the driver (citygrid.db.DriverRead): the fill check is the service's hot path.
STATION_AND_CYLINDER = DriverRead.of(
    select(
        Enterprise.code.label("station_code"),
        Enterprise.kind.label("station_kind"),
        Enterprise.name.label("station_name"),
        Enterprise.company_code.label("station_company"),
        Enterprise.licence_valid_until.label("station_licence_valid_until"),
        Enterprise.district_code.label("station_district"),
        Enterprise.lon.label("station_lon"),
        Enterprise.lat.label("station_lat"),
        Enterprise.locked_at.label("station_locked_at"),
        Cylinder.code.label("cylinder_code"),
        Cylinder.status.label("cylinder_status"),
        Cylinder.owner_code.label("cylinder_owner"),
        Cylinder.manufactured_on.label("cylinder_manufactured_on"),
        Cylinder.last_passed_inspection_on.label("cylinder_last_passed_inspection_on"),
        Cylinder.tare_kg.label("cylinder_tare_kg"),
        ENTRUSTED.label("entrusted"),
        func.now().label("now"),
    )
    .select_from(Enterprise)
    .outerjoin(Cylinder, Cylinder.code == bindparam("cylinder_code"))
    .where(Enterprise.code == bindparam("station_code"))
)
_RECORD_COLUMNS = ("id", "at", "cylinder_code", "station_code", "scale_id", "operator", "allowed", "reasons")
RECORD_CHECK_ON_DRIVER = DriverRead.of(
    insert(FillCheck).values({name: bindparam(name) for name in _RECORD_COLUMNS}).returning(FillCheck.id)
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
    """The rules' view of a station the ORM loaded (a scan's), the same as a fill check's."""
    return Station.of_enterprise(station).facts(entrusted_by)


@dataclass(frozen=True, slots=True)
class Station:
    """What the fill check reads of the station."""

    code: str
    kind: str
    name: str
    company_code: str | None
    licence_valid_until: date | None
    district_code: str | None
    lon: float | None
    lat: float | None
    locked: bool

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Station:
        return cls(
            code=row["station_code"],
            kind=row["station_kind"],
            name=row["station_name"],
            company_code=row["station_company"],
            licence_valid_until=row["station_licence_valid_until"],
            district_code=row["station_district"],
            lon=row["station_lon"],
            lat=row["station_lat"],
            locked=row["station_locked_at"] is not None,
        )

    @classmethod
    def of_enterprise(cls, station: Enterprise) -> Station:
        return cls(
            code=station.code,
            kind=station.kind,
            name=station.name,
            company_code=station.company_code,
            licence_valid_until=station.licence_valid_until,
            district_code=station.district_code,
            lon=station.lon,
            lat=station.lat,
            locked=station.locked_at is not None,
        )

    def facts(self, entrusted_by: list[str]) -> rules.StationFacts:
        return rules.StationFacts(
            code=self.code,
            enterprise=self.company_code or self.code,
            licence_valid_until=self.licence_valid_until,
            locked=self.locked,
            entrusted_by=frozenset(entrusted_by),
        )


def cylinder_facts(row: Mapping[str, Any]) -> rules.CylinderFacts | None:
    """The cylinder's side of the read; None for a code the registry does not know."""
    if row["cylinder_code"] is None:
        return None
    tare = row["cylinder_tare_kg"]
    return rules.CylinderFacts(
        code=row["cylinder_code"],
        status=CylinderStatus(row["cylinder_status"]),
        owner_enterprise=row["cylinder_owner"],
        manufactured_on=row["cylinder_manufactured_on"],
        last_passed_inspection_on=row["cylinder_last_passed_inspection_on"],
        tare_kg=float(tare) if tare is not None else None,
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
    """Two statements on one connection for an allowed fill (the facts, then the record, each
    committing as it runs, on the driver); a refusal records itself, counts the day's violation
    and publishes in one unit of work."""
    require_own_station(principal, request.station_code)
    assert runtime.read_engine is not None, "the runtime is not started"
    async with driver_connection(runtime.read_engine) as connection:
        row = await connection.fetchrow(
            STATION_AND_CYLINDER.sql,
            *STATION_AND_CYLINDER.arguments(
                {"station_code": request.station_code, "cylinder_code": request.cylinder_code}
            ),
        )
        if row is None:
            raise UnknownEnterprise(f"no filling station {request.station_code}")
        station = Station.of(row)
        require_district(principal, station.district_code)
        if station.kind != EnterpriseKind.FILLING_STATION.value:
            raise NotAStation(f"{station.code} is a {station.kind}, not a filling station")
        now: datetime = row["now"]
        today = rules_today(now)
        observed = rules.Observations(**request.observations.model_dump())
        facts = cylinder_facts(row)
        reasons = rules.fill_refusals(facts, station.facts(row["entrusted"]), today, observed)
        status = facts.status if facts is not None else None
        record = {
            "id": new_id(),
            "at": now,
            "cylinder_code": request.cylinder_code,
            "station_code": station.code,
            "scale_id": request.scale_id,
            "operator": request.operator,
            "allowed": not reasons,
            "reasons": ",".join(reasons),
        }
        if not reasons:
            check_id = await connection.fetchval(
                RECORD_CHECK_ON_DRIVER.sql, *RECORD_CHECK_ON_DRIVER.arguments(record)
            )
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
            if RefusalReason.NOT_OWNED_BY_FILLER in reasons and facts is not None:
                uow.session.add(
                    Anomaly(
                        kind=AnomalyKind.FILLED_OUTSIDE_NETWORK.value,
                        cylinder_code=facts.code,
                        enterprise_code=station.code,
                        detected_at=now,
                        details={"owner": facts.owner_enterprise, "station_company": station.company_code},
                    )
                )
    return CheckAnswer(check_id, False, reasons, status, now, reference, first)


def _publish_violation(
    uow: UnitOfWork,
    station: Station,
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
