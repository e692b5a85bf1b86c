"""The chain's figures on real PostgreSQL: tonnage by stream, district and day, the rates beside the
national targets (the same as the domain's over the same records), facilities' intake, points'
violation rates, collection coverage (counted in the database as the domain counts it), and
today's gauges."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
from sqlalchemy import select

from citygrid.settings import to_libpq_url
from services.waste.chain import figures
from services.waste.chain.models import Pickup
from services.waste.chain.rounds import pickup_of, route_of
from services.waste.domain import chain
from services.waste.domain.chain_figures import chain_rates
from services.waste.domain.chain_schedule import Coverage, collection_coverage
from services.waste.models import Route
from services.waste.tests.conftest import HUANGPU, READER, TIANHE, Waste
from services.waste.tests.test_chain_intake import (
    FOOD_PLANT,
    FOOD_TRUCK,
    INCINERATOR,
    NOW,
    OTHER_TRUCK,
    RECYCLER,
    RECYCLING_TRUCK,
    lift,
    register,
    report,
    weighed,
)
from services.waste.tests.test_chain_trips import chain_of, run_round

_CITY_NOW = NOW.astimezone(chain.CITY_TIMEZONE)
# The day the records fall on: today, or yesterday in the city's first hour, so that a trip's records
# all fall on it whenever the test runs.
CITY_MIDNIGHT = datetime.combine(
    _CITY_NOW.date() - timedelta(days=1 if _CITY_NOW.hour < 1 else 0), time(0), tzinfo=chain.CITY_TIMEZONE
)
AT = min(NOW - timedelta(minutes=10), CITY_MIDNIGHT + timedelta(days=1, minutes=-10))
SINCE, UNTIL = CITY_MIDNIGHT, CITY_MIDNIGHT + timedelta(days=1)


def span(since: datetime = SINCE, until: datetime = UNTIL) -> str:
    return f"since={quote(since.isoformat())}&until={quote(until.isoformat())}"


async def read(waste: Waste, path: str) -> Any:
    response = await waste.get(path, scopes=READER)
    assert response.status_code == 200, response.text
    return response.json()


async def a_moment_today() -> datetime:
    """A moment of today in city time, taken when the test runs, not when the module was imported:
    a suite that runs past the city's midnight has moved today on. Within a minute of midnight it
    waits for the next day, so that today cannot change between the reports and the figures; the
    records of the day are seconds apart so that they all fall on it in its first minute."""
    now = datetime.now(UTC)
    midnight = datetime.combine(
        now.astimezone(chain.CITY_TIMEZONE).date() + timedelta(days=1), time(0), tzinfo=chain.CITY_TIMEZONE
    )
    if midnight - now < timedelta(minutes=1):
        await asyncio.sleep((midnight - now).total_seconds() + 1)
        now = datetime.now(UTC)
    city_midnight = datetime.combine(
        now.astimezone(chain.CITY_TIMEZONE).date(), time(0), tzinfo=chain.CITY_TIMEZONE
    )
    return max(now.replace(microsecond=0) - timedelta(seconds=30), city_midnight + timedelta(minutes=1))


async def a_day_of_unloadings(
    waste: Waste, at: datetime = AT, apart: timedelta = timedelta(minutes=10)
) -> None:
    await register(waste)
    # The food truck serves two points; at the second it lifts a recyclable bin.
    await report(
        waste,
        "pickups",
        lift(at - 4 * apart, "HP-0001", weight_kg=300.0),
        lift(at - 3 * apart, "HP-0002", stream="REC", weight_kg=200.0),
    )
    await report(
        waste,
        "weighings",
        weighed(at, 10_500.0, 10_000.0),
        weighed(at, 8_400.0, 8_000.0, plate=RECYCLING_TRUCK, facility_code=RECYCLER),
        weighed(at, 13_100.0, 12_000.0, plate=OTHER_TRUCK, facility_code=INCINERATOR),
    )


async def test_tonnage_is_what_the_weighbridges_weighed_by_stream_district_and_day(waste: Waste):
    await a_day_of_unloadings(waste)
    by_stream = await read(waste, f"/v1/figures/tonnage?{span()}&by=stream")
    assert [(row["key"], row["tonnes"], row["weighings"]) for row in by_stream] == [
        ("food", 0.5, 1),
        ("other", 1.1, 1),
        ("recyclable", 0.4, 1),
    ]
    by_district = await read(waste, f"/v1/figures/tonnage?{span()}&by=district")
    assert [(row["key"], round(row["tonnes"], 6)) for row in by_district] == [(HUANGPU, 2.0)]
    by_day = await read(waste, f"/v1/figures/tonnage?{span()}&by=day")
    assert [row["key"] for row in by_day] == [CITY_MIDNIGHT.date().isoformat()]
    before = await read(waste, f"/v1/figures/tonnage?{span(SINCE - timedelta(days=1), SINCE)}")
    assert before == []
    intake = await read(waste, f"/v1/figures/facility-intake?{span()}")
    assert [(row["facility_code"], row["stream"], row["tonnes"]) for row in intake] == [
        (INCINERATOR, "other", 1.1),
        (FOOD_PLANT, "food", 0.5),
        (RECYCLER, "recyclable", 0.4),
    ]


async def test_the_rates_are_the_domains_beside_the_national_targets(waste: Waste):
    await a_day_of_unloadings(waste)
    rates = await read(waste, f"/v1/figures/rates?{span()}")
    vehicles = {
        FOOD_TRUCK: chain.Vehicle(FOOD_TRUCK, chain.VehicleType.COLLECTION, chain.Stream.FOOD, ""),
        RECYCLING_TRUCK: chain.Vehicle(
            RECYCLING_TRUCK, chain.VehicleType.COLLECTION, chain.Stream.RECYCLABLE, ""
        ),
        OTHER_TRUCK: chain.Vehicle(OTHER_TRUCK, chain.VehicleType.COLLECTION, chain.Stream.OTHER, ""),
    }
    facilities = {
        FOOD_PLANT: chain.Facility(
            FOOD_PLANT, chain.FacilityKind.FOOD_WASTE_TREATMENT, frozenset({chain.Stream.FOOD})
        ),
        RECYCLER: chain.Facility(
            RECYCLER, chain.FacilityKind.RECYCLING, frozenset({chain.Stream.RECYCLABLE})
        ),
        INCINERATOR: chain.Facility(
            INCINERATOR, chain.FacilityKind.INCINERATION, frozenset({chain.Stream.OTHER})
        ),
    }
    expected = chain_rates(
        [
            chain.Weighing(FOOD_TRUCK, FOOD_PLANT, 10_500.0, 10_000.0, AT),
            chain.Weighing(RECYCLING_TRUCK, RECYCLER, 8_400.0, 8_000.0, AT),
            chain.Weighing(OTHER_TRUCK, INCINERATOR, 13_100.0, 12_000.0, AT),
        ],
        vehicles,
        facilities,
    )
    assert rates["recycling_rate"] == expected.recycling_rate == 0.2
    assert rates["resource_utilisation_rate"] == expected.resource_utilisation_rate
    assert round(rates["resource_utilisation_rate"], 6) == 0.45
    assert (rates["total_t"], rates["recyclable_t"], rates["food_treated_t"]) == (2.0, 0.4, 0.5)
    assert (rates["recycling_target"], rates["resource_utilisation_target"]) == (0.35, 0.6)
    assert (rates["meets_recycling_target"], rates["meets_resource_utilisation_target"]) == (False, False)
    empty = await read(waste, f"/v1/figures/rates?{span(SINCE - timedelta(days=1), SINCE)}")
    assert (empty["recycling_rate"], empty["meets_recycling_target"]) == (None, None)


async def test_a_points_violation_rate_is_its_violations_over_the_trips_that_served_it(waste: Waste):
    await a_day_of_unloadings(waste)
    await run_round(waste)
    rates = await read(waste, f"/v1/figures/point-rates?{span()}")
    assert [(r["point_code"], r["violations"], r["occasions"], r["rate"]) for r in rates] == [
        ("HP-0002", 1, 1, 1.0),
        ("HP-0001", 0, 1, 0.0),
    ]


def route(code: str, plate: str, stream: str, window: str, stops: list[str]) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Xiagang {stream} round",
        "plate": plate,
        "district_code": HUANGPU,
        "stream": stream,
        "days": [1, 2, 3, 4, 5, 6, 7],
        "time_window": window,
        "stops": stops,
        "facility_code": FOOD_PLANT if stream == "food" else INCINERATOR,
    }


async def test_coverage_is_counted_in_the_database_as_the_schedule_counts_it(
    waste: Waste, waste_database: str
):
    await register(waste)
    day = (NOW.astimezone(chain.CITY_TIMEZONE) - timedelta(days=3)).date()

    def city(after: int, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day + timedelta(days=after), time(hour, minute), tzinfo=chain.CITY_TIMEZONE)

    routes = [
        route("R-FOOD-1", FOOD_TRUCK, "food", "05:00-08:00", ["HP-0001", "HP-0002", "HP-0003"]),
        route("R-FOOD-2", FOOD_TRUCK, "food", "06:00-09:00", ["HP-0002"]),
        route("R-OTHER-1", OTHER_TRUCK, "other", "22:00-06:00", ["HP-0001", "HP-0003"]),
    ]
    imported = await waste.post("/v1/routes/import", {"routes": routes})
    assert imported.json()["refused"] == [], imported.text
    await report(
        waste,
        "pickups",
        lift(city(0, 5), "HP-0001"),  # as the window opens: done
        lift(city(0, 8), "HP-0002"),  # as R-FOOD-1's window closes: late for it, within R-FOOD-2's
        lift(city(0, 6), "HP-0003", stream="REC", plate=RECYCLING_TRUCK),  # a bin of another stream
        lift(city(1, 5, 59), "HP-0001", stream="OTH", plate=OTHER_TRUCK),  # the night round, next morning
        lift(city(1, 6), "HP-0003", stream="OTH", plate=OTHER_TRUCK),  # as its window closes: late
    )
    # As if the routes' schedules had been set before the day (a window opening earlier is not due).
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        await connection.execute("UPDATE routes SET schedule_changed_at = $1", city(-1, 0))
    finally:
        await connection.close()

    body = await read(waste, f"/v1/figures/coverage?day={day.isoformat()}")
    assert (body["day"], body["scheduled"], body["done"], body["rate"]) == (day.isoformat(), 6, 3, 0.5)
    async with waste.runtime.db() as session:
        # What the domain counts over the same routes and every lift: the same.
        known = [found for row in await session.scalars(select(Route)) if (found := route_of(row))]
        lifts = [pickup_of(row) for row in await session.scalars(select(Pickup))]
        assert await figures.coverage(session, day, NOW, None) == collection_coverage(
            known, lifts, day, now=NOW
        )
        # Under way, at 08:30: R-FOOD-1's window is closed, R-FOOD-2's and the night's are not.
        assert await figures.coverage(session, day, city(0, 8, 30), None) == Coverage(day, 3, 1)
        assert await figures.coverage(session, day, NOW, TIANHE) == Coverage(day, 0, 0)
        assert await figures.coverage(session, date(2000, 1, 1), NOW, None) == Coverage(
            date(2000, 1, 1), 0, 0
        )


async def test_periods_are_bounded_and_ordered(waste: Waste):
    for path in (
        f"/v1/figures/tonnage?{span(UNTIL, SINCE)}",
        f"/v1/figures/rates?{span(SINCE - timedelta(days=400), SINCE)}",
        f"/v1/figures/point-rates?{span(SINCE - timedelta(days=93), SINCE)}",
    ):
        response = await waste.get(path, scopes=READER)
        assert (response.status_code, response.json()["code"]) == (422, "waste.invalid_period"), path
    naive = await waste.get(
        "/v1/figures/rates?since=2026-12-01T00:00:00&until=2026-12-02T00:00:00", scopes=READER
    )
    assert naive.status_code == 422


async def test_todays_figures_are_computed_by_one_replica_and_shown_as_gauges(waste: Waste):
    await a_day_of_unloadings(waste, await a_moment_today(), apart=timedelta(seconds=10))
    await run_round(waste)
    part = chain_of(waste)
    assert part.metrics is not None
    assert await figures.refresh(waste.runtime.db, part.metrics, every_seconds=0.001)
    registry = waste.runtime.metrics.registry
    assert registry.get_sample_value("citygrid_waste_tonnage_today_tonnes", {"stream": "food"}) == 0.5
    assert registry.get_sample_value("citygrid_waste_recycling_rate_today") == 0.2
    assert registry.get_sample_value("citygrid_waste_trips", {"state": "closed"}) == 1.0
    assert (
        registry.get_sample_value(
            "citygrid_waste_chain_records_total", {"kind": "weighing", "outcome": "stored"}
        )
        == 3.0
    )
    assert registry.get_sample_value("citygrid_waste_chain_violations_total", {"kind": "mixed_load"}) == 1.0
    assert (registry.get_sample_value("citygrid_waste_chain_checks_total", {"check": "mixed_load"}) or 0) >= 1
    # Computed a moment ago: the next replica shows the stored figures without computing them.
    assert not await figures.refresh(waste.runtime.db, part.metrics, every_seconds=60.0)
