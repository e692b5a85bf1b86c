"""The rules over the fleet, without I/O: positions placed in sites, windows and corridors, a
manifest moved along by the geofences, violations found once, episodes rebuilt by a replay."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.muck.domain.geofences import Corridor, Site
from services.muck.domain.manifests import AbnormalReason, ManifestAction, ManifestStatus
from services.muck.domain.violations import Load, ViolationKind
from services.muck.domain.windows import CITY_TZ, parse_window
from services.muck.rules.evaluation import Area, Carried, Evaluator, Fix, Geography

LON, LAT = 113.30, 23.10
M_PER_DEG_LAT = 110_770.0
M_PER_DEG_LON = 102_470.0  # at 23.1°N
T0 = datetime(2026, 12, 1, 21, 0, tzinfo=CITY_TZ)  # in the central city's 20:00–23:30 window


def east(metres: float, north: float = 0.0) -> tuple[float, float]:
    return LON + metres / M_PER_DEG_LON, LAT + north / M_PER_DEG_LAT


def square(centre_east: float, half: float = 100.0, north: float = 0.0) -> list[tuple[float, float]]:
    return [
        east(centre_east - half, north - half),
        east(centre_east + half, north - half),
        east(centre_east + half, north + half),
        east(centre_east - half, north + half),
    ]


# A construction site at 0 m, a disposal site at 5 km, another at 5 km but 2 km north; the route
# runs east along the parallel from the first to the second, 40 m wide.
GEOGRAPHY = Geography(
    sites=[
        Site("SITE", "construction", square(0)),
        Site("DUMP", "disposal", square(5_000)),
        Site("OTHER", "disposal", square(5_000, north=2_000)),
    ],
    corridors=[Corridor("R1", [east(0), east(5_000)], 40.0)],
    areas=[Area("CENTRE", square(2_500, half=10_000), (parse_window("20:00-23:30"),))],
    site_districts={"SITE": "440106", "DUMP": "440111", "OTHER": "440111"},
)
MANIFEST = Carried("m-1", "MF-1", ManifestStatus.ISSUED, "SITE", "DUMP", "R1", "440106")


def fix(
    seconds: float, metres_east: float, north: float = 0.0, *, speed: float = 30.0, load: Load = "full"
) -> Fix:
    lon, lat = east(metres_east, north)
    return Fix("粤A00001D", T0 + timedelta(seconds=seconds), lon, lat, speed, load)


def drive(start_s: float, from_m: float, to_m: float, points: int, **kw: object) -> list[Fix]:
    return [
        fix(start_s + i * 30, from_m + (to_m - from_m) * i / max(points - 1, 1), **kw)  # type: ignore[arg-type]
        for i in range(points)
    ]


def test_leaving_the_site_loads_the_manifest_and_entering_the_disposal_site_delivers_it() -> None:
    evaluator = Evaluator(GEOGRAPHY)
    result = evaluator.evaluate(
        [fix(0, 0, load="empty"), fix(30, 0), *drive(60, 300, 4_800, 10), fix(400, 5_000)],
        {"粤A00001D": MANIFEST},
    )
    assert [step.action for step in result.steps] == [
        ManifestAction.LOAD,
        ManifestAction.DEPART,
        ManifestAction.DELIVER,
    ]
    assert result.steps[0].at == T0 + timedelta(seconds=60)
    assert result.steps[-1].at == T0 + timedelta(seconds=400)
    assert result.detected == []  # loaded on its manifest, on its route, in its window
    assert result.taken == 13


def test_positions_come_in_any_order_in_a_batch_and_late_ones_are_not_taken() -> None:
    evaluator = Evaluator(GEOGRAPHY)
    fixes = [fix(0, 0, load="empty"), fix(30, 0), fix(60, 300)]
    result = evaluator.evaluate(list(reversed(fixes)), {"粤A00001D": MANIFEST})
    assert [step.action for step in result.steps] == [ManifestAction.LOAD, ManifestAction.DEPART]
    again = evaluator.evaluate([fix(45, 200)], {"粤A00001D": MANIFEST})
    assert again.taken == 0
    assert again.steps == []


def test_off_route_for_ten_minutes_is_found_once_then_severe_after_fifteen() -> None:
    evaluator = Evaluator(GEOGRAPHY)
    in_transit = Carried("m-1", "MF-1", ManifestStatus.IN_TRANSIT, "SITE", "DUMP", "R1", "440106")
    # 200 m north of the corridor, every 30 s for 16 minutes.
    off = [fix(i * 30, 1_000 + i * 10, north=200) for i in range(33)]
    found = evaluator.evaluate(off, {"粤A00001D": in_transit}).detected
    assert [(d.finding.kind, d.finding.severity) for d in found] == [
        (ViolationKind.OFF_ROUTE, "normal"),
        (ViolationKind.OFF_ROUTE, "severe"),
    ]
    assert all(d.finding.episode_started_at == T0 for d in found)
    assert found[0].finding.at == T0 + timedelta(minutes=10)
    assert found[0].manifest == in_transit


def test_a_replay_rebuilds_the_episode_under_way_without_reporting_it() -> None:
    in_transit = Carried("m-1", "MF-1", ManifestStatus.IN_TRANSIT, "SITE", "DUMP", "R1", "440106")
    off = [fix(i * 30, 1_000, north=200) for i in range(25)]  # 12 minutes off route
    replayed = Evaluator(GEOGRAPHY)
    assert replayed.evaluate(off[:15], {"粤A00001D": in_transit}, replay=True).detected == []
    # The replica that took over goes on from the 8th minute: the episode started at T0.
    found = replayed.evaluate(off[15:], {"粤A00001D": in_transit}).detected
    assert [(d.finding.kind, d.finding.episode_started_at) for d in found] == [(ViolationKind.OFF_ROUTE, T0)]
    # Without the replay the same positions find nothing yet: the episode would start at minute 7:30.
    assert Evaluator(GEOGRAPHY).evaluate(off[15:], {"粤A00001D": in_transit}).detected == []


def test_unloading_at_another_disposal_site_flags_the_manifest_delivered_elsewhere() -> None:
    in_transit = Carried("m-1", "MF-1", ManifestStatus.IN_TRANSIT, "SITE", "DUMP", "R1", "440106")
    result = Evaluator(GEOGRAPHY).evaluate(
        [fix(0, 5_000, north=2_000, speed=2), fix(30, 5_000, north=2_000, speed=0, load="empty")],
        {"粤A00001D": in_transit},
    )
    assert [d.finding.kind for d in result.detected] == [ViolationKind.UNLOADED_OUTSIDE_SITE]
    assert [(s.action, s.reason) for s in result.steps] == [
        (ManifestAction.FLAG, AbnormalReason.DELIVERED_ELSEWHERE)
    ]


def test_moving_muck_outside_the_window_is_found_in_the_area_only() -> None:
    afternoon = T0.replace(hour=14)
    in_transit = Carried("m-1", "MF-1", ManifestStatus.IN_TRANSIT, "SITE", "DUMP", "R1", "440106")
    lon, lat = east(1_000)
    inside = Fix("粤A00001D", afternoon, lon, lat, 30.0, "full")
    found = Evaluator(GEOGRAPHY).evaluate([inside], {"粤A00001D": in_transit}).detected
    assert [d.finding.kind for d in found] == [ViolationKind.OUTSIDE_HOURS]
    lon, lat = east(30_000)  # beyond the area: no window applies
    outside = Fix("粤A00001D", afternoon, lon, lat, 30.0, "full")
    assert Evaluator(GEOGRAPHY).evaluate([outside], {"粤A00001D": in_transit}).detected == []


def test_a_truck_without_a_manifest_leaving_its_site_loaded_is_found() -> None:
    result = Evaluator(GEOGRAPHY).evaluate([fix(0, 0, load="empty"), fix(30, 0), fix(60, 400)], {})
    assert [d.finding.kind for d in result.detected] == [ViolationKind.LEFT_WITHOUT_MANIFEST]
    assert result.detected[0].manifest is None
    assert result.steps == []


def test_a_route_not_in_the_register_measures_no_corridor() -> None:
    unknown_route = Carried("m-1", "MF-1", ManifestStatus.IN_TRANSIT, "SITE", "DUMP", "GONE", "440106")
    off = [fix(i * 30, 1_000, north=500) for i in range(25)]
    assert Evaluator(GEOGRAPHY).evaluate(off, {"粤A00001D": unknown_route}).detected == []


@pytest.mark.parametrize(("hour", "allowed"), [(19, False), (20, True), (23, True), (0, False)])
def test_the_window_of_an_area(hour: int, allowed: bool) -> None:
    assert GEOGRAPHY.in_window(T0.replace(hour=hour), frozenset({"CENTRE"})) is allowed
    assert GEOGRAPHY.in_window(T0.replace(hour=hour), frozenset()) is True
