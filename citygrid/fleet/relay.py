"""A fleet's HTTP intake: positions relayed by terminal vendors' platforms, each refused alone (a
vehicle the register does not know, no fix, out of range, out of time). What it takes is the
contract's (``contract.fleet``); what it answers the kit's ``IntakeResult``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from citygrid.fleet.intake import Refused
from citygrid.fleet.reports import LOAD_CODES, Report
from citygrid.schemas import IntakeResult, Refusal


class Located(Protocol):
    @property
    def lon(self) -> float: ...
    @property
    def lat(self) -> float: ...


class RelayedPosition(Protocol):
    """A position as a service's request model has it (``contract.fleet.PositionFields`` and the
    service's ``plate``)."""

    @property
    def plate(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def location(self) -> Located: ...
    @property
    def speed_kmh(self) -> float: ...
    @property
    def direction(self) -> int: ...
    @property
    def altitude_m(self) -> int | None: ...
    @property
    def load(self) -> str | None: ...
    @property
    def mileage_km(self) -> float | None: ...
    @property
    def alarm(self) -> int: ...
    @property
    def status(self) -> int: ...


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
