"""The chain's figures from its records: tonnage by stream and day, the recycling and
resource-utilisation rates beside the national targets, each point's violation rate, and the visits
a day's collection coverage counts.

Tonnage is what the weighbridges weighed (net), attributed to the stream of the vehicle unloading,
on the city date of the weighing. Only vehicles in the register count: a transfer station's trailer
taking waste on is not one of them, so waste weighed at a transfer station and again at its end
facility is counted once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

from services.waste.domain.chain import (
    CITY_TIMEZONE,
    Facility,
    FacilityKind,
    Stream,
    Trip,
    Vehicle,
    Weighing,
    distinct_weighings,
)
from services.waste.domain.chain_checks import Violation, ViolationKind

__all__ = [
    "RECYCLING_TARGET",
    "RESOURCE_UTILISATION_TARGET",
    "ChainRates",
    "PointRate",
    "chain_rates",
    "tonnage_by_stream_and_day",
    "violation_rates_by_point",
]

# National targets for the end of 2025.
RECYCLING_TARGET: Final = 0.35
RESOURCE_UTILISATION_TARGET: Final = 0.60

_KG_PER_T: Final = 1000.0


def _registered(
    weighings: Iterable[Weighing], vehicles: Mapping[str, Vehicle]
) -> list[tuple[Weighing, Stream]]:
    return [(w, vehicles[w.plate].stream) for w in distinct_weighings(weighings) if w.plate in vehicles]


def tonnage_by_stream_and_day(
    weighings: Iterable[Weighing], vehicles: Mapping[str, Vehicle]
) -> dict[date, dict[Stream, float]]:
    """Tonnes weighed per city date and stream; a stream with nothing weighed that day is absent."""
    kg: dict[date, dict[Stream, list[float]]] = defaultdict(lambda: defaultdict(list))
    for weighing, stream in _registered(weighings, vehicles):
        kg[weighing.at.astimezone(CITY_TIMEZONE).date()][stream].append(weighing.net_kg)
    return {
        day: {stream: math.fsum(nets) / _KG_PER_T for stream, nets in sorted(streams.items())}
        for day, streams in sorted(kg.items())
    }


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


@dataclass(frozen=True, slots=True)
class ChainRates:
    """The rates over a span of weighings, in tonnes; a rate is None when nothing was weighed."""

    total_t: float
    recyclable_t: float
    food_treated_t: float

    @property
    def recycling_rate(self) -> float | None:
        """Recyclable tonnage ÷ all tonnage."""
        return _share(self.recyclable_t, self.total_t)

    @property
    def resource_utilisation_rate(self) -> float | None:
        """(Recyclable tonnage + food waste treated) ÷ all tonnage."""
        return _share(self.recyclable_t + self.food_treated_t, self.total_t)

    @property
    def meets_recycling_target(self) -> bool | None:
        rate = self.recycling_rate
        return None if rate is None else rate >= RECYCLING_TARGET

    @property
    def meets_resource_utilisation_target(self) -> bool | None:
        rate = self.resource_utilisation_rate
        return None if rate is None else rate >= RESOURCE_UTILISATION_TARGET


def chain_rates(
    weighings: Iterable[Weighing],
    vehicles: Mapping[str, Vehicle],
    facilities: Mapping[str, Facility],
    *,
    food_treatment: frozenset[FacilityKind] = frozenset({FacilityKind.FOOD_WASTE_TREATMENT}),
) -> ChainRates:
    """The recycling and resource-utilisation rates of the weighings given (the caller picks the span).

    The national target names the rates without a formula here, so they are defined as follows:
    recyclable tonnage is what recyclable-stream vehicles unloaded, wherever; food treated is what
    food-stream vehicles unloaded at a facility of a ``food_treatment`` kind (food waste landfilled
    or burnt is not treated). Incineration with energy recovery is not counted as utilisation. A
    city whose transfer stations pass food on to treatment adds ``TRANSFER_STATION`` to the kinds.
    """
    total: list[float] = []
    recyclable: list[float] = []
    food: list[float] = []
    for weighing, stream in _registered(weighings, vehicles):
        total.append(weighing.net_kg)
        facility = facilities.get(weighing.facility)
        if stream == Stream.RECYCLABLE:
            recyclable.append(weighing.net_kg)
        elif stream == Stream.FOOD and facility is not None and facility.kind in food_treatment:
            food.append(weighing.net_kg)
    return ChainRates(
        total_t=math.fsum(total) / _KG_PER_T,
        recyclable_t=math.fsum(recyclable) / _KG_PER_T,
        food_treated_t=math.fsum(food) / _KG_PER_T,
    )


@dataclass(frozen=True, slots=True)
class PointRate:
    """A point's violations over its occasions: each trip that served it, and each visit missed."""

    point: str
    violations: int
    occasions: int

    @property
    def rate(self) -> float | None:
        return self.violations / self.occasions if self.occasions else None


def violation_rates_by_point(violations: Iterable[Violation], trips: Iterable[Trip]) -> dict[str, PointRate]:
    """Each point's violations ÷ occasions, over the same span of violations and trips.

    A trip serving a point is one occasion however many bins it lifted there; a missed collection
    is an occasion too (the point was due and nobody came). Violations without a point (on the
    road, at a facility) are not any point's; each trip id and each dedup key counts once.
    """
    occasions: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    for trip in {trip.id: trip for trip in trips}.values():
        for point in trip.points:
            occasions[point] += 1
    for violation in {v.dedup_key: v for v in violations}.values():
        if violation.point is None:
            continue
        counted[violation.point] += 1
        if violation.kind == ViolationKind.MISSED_COLLECTION:
            occasions[violation.point] += 1
    return {
        point: PointRate(point, counted.get(point, 0), occasions.get(point, 0))
        for point in sorted(occasions.keys() | counted.keys())
    }
