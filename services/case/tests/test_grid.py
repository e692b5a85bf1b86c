"""The unit grid (单元网格): codes, cells, point location, GeoJSON import and the demo city grid."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from contract.common import GUANGZHOU_DISTRICTS
from services.case.domain.demo_grid import DISTRICT_BOXES, DISTRICT_NAMES, demo_cells
from services.case.domain.grid import (
    GridCell,
    GridCode,
    GridIndex,
    Polygon,
    cells_from_geojson,
    haversine_m,
)

CITY_CENTRE = (113.264, 23.129)
TIANHE_POINT = (113.3245, 23.1291)
CITY_BOUNDS = (112.95, 22.55, 114.05, 23.95)


def square(code, x0, y0, size=0.01, **kwargs):
    ring = [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]
    return GridCell.of(code, f"cell {code}", ring, **kwargs)


def code_at(index, lon, lat):
    cell = index.locate(lon, lat)
    return None if cell is None else cell.code.value


def brute_force(cells, lon, lat):
    containing = [cell for cell in cells if cell.contains(lon, lat)]
    return min(containing, key=lambda cell: cell.code) if containing else None


@pytest.fixture(scope="module")
def demo():
    return demo_cells()


@pytest.fixture(scope="module")
def demo_index(demo):
    return GridIndex.build(demo)


# --- codes -------------------------------------------------------------------------------------


def test_a_grid_code_reads_as_district_street_community_and_sequence():
    code = GridCode.parse("440106003002007")
    assert code.district == "440106"
    assert code.street == "440106003"
    assert code.community == "440106003002"
    assert code.sequence == "007"
    assert str(code) == "440106003002007"


def test_each_level_of_the_hierarchy_is_a_prefix_of_the_next():
    code = GridCode("440104001008010")
    assert code.value.startswith(code.community)
    assert code.community.startswith(code.street)
    assert code.street.startswith(code.district)


def test_parsing_forgives_surrounding_whitespace_only():
    assert GridCode.parse("  440106003002007\n") == GridCode("440106003002007")


def test_codes_sort_by_their_digits():
    codes = [GridCode("440106001001002"), GridCode("440104009009009"), GridCode("440106001001001")]
    assert [c.value for c in sorted(codes)] == ["440104009009009", "440106001001001", "440106001001002"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "44010600100100",  # 14 digits
        "4401060010010070",  # 16 digits
        "44010600100100A",
        "440106 003002007",
        "440106-003-002-007",
        "４４０１０６００３００２００７",  # full-width digits
        "٤٤٠١٠٦٠٠٣٠٠٢٠٠٧",  # Arabic-Indic digits
    ],
)
def test_a_code_that_is_not_fifteen_ascii_digits_is_refused(text):
    with pytest.raises(ValueError, match="15"):
        GridCode.parse(text)


def test_a_non_string_code_is_refused():
    with pytest.raises(ValueError, match="string"):
        GridCode.parse(440106003002007)  # type: ignore[arg-type]


# --- point in cell -----------------------------------------------------------------------------


def test_a_point_inside_a_cell_resolves_to_it_and_a_point_outside_to_nothing():
    index = GridIndex.build([square("440106001001001", 113.30, 23.10)])
    assert code_at(index, 113.305, 23.105) == "440106001001001"
    assert index.locate(113.315, 23.105) is None
    assert index.locate(113.305, 23.0999) is None


def test_a_point_on_a_shared_edge_goes_to_the_lower_code_whatever_the_input_order():
    left = square("440106001001002", 113.30, 23.10)
    right = square("440106001001001", 113.31, 23.10)
    for cells in ([left, right], [right, left]):
        index = GridIndex.build(cells)
        assert code_at(index, 113.31, 23.105) == "440106001001001"
    assert left.contains(113.31, 23.105)
    assert right.contains(113.31, 23.105)


def test_a_point_on_a_vertex_shared_by_four_cells_goes_to_the_lowest_code():
    cells = [
        square("440106001001004", 113.30, 23.10),
        square("440106001001003", 113.31, 23.10),
        square("440106001001002", 113.30, 23.11),
        square("440106001001001", 113.31, 23.11),
    ]
    assert code_at(GridIndex.build(cells), 113.31, 23.11) == "440106001001001"


def test_a_point_on_the_outer_edge_of_the_grid_is_inside():
    index = GridIndex.build([square("440106001001001", 113.30, 23.10)])
    for lon, lat in [(113.30, 23.105), (113.31, 23.105), (113.305, 23.10), (113.305, 23.11), (113.31, 23.11)]:
        assert index.locate(lon, lat) is not None, (lon, lat)


def test_a_point_in_a_hole_is_not_in_the_cell_but_the_hole_edge_is():
    ring = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    hole = [(4.0, 4.0), (6.0, 4.0), (6.0, 6.0), (4.0, 6.0)]
    index = GridIndex.build([GridCell.of("440106001001001", "ring", ring, holes=[hole])])
    assert index.locate(5.0, 5.0) is None
    assert index.locate(4.0, 5.0) is not None
    assert index.locate(2.0, 5.0) is not None


def test_an_island_cell_filling_a_hole_owns_the_hole():
    ring = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    hole = [(4.0, 4.0), (6.0, 4.0), (6.0, 6.0), (4.0, 6.0)]
    outer = GridCell.of("440106001001002", "ring", ring, holes=[hole])
    island = GridCell.of("440106001001003", "island", hole)
    index = GridIndex.build([outer, island])
    assert index.locate(5.0, 5.0) is island
    assert index.locate(2.0, 5.0) is outer
    assert index.locate(4.0, 5.0) is outer  # on the shared edge: the lower code


def test_a_concave_cell_excludes_its_notch_even_where_the_ray_grazes_vertices():
    # A U shape: the notch between the arms is outside.
    u_shape = [(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)]
    cell = GridCell.of("440106001001001", "U", u_shape)
    index = GridIndex.build([cell])
    assert index.locate(1.5, 2.0) is None  # in the notch
    assert index.locate(1.5, 0.5) is cell  # in the base
    assert index.locate(0.5, 2.0) is cell  # left arm
    assert index.locate(2.5, 2.0) is cell  # right arm
    assert index.locate(0.5, 1.0) is cell  # at the height of the notch's floor vertices
    assert index.locate(1.5, 1.0) is cell  # on the notch's floor
    assert index.locate(-0.5, 1.0) is None  # left of the shape, ray through two vertices
    assert index.locate(0.5, 3.0) is cell  # on the top edge of the arm
    assert index.locate(1.5, 3.0) is None  # above the notch, level with the arm tops


def test_rings_may_be_closed_or_open_and_in_either_orientation():
    open_ccw = GridCell.of("440106001001001", "a", [(0, 0), (1, 0), (1, 1), (0, 1)])
    closed_cw = GridCell.of("440106001001001", "a", [(0, 0), (0, 1), (1, 1), (1, 0), (0, 0)])
    assert open_ccw == closed_cw
    assert open_ccw.bbox == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("ring", "reason"),
    [
        ([(0, 0), (1, 1)], "3 distinct"),
        ([(0, 0), (1, 1), (0, 0), (1, 1)], "3 distinct"),
        ([(0, 0), (1, 1), (2, 2)], "zero area"),
        ([(113.3, 23.1), (113.31, 23.13), (113.33, 23.19)], "zero area"),  # collinear, inexact in floats
        ([(0, 0), (2, 2), (2, 0), (0, 1)], "not simple"),  # bow-tie
        ([(0, 0), (2, 0), (2, 2), (2, 1)], "not simple"),  # spike back along an edge
        ([(0, 0), (181, 0), (1, 1)], "outside longitude"),
        ([(0, 0), (1, 91), (1, 1)], "outside longitude"),
        ([(0, 0), (math.nan, 0), (1, 1)], "non-finite"),
    ],
)
def test_invalid_rings_are_refused(ring, reason):
    with pytest.raises(ValueError, match=reason):
        GridCell.of("440106001001001", "bad", ring)


def test_a_hole_outside_its_outer_ring_is_refused():
    with pytest.raises(ValueError, match="outside the outer ring"):
        GridCell.of(
            "440106001001001",
            "bad",
            [(0, 0), (1, 0), (1, 1), (0, 1)],
            holes=[[(2, 2), (3, 2), (3, 3)]],
        )


def test_overlapping_parts_of_one_cell_are_refused():
    a = Polygon(((0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)))
    b = Polygon(((1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (1.0, 3.0)))
    with pytest.raises(ValueError, match="overlap"):
        GridCell(GridCode("440106001001001"), "bad", (a, b))


def test_points_off_the_grid_or_not_finite_resolve_to_nothing(demo_index):
    assert demo_index.locate(0.0, 0.0) is None
    assert demo_index.locate(math.nan, 23.1) is None
    assert demo_index.locate(113.3, math.inf) is None
    assert GridIndex.build([]).locate(113.3, 23.1) is None
    assert len(GridIndex.build([])) == 0


# --- the index as a whole ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x" * 201, "Tianhe\x00"], ids=["longer-than-the-table-keeps", "nul"])
def test_a_name_the_grid_table_cannot_keep_is_refused(name):
    ring = [[113.30, 23.10], [113.31, 23.10], [113.31, 23.11], [113.30, 23.11], [113.30, 23.10]]
    feature = {
        "type": "Feature",
        "properties": {"code": "440106001001001", "name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    document = {"type": "FeatureCollection", "features": [feature]}
    with pytest.raises(ValueError, match=r"properties\.name must be at most 200 characters"):
        cells_from_geojson(document)


def test_duplicate_codes_are_refused():
    a = square("440106001001001", 113.30, 23.10)
    b = square("440106001001001", 113.40, 23.10)
    with pytest.raises(ValueError, match="duplicate grid code 440106001001001"):
        GridIndex.build([a, b])
    with pytest.raises(ValueError, match="duplicate"):
        GridIndex.build([a, b], validate=False)


@pytest.mark.parametrize(
    "second",
    [
        [(113.305, 23.105), (113.315, 23.105), (113.315, 23.115), (113.305, 23.115)],  # shifted copy
        [(113.30, 23.10), (113.31, 23.10), (113.31, 23.11), (113.30, 23.11)],  # identical
        [(113.302, 23.102), (113.304, 23.102), (113.304, 23.104), (113.302, 23.104)],  # nested
        [(113.30, 23.10), (113.31, 23.10), (113.30, 23.11)],  # half of it, touching only at its corners
    ],
)
def test_overlapping_cells_are_refused_unless_the_caller_allows_them(second):
    first = square("440106001001001", 113.30, 23.10)
    other = GridCell.of("440106001001002", "other", second)
    with pytest.raises(ValueError, match="440106001001001 and 440106001001002 overlap"):
        GridIndex.build([first, other])
    index = GridIndex.build([other, first], validate=False)
    assert index.locate(*other.centroid) is first  # in both: the lower code answers


def test_cells_sharing_an_edge_or_part_of_one_do_not_overlap():
    first = square("440106001001001", 113.30, 23.10)
    beside = square("440106001001002", 113.31, 23.10)
    below_and_wider = GridCell.of(
        "440106001001003", "c", [(113.295, 23.09), (113.325, 23.09), (113.325, 23.10), (113.295, 23.10)]
    )
    assert len(GridIndex.build([first, beside, below_and_wider])) == 3


U_SHAPE = [(0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)]


@pytest.mark.parametrize(
    ("other", "overlaps"),
    [
        ([(1, 1), (2, 1), (2, 3), (1, 3)], False),  # exactly fills the notch
        ([(1, 1), (2, 1), (2, 4), (1, 4)], False),  # fills the notch and sticks out above
        ([(0.5, 1.5), (2.5, 1.5), (2.5, 3.5), (0.5, 3.5)], True),  # wider than the notch
        (U_SHAPE, True),  # the same concave shape under another code
        ([(0, 0), (3, 0), (3, 1), (0, 1)], True),  # the U's base: boundaries touch, never cross
        ([(3, 0), (4, 0), (4, 1.5), (3.5, 1), (3, 3)], False),  # concave neighbour on the right
    ],
)
def test_concave_cells_are_checked_for_overlap_exactly(other, overlaps):
    cells = [GridCell.of("440106001001001", "U", U_SHAPE), GridCell.of("440106001001002", "other", other)]
    if overlaps:
        with pytest.raises(ValueError, match="overlap"):
            GridIndex.build(cells)
    else:
        assert len(GridIndex.build(cells)) == 2


@pytest.mark.parametrize("big_code", ["440106001001000", "440106999999999"])
def test_an_oversized_cell_among_small_ones_is_found_like_any_other(big_code):
    small = [
        square(f"440106001{i + 1:03d}{j + 1:03d}", 0.1 * i, 0.1 * j, size=0.1)
        for i in range(10)
        for j in range(10)
    ]
    big = GridCell.of(big_code, "big", [(1.0, 0.0), (11.0, 0.0), (11.0, 10.0), (1.0, 10.0)])
    cells = [*small, big]
    index = GridIndex.build(cells)
    rng = random.Random(42)
    points = [(rng.uniform(-0.5, 11.5), rng.uniform(-0.5, 10.5)) for _ in range(500)]
    points += [(1.0, 0.05 * j) for j in range(21)]  # the edge the big cell shares with small ones
    for lon, lat in points:
        assert index.locate(lon, lat) == brute_force(cells, lon, lat), (lon, lat)
    # On the shared edge x = 1.0 the lower code wins: the big cell or the small one west of it.
    expected = big_code if big_code < "440106001010006" else "440106001010006"
    assert code_at(index, 1.0, 0.55) == expected
    assert index.cells_within(5.0, 5.0, 1_000) == [big]


def test_the_index_lists_and_finds_cells_by_code():
    cells = [square("440106001001002", 113.30, 23.10), square("440106001001001", 113.31, 23.10)]
    index = GridIndex.build(cells)
    assert len(index) == 2
    assert [c.code.value for c in index] == ["440106001001001", "440106001001002"]
    assert index.get("440106001001002") is cells[0]
    assert index.get(GridCode("440106001001001")) is cells[1]
    assert index.get("440106009009009") is None
    assert index.bounds == pytest.approx((113.30, 23.10, 113.32, 23.11))


def test_district_of_reads_the_district_from_the_cell_code():
    index = GridIndex.build([square("440106001001001", 113.30, 23.10)])
    assert index.district_of(113.305, 23.105) == "440106"
    assert index.district_of(113.5, 23.5) is None


def test_cells_within_a_radius_are_listed_nearest_first():
    cells = [square(f"44010600100100{n}", 113.30 + 0.01 * n, 23.10) for n in range(1, 5)]
    index = GridIndex.build(cells)
    point = (113.315, 23.105)  # centre of cell 1 (x 113.31..113.32)
    assert [c.code.value for c in index.cells_within(*point, 0)] == ["440106001001001"]
    near = index.cells_within(*point, 600)  # about 512 m to each neighbour's edge
    assert [c.code.value for c in near] == ["440106001001001", "440106001001002"]
    assert len(index.cells_within(*point, 2_000)) == 3  # the fourth is ~2.56 km away
    assert len(index.cells_within(*point, 3_000)) == 4
    assert index.cells_within(0.0, 0.0, 1_000) == []
    with pytest.raises(ValueError, match="radius_m"):
        index.cells_within(*point, -1)


def test_cells_within_agrees_with_a_scan_of_all_cells(demo, demo_index):
    rng = random.Random(42)
    for _ in range(50):
        lon, lat = rng.uniform(113.2, 113.5), rng.uniform(23.0, 23.3)
        radius = rng.choice([0, 50, 500, 3_000])
        expected = sorted(
            (cell for cell in demo if cell.distance_m(lon, lat) <= radius),
            key=lambda cell: (cell.distance_m(lon, lat), cell.code),
        )
        assert demo_index.cells_within(lon, lat, radius) == expected


# --- the index agrees with brute force ---------------------------------------------------------


def test_the_index_agrees_with_a_scan_of_all_cells_at_random_points(demo, demo_index):
    rng = random.Random(42)
    min_lon, min_lat, max_lon, max_lat = CITY_BOUNDS
    for _ in range(3_000):
        lon, lat = rng.uniform(min_lon, max_lon), rng.uniform(min_lat, max_lat)
        assert demo_index.locate(lon, lat) == brute_force(demo, lon, lat), (lon, lat)


def test_the_index_agrees_with_a_scan_of_all_cells_on_vertices_and_edges(demo, demo_index):
    rng = random.Random(42)
    for cell in rng.sample(demo, 500):
        ring = cell.polygons[0].outer
        (ax, ay), (bx, by) = ring[0], ring[1]
        t = rng.random()
        for lon, lat in [(ax, ay), (ax + t * (bx - ax), ay + t * (by - ay))]:
            found = demo_index.locate(lon, lat)
            assert found is not None
            assert found == brute_force(demo, lon, lat), (lon, lat)
            assert found.code <= cell.code


# --- the demo grid of Guangzhou ----------------------------------------------------------------


def test_the_demo_boxes_name_exactly_the_eleven_districts():
    assert set(DISTRICT_BOXES) == set(GUANGZHOU_DISTRICTS)
    assert set(DISTRICT_NAMES) == set(GUANGZHOU_DISTRICTS)


def test_the_demo_boxes_lie_within_the_city_and_never_overlap():
    min_lon, min_lat, max_lon, max_lat = CITY_BOUNDS
    for x0, y0, x1, y1 in DISTRICT_BOXES.values():
        assert min_lon <= x0 < x1 <= max_lon
        assert min_lat <= y0 < y1 <= max_lat
    for (a, (ax0, ay0, ax1, ay1)), (b, (bx0, by0, bx1, by1)) in itertools.combinations(
        DISTRICT_BOXES.items(), 2
    ):
        apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
        assert apart, f"{a} and {b} overlap"


def test_the_demo_grid_covers_all_eleven_districts_with_unique_codes(demo):
    assert {cell.code.district for cell in demo} == set(GUANGZHOU_DISTRICTS)
    assert len({cell.code for cell in demo}) == len(demo)
    per_district = {d: sum(1 for c in demo if c.code.district == d) for d in GUANGZHOU_DISTRICTS}
    assert all(360 <= count <= 440 for count in per_district.values()), per_district


def test_the_demo_grid_is_the_same_on_every_call(demo):
    assert demo_cells() == demo
    assert [c.code for c in demo] == sorted(c.code for c in demo)


def test_the_demo_names_follow_the_codes(demo):
    cell = next(c for c in demo if c.code.value == "440106003002007")
    assert cell.name == "天河区 第3街道 第2社区 网格007"
    assert cell.street_name == "第3街道"
    assert cell.community_name == "第2社区"
    for cell in demo:
        assert cell.name.startswith(DISTRICT_NAMES[cell.code.district])


def test_the_demo_grid_passes_validation_and_stays_in_its_district_boxes(demo, demo_index):
    assert len(demo_index) == len(demo)
    for cell in demo:
        x0, y0, x1, y1 = DISTRICT_BOXES[cell.code.district]
        cx0, cy0, cx1, cy1 = cell.bbox
        assert x0 <= cx0 < cx1 <= x1
        assert y0 <= cy0 < cy1 <= y1


def test_the_city_centre_is_in_yuexiu_and_the_reference_point_in_tianhe(demo_index):
    assert demo_index.district_of(*CITY_CENTRE) == "440104"
    assert demo_index.district_of(*TIANHE_POINT) == "440106"


def test_every_demo_cell_centroid_locates_back_to_that_cell(demo, demo_index):
    for cell in demo:
        assert demo_index.locate(*cell.centroid) is cell


def test_a_larger_demo_keeps_codes_within_three_digits_per_level():
    cells = demo_cells(3_000)
    assert len({c.code for c in cells}) == len(cells)
    assert max(int(c.code.value[6:9]) for c in cells) <= 999
    assert max(int(c.code.sequence) for c in cells) <= 16


def test_a_demo_needs_at_least_one_cell_per_district():
    with pytest.raises(ValueError, match="at least 1"):
        demo_cells(0)


# --- GeoJSON -----------------------------------------------------------------------------------


def feature(code, geometry, **properties):
    props = {"code": code, **properties} if code is not None else dict(properties)
    return {"type": "Feature", "properties": props, "geometry": geometry}


SQUARE = [[113.30, 23.10], [113.31, 23.10], [113.31, 23.11], [113.30, 23.11], [113.30, 23.10]]
HOLE = [[113.304, 23.104], [113.306, 23.104], [113.306, 23.106], [113.304, 23.106], [113.304, 23.104]]
EAST = [[113.32, 23.10], [113.33, 23.10], [113.33, 23.11], [113.32, 23.11]]  # open ring: closable
FAR_EAST = [[113.34, 23.10], [113.35, 23.10], [113.35, 23.11], [113.34, 23.11], [113.34, 23.10]]


def collection(*features, **extra):
    return {"type": "FeatureCollection", "features": list(features), **extra}


def test_geojson_polygons_and_multipolygons_become_cells():
    document = collection(
        feature(
            "440106001001001",
            {"type": "Polygon", "coordinates": [SQUARE, HOLE]},
            name="天河区 网格001",
            street_name="第1街道",
            community_name="第1社区",
        ),
        feature("440106001001002", {"type": "MultiPolygon", "coordinates": [[EAST], [FAR_EAST]]}),
    )
    first, second = cells_from_geojson(document)
    assert first.code == GridCode("440106001001001")
    assert (first.name, first.street_name, first.community_name) == ("天河区 网格001", "第1街道", "第1社区")
    assert len(first.polygons[0].holes) == 1
    assert second.name == "440106001001002"  # the code stands in for a missing name
    assert len(second.polygons) == 2
    index = GridIndex.build([first, second])
    assert index.locate(113.302, 23.102) is first
    assert index.locate(113.305, 23.105) is None  # in the hole
    assert index.locate(113.325, 23.105) is second
    assert index.locate(113.345, 23.105) is second  # the other part of the same cell
    assert index.locate(113.315, 23.105) is None


@pytest.mark.parametrize(
    "crs",
    [
        None,
        {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        {"type": "name", "properties": {"name": "EPSG:4326"}},
        {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},  # CGCS2000
    ],
)
def test_geojson_in_wgs84_or_cgcs2000_is_accepted(crs):
    document = collection(feature("440106001001001", {"type": "Polygon", "coordinates": [SQUARE]}), crs=crs)
    assert len(cells_from_geojson(document)) == 1


@pytest.mark.parametrize(
    "crs",
    [
        {"type": "name", "properties": {"name": "EPSG:3857"}},
        {"type": "name", "properties": {"name": "GCJ-02"}},
        {"type": "name", "properties": {}},
        "BD-09",
    ],
)
def test_geojson_in_any_other_crs_is_refused(crs):
    document = collection(feature("440106001001001", {"type": "Polygon", "coordinates": [SQUARE]}), crs=crs)
    with pytest.raises(ValueError, match="not WGS84"):
        cells_from_geojson(document)


POLYGON = {"type": "Polygon", "coordinates": [SQUARE]}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (feature(None, POLYGON), "code"),
        (feature("44010600100100", POLYGON), "15"),
        (feature(440106001001001.0, POLYGON), "code must be a string"),
        (feature("440106001001002", {"type": "Point", "coordinates": [113.3, 23.1]}), "not Polygon"),
        (feature("440106001001002", None), "geometry is missing"),
        (
            feature("440106001001002", {"type": "Polygon", "coordinates": [[[113.3, 23.1], [113.31, 23.1]]]}),
            "3 distinct",
        ),
        (
            feature(
                "440106001001002",
                {"type": "Polygon", "coordinates": [[[113.3, 23.1], [113.31, 23.1], [113.3, 23.1]]]},
            ),
            "3 distinct",
        ),
        (
            feature(
                "440106001001002",
                {"type": "Polygon", "coordinates": [[[113.3, 23.1], [113.31, 23.1], [113.32, 23.1]]]},
            ),
            "degenerate",
        ),
        (
            feature(
                "440106001001002",
                {"type": "Polygon", "coordinates": [[[213.3, 23.1], [113.31, 23.1], [113.3, 23.2]]]},
            ),
            "outside longitude",
        ),
        (
            feature(
                "440106001001002",
                {"type": "Polygon", "coordinates": [[[113.3, 93.1], [113.31, 23.1], [113.3, 23.2]]]},
            ),
            "outside longitude",
        ),
        (
            feature(
                "440106001001002",
                {"type": "Polygon", "coordinates": [[[113.3, "23.1"], [113.31, 23.1], [113.3, 23.2]]]},
            ),
            "non-numeric latitude",
        ),
        (feature("440106001001002", {"type": "Polygon", "coordinates": []}), "list of rings"),
        (feature("440106001001002", {"type": "MultiPolygon", "coordinates": []}), "non-empty"),
        (feature("440106001001002", POLYGON, name=7), "name must be a string"),
        ({"type": "Point"}, "not a GeoJSON Feature"),
        (feature("440106001001001", POLYGON), "already used by feature 0"),
    ],
)
def test_a_bad_feature_is_refused_naming_its_index_and_the_reason(bad, reason):
    good = feature("440106001001001", {"type": "Polygon", "coordinates": [SQUARE]})
    with pytest.raises(ValueError, match=reason) as refused:
        cells_from_geojson(collection(good, bad))
    assert str(refused.value).startswith("feature 1")


def test_a_geojson_code_given_as_a_json_integer_is_accepted():
    (cell,) = cells_from_geojson(collection(feature(440106001001001, POLYGON)))
    assert cell.code.value == "440106001001001"


def test_a_document_that_is_not_a_feature_collection_is_refused():
    with pytest.raises(ValueError, match="FeatureCollection"):
        cells_from_geojson({"type": "Feature", "geometry": POLYGON})
    with pytest.raises(ValueError, match="features"):
        cells_from_geojson({"type": "FeatureCollection"})


def test_the_demo_grid_survives_a_geojson_round_trip_in_either_ring_orientation():
    cells = demo_cells(20)
    document = collection(
        *(
            feature(
                cell.code.value,
                {"type": "Polygon", "coordinates": [[list(p) for p in reversed(cell.polygons[0].outer)]]},
                name=cell.name,
                street_name=cell.street_name,
                community_name=cell.community_name,
            )
            for cell in cells
        )
    )
    assert cells_from_geojson(document) == cells


# --- distances ---------------------------------------------------------------------------------


def test_a_thousandth_of_a_degree_of_latitude_is_about_111_metres():
    assert haversine_m(113.264, 23.129, 113.264, 23.130) == pytest.approx(111.19, abs=0.01)


@pytest.mark.parametrize(
    ("a", "b", "metres"),
    [
        ((0.0, 0.0), (1.0, 0.0), 111_195),  # a degree of longitude on the equator
        ((0.0, 0.0), (0.0, 90.0), 10_007_557),  # equator to pole
        ((0.0, 0.0), (180.0, 0.0), 20_015_115),  # antipodes
        ((113.264, 23.129), (113.3245, 23.1291), 6_189),  # Yuexiu to Tianhe, about 6.2 km
    ],
)
def test_haversine_matches_known_distances(a, b, metres):
    assert haversine_m(*a, *b) == pytest.approx(metres, rel=1e-3)


def test_haversine_is_symmetric_and_zero_on_the_same_point():
    assert haversine_m(*CITY_CENTRE, *CITY_CENTRE) == 0.0
    assert haversine_m(*CITY_CENTRE, *TIANHE_POINT) == haversine_m(*TIANHE_POINT, *CITY_CENTRE)


def test_a_cell_area_is_reported_in_square_metres():
    cell = square("440106001001001", 113.30, 23.10, size=0.001)  # ~102 m x 111 m
    expected = 0.001 * 0.001 * 111_195**2 * math.cos(math.radians(23.1005))
    assert cell.area_m2 == pytest.approx(expected, rel=1e-5)


def test_an_index_built_a_slice_at_a_time_is_the_index_built_at_once(demo, demo_index):
    """``build_stepwise`` is how a serving process indexes a new grid between its requests."""
    building = GridIndex.build_stepwise(reversed(demo), step=100)
    pauses = 0
    while True:
        try:
            next(building)
        except StopIteration as done:
            stepwise = done.value
            break
        pauses += 1
    assert pauses > 2 * len(demo) // 100  # codes, then buckets: a pause every 100 items
    assert len(stepwise) == len(demo_index)
    assert list(stepwise) == list(demo_index)
    assert stepwise.bounds == demo_index.bounds
    rng = random.Random(7)
    x0, y0, x1, y1 = demo_index.bounds
    for _ in range(2_000):
        lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        assert stepwise.locate(lon, lat) is demo_index.locate(lon, lat)
    assert [c.code for c in stepwise.cells_within(113.3245, 23.1291, 500)] == [
        c.code for c in demo_index.cells_within(113.3245, 23.1291, 500)
    ]


def test_a_stepwise_build_refuses_duplicate_codes_and_a_step_below_one(demo):
    with pytest.raises(ValueError, match="duplicate grid code"):
        list(GridIndex.build_stepwise([demo[0], demo[0]]))
    with pytest.raises(ValueError, match="step"):
        list(GridIndex.build_stepwise(demo, step=0))
