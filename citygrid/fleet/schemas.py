"""What a fleet's HTTP intake takes and answers: positions relayed by terminal vendors' platforms,
each refused alone (a vehicle the register does not know, no fix, out of range, out of time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, Field

from citygrid.fleet.intake import Refused
from citygrid.fleet.reports import LOAD_CODES, Report
from citygrid.schemas import Refusal, RequestModel
from contract.common import GeoPoint

Load = Literal["empty", "half", "full"]


class PositionFields(RequestModel):
    """One position as a vendor's platform relays it from a terminal; a service adds its ``plate``."""

    at: AwareDatetime
    location: GeoPoint
    speed_kmh: Annotated[float, Field(ge=0, le=250)] = 0.0
    direction: Annotated[int, Field(ge=0, le=359)] = 0
    altitude_m: Annotated[int, Field(ge=-500, le=9000)] | None = None
    load: Load | None = None
    mileage_km: Annotated[float, Field(ge=0, le=10_000_000)] | None = None
    alarm: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0
    status: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0


class RelayedPosition(Protocol):
    plate: str
    at: AwareDatetime
    location: GeoPoint
    speed_kmh: float
    direction: int
    altitude_m: int | None
    load: Load | None
    mileage_km: float | None
    alarm: int
    status: int


class IntakeResult(BaseModel):
    received: int
    stored: int
    refused: list[Refusal]


async def relay(
    items: Sequence[RelayedPosition],
    known: set[str],
    store: Callable[[Sequence[Report]], Awaitable[list[Refused]]],
    *,
    unknown_code: str,
    unknown: str,
) -> IntakeResult:
    """Store the positions of the vehicles in ``known``; each other one is refused with
    ``unknown_code`` (its detail ``unknown`` with the plate), each report ``store`` refuses with its
    reason. Returns once the stored ones are committed."""
    refused: list[Refusal] = []
    reports: list[Report] = []
    indexes: list[int] = []
    for index, item in enumerate(items):
        if item.plate not in known:
            refused.append(
                Refusal(
                    index=index, key=item.plate, code=unknown_code, detail=unknown.format(plate=item.plate)
                )
            )
            continue
        indexes.append(index)
        location = item.location
        reports.append(
            Report(
                item.plate,
                item.at,
                location.lon,
                location.lat,
                item.speed_kmh,
                item.direction,
                item.altitude_m,
                item.alarm,
                item.status,
                LOAD_CODES[item.load] if item.load else None,
                item.mileage_km,
            )
        )
    for position, code, detail in await store(reports):
        index = indexes[position]
        refused.append(Refusal(index=index, key=items[index].plate, code=code, detail=detail))
    refused.sort(key=lambda refusal: refusal.index)
    return IntakeResult(received=len(items), stored=len(items) - len(refused), refused=refused)
