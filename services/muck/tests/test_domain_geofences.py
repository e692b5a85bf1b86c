"""Sites and corridors in metres: containment with the boundary inside, distances to a corridor, and
batch answers that equal one-by-one ones."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import shapely

from services.muck.domain.geofences import (
    Corridor,
    CorridorIndex,
    Site,
    SiteIndex,
    entered_and_exited,
    projection,
)

# Near Zhujiang New Town, Guangzhou.
LON, LAT = 113.32, 23.12


@cache
def origin() -> tuple[float, float]:
    return projection().to_metres(LON, LAT)


def near(dx_m: float, dy_m: float) -> tuple[float, float]:
    """The lon/lat ``dx_m`` east and ``dy_m`` north of (LON, LAT), offset in projected metres."""
    x, y = origin()
    return projection().to_degrees(x + dx_m, y + dy_m)


def square(
    site_id: str, dx_m: float = 0.0, dy_m: float = 0.0, side_m: float = 100.0, kind="construction"
) -> Site:
    corners = [(0, 0), (side_m, 0), (side_m, side_m), (0, side_m)]
    return Site(site_id, kind, [near(dx_m + x, dy_m + y) for x, y in corners])


SQUARE = SiteIndex([square("GZ-TH-0001")])


# -- the projection ---------------------------------------------------------------------------------


def test_guangzhou_projects_to_utm_zone_49n_metres():
    x, y = projection().to_metres(LON, LAT)
    assert 737_000 < x < 738_000  # 2.3° east of the zone's 111°E meridian, false easting 500 km
    assert 2_558_000 < y < 2_559_000


def test_projection_is_built_once():
    assert projection() is projection()


def test_the_projection_of_arrays_equals_that_of_each_point():
    rng = np.random.default_rng(7)
    lons, lats = LON + rng.uniform(-0.5, 0.5, 100), LAT + rng.uniform(-0.5, 0.5, 100)
    xs, ys = projection().to_metres(lons, lats)
    for lon, lat, x, y in zip(lons, lats, xs, ys, strict=True):
        assert projection().to_metres(float(lon), float(lat)) == pytest.approx((x, y), abs=1e-6)


def test_a_degree_round_trip_moves_a_point_by_less_than_a_micrometre():
    x, y = projection().to_metres(LON, LAT)
    back = projection().to_metres(*projection().to_degrees(x, y))
    assert math.dist(back, (x, y)) < 1e-6


def test_metres_in_the_projection_are_metres_on_the_ground():
    # 1 km east and 1 km north measured on the ellipsoid, within the zone's scale error there.
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    for dx, dy in ((1000.0, 0.0), (0.0, 1000.0)):
        lon, lat = near(dx, dy)
        _, _, metres = geod.inv(LON, LAT, lon, lat)
        assert metres == pytest.approx(1000.0, rel=2e-3)


# -- sites ------------------------------------------------------------------------------------------


def test_a_point_inside_a_100_m_square_site_is_in_it():
    assert SQUARE.containing(*near(50, 50)) == {"GZ-TH-0001"}


@pytest.mark.parametrize(("dx", "dy"), [(0, 50), (100, 50), (50, 0), (50, 100), (0, 0), (100, 100)])
def test_a_point_on_the_edge_of_a_site_counts_as_inside(dx, dy):
    assert SQUARE.containing(*near(dx, dy)) == {"GZ-TH-0001"}


@pytest.mark.parametrize(("dx", "dy"), [(-1, 50), (101, 50), (50, -1), (50, 101), (-1, -1)])
def test_a_point_1_m_outside_a_site_is_not_in_it(dx, dy):
    assert SQUARE.containing(*near(dx, dy)) == frozenset()


def test_a_ring_may_be_given_closed_or_open():
    open_ring = square("A")
    closed_ring = Site("A", "construction", [*open_ring.ring, open_ring.ring[0]])
    point = near(50, 50)
    assert SiteIndex([open_ring]).containing(*point) == SiteIndex([closed_ring]).containing(*point) == {"A"}


def test_overlapping_sites_are_all_named():
    index = SiteIndex([square("A"), square("B", dx_m=50), square("C", dx_m=500)])
    assert index.containing(*near(75, 50)) == {"A", "B"}
    assert index.containing(*near(25, 50)) == {"A"}


def test_an_index_knows_its_disposal_sites():
    index = SiteIndex([square("A"), square("D", dx_m=500, kind="disposal")])
    assert index.disposal_sites == {"D"}
    assert index.kinds == {"A": "construction", "D": "disposal"}
    assert len(index) == 2


def test_a_self_intersecting_boundary_is_refused_naming_its_site():
    bow_tie = [near(0, 0), near(100, 100), near(100, 0), near(0, 100)]
    with pytest.raises(ValueError, match=r"site GZ-TH-0009: .*not a simple polygon"):
        SiteIndex([Site("GZ-TH-0009", "construction", bow_tie)])


@pytest.mark.parametrize(
    "ring",
    [[], [near(0, 0), near(100, 0)], [near(0, 0), near(100, 0), near(0, 0)], [near(0, 0)] * 5],
)
def test_a_boundary_of_fewer_than_three_distinct_points_is_refused_naming_its_site(ring):
    with pytest.raises(ValueError, match="site GZ-TH-0008: a boundary needs at least three distinct points"):
        SiteIndex([Site("GZ-TH-0008", "construction", ring)])


def test_a_flat_boundary_is_refused():
    with pytest.raises(ValueError, match="site F:"):
        SiteIndex([Site("F", "construction", [near(0, 0), near(50, 0), near(100, 0)])])


@pytest.mark.parametrize("point", [(float("nan"), LAT), (LON, 91.0), (181.0, LAT)])
def test_a_boundary_with_an_impossible_point_is_refused(point):
    with pytest.raises(ValueError, match="site X:"):
        SiteIndex([Site("X", "construction", [near(0, 0), near(100, 0), point])])


def test_a_site_given_twice_is_refused():
    with pytest.raises(ValueError, match="site A is given twice"):
        SiteIndex([square("A"), square("A", dx_m=500)])


def test_an_empty_index_contains_nothing():
    index = SiteIndex([])
    assert index.containing(LON, LAT) == frozenset()
    assert index.containing_many([LON, LON], [LAT, LAT]) == [frozenset(), frozenset()]


def test_an_empty_batch_has_an_empty_answer():
    assert SQUARE.containing_many([], []) == []


def test_an_str_tree_of_3000_sites_answers_as_a_check_of_every_site_would():
    rng = np.random.default_rng(2026)
    sites = [
        square(
            f"S{i:04d}",
            dx_m=rng.uniform(-20_000, 20_000),
            dy_m=rng.uniform(-20_000, 20_000),
            side_m=rng.uniform(50, 800),
        )
        for i in range(3000)
    ]
    index = SiteIndex(sites)
    dx, dy = rng.uniform(-20_000, 20_000, 2000), rng.uniform(-20_000, 20_000, 2000)
    x0, y0 = origin()
    lons, lats = projection().to_degrees(x0 + dx, y0 + dy)

    found = index.containing_many(lons, lats)

    # Brute force: every site's polygon against every point, no index.
    points = shapely.points(*projection().to_metres(lons, lats))
    inside = np.array(
        [
            shapely.covers(
                shapely.Polygon(np.column_stack(projection().to_metres(*np.array(s.ring).T))), points
            )
            for s in sites
        ]
    )
    brute = [frozenset(sites[i].id for i in np.flatnonzero(inside[:, p])) for p in range(len(lons))]
    assert found == brute
    assert sum(1 for f in found if f) > 50  # the check met sites, not only empty space
    assert found[:20] == [
        index.containing(float(lon), float(lat)) for lon, lat in zip(lons[:20], lats[:20], strict=True)
    ]


def test_entering_and_exiting_are_the_set_differences():
    entered, exited = entered_and_exited(frozenset({"A", "B"}), frozenset({"B", "C"}))
    assert entered == {"C"}
    assert exited == {"A"}
    assert entered_and_exited(frozenset({"A"}), frozenset({"A"})) == (frozenset(), frozenset())


# -- corridors --------------------------------------------------------------------------------------

# A straight street 1 km long, east–west, the corridor 20 m wide.
STREET = CorridorIndex([Corridor("R-001", [near(0, 0), near(1000, 0)], 20.0)])


@pytest.mark.parametrize(("dx", "dy"), [(500, 0), (500, 10), (500, -10), (0, 0), (1000, 5), (-9, 0)])
def test_a_point_within_half_the_width_of_the_line_is_in_the_corridor(dx, dy):
    assert STREET.distance_m("R-001", *near(dx, dy)) == pytest.approx(0.0, abs=1e-6)


def test_a_point_60_m_from_the_centre_line_is_50_m_from_the_corridor():
    assert STREET.distance_m("R-001", *near(500, 60)) == pytest.approx(50.0, abs=0.5)
    assert STREET.distance_m("R-001", *near(500, -60)) == pytest.approx(50.0, abs=0.5)


def test_beyond_the_ends_the_corridor_is_round():
    # 60 m east of the line's end and 60 m north: 84.85 m from the end point, less the half width.
    assert STREET.distance_m("R-001", *near(1060, 60)) == pytest.approx(math.hypot(60, 60) - 10, abs=0.5)
    assert STREET.distance_m("R-001", *near(1060, 0)) == pytest.approx(50.0, abs=0.5)


def test_the_distance_agrees_with_the_buffered_corridor_polygon():
    polygon = STREET.polygon("R-001")
    x, y = projection().to_metres(*near(500, 60))
    assert STREET.distance_m("R-001", *near(500, 60)) == pytest.approx(
        polygon.distance(shapely.Point(x, y)), abs=0.1
    )


def test_distances_for_a_batch_equal_those_one_by_one_for_1000_random_points():
    rng = np.random.default_rng(11)
    index = CorridorIndex(
        [
            Corridor("R-001", [near(0, 0), near(1000, 0)], 20.0),
            Corridor("R-002", [near(0, 0), near(300, 400), near(900, 400)], 30.0),
        ]
    )
    x0, y0 = origin()
    lons, lats = projection().to_degrees(
        x0 + rng.uniform(-200, 1200, 1000), y0 + rng.uniform(-300, 700, 1000)
    )
    ids = [("R-001", "R-002")[i % 2] for i in range(1000)]

    batch = index.distances_m(ids, lons, lats)

    one_by_one = [
        index.distance_m(i, float(lon), float(lat)) for i, lon, lat in zip(ids, lons, lats, strict=True)
    ]
    assert batch.shape == (1000,)
    assert batch.tolist() == pytest.approx(one_by_one, abs=1e-9)
    assert (batch == 0).any()
    assert (batch > 100).any()


def test_an_unknown_corridor_is_a_key_error():
    with pytest.raises(KeyError, match="no corridor R-404"):
        STREET.distance_m("R-404", LON, LAT)
    with pytest.raises(KeyError, match="no corridor R-404"):
        STREET.distances_m(["R-001", "R-404"], [LON, LON], [LAT, LAT])


def test_a_batch_needs_one_corridor_per_position():
    with pytest.raises(ValueError, match="2 corridor ids for 1 positions"):
        STREET.distances_m(["R-001", "R-001"], [LON], [LAT])


def test_an_empty_batch_of_distances_is_empty():
    assert STREET.distances_m([], [], []).shape == (0,)


def test_an_index_knows_its_corridors():
    assert "R-001" in STREET
    assert "R-404" not in STREET
    assert len(STREET) == 1


@pytest.mark.parametrize("width", [0.0, -20.0, float("nan"), float("inf")])
def test_a_corridor_needs_a_positive_width(width):
    with pytest.raises(ValueError, match="corridor R-9: the width"):
        CorridorIndex([Corridor("R-9", [near(0, 0), near(100, 0)], width)])


@pytest.mark.parametrize("line", [[], [near(0, 0)], [near(0, 0), near(0, 0)]])
def test_a_corridor_needs_two_distinct_points(line):
    with pytest.raises(ValueError, match="corridor R-9: a route needs at least two distinct points"):
        CorridorIndex([Corridor("R-9", line, 20.0)])


def test_a_corridor_given_twice_is_refused():
    with pytest.raises(ValueError, match="corridor R-1 is given twice"):
        CorridorIndex([Corridor("R-1", [near(0, 0), near(100, 0)], 20.0)] * 2)


def test_a_position_without_a_fix_is_in_no_site():
    lon, lat = near(50, 50)
    found = SQUARE.containing_many([math.nan, lon, math.inf], [LAT, lat, LAT])
    assert found == [frozenset(), {"GZ-TH-0001"}, frozenset()]


def test_a_position_without_a_fix_has_no_distance_to_its_corridor():
    distances = STREET.distances_m(["R-001"] * 3, [math.nan, LON, math.inf], [LAT, LAT, LAT])
    assert math.isnan(distances[0])
    assert distances[1] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(distances[2])
