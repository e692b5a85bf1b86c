"""A track thinned for display: the indices Douglas–Peucker keeps, in metres, first and last always."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from services.muck.domain.geofences import projection
from services.muck.domain.tracks import simplify
from services.muck.domain.windows import CITY_TZ

T0 = datetime(2026, 12, 1, 20, 0, tzinfo=CITY_TZ)
LON, LAT = 113.32, 23.12


def track(offsets_m: list[tuple[float, float]]) -> list[tuple[datetime, float, float]]:
    """Positions 30 s apart at these (east, north) metre offsets from (LON, LAT)."""
    x0, y0 = projection().to_metres(LON, LAT)
    lons, lats = projection().to_degrees(
        x0 + np.array([dx for dx, _ in offsets_m]), y0 + np.array([dy for _, dy in offsets_m])
    )
    return [
        (T0 + timedelta(seconds=30 * i), float(lon), float(lat))
        for i, (lon, lat) in enumerate(zip(lons, lats, strict=True))
    ]


def test_no_points_keep_nothing():
    assert simplify([], 5.0) == []


def test_one_point_is_kept():
    assert simplify(track([(0, 0)]), 5.0) == [0]


def test_two_points_are_both_kept_even_when_they_are_one_place():
    assert simplify(track([(0, 0), (100, 0)]), 5.0) == [0, 1]
    assert simplify(track([(0, 0), (0, 0)]), 5.0) == [0, 1]


def test_a_straight_line_of_100_points_keeps_its_two_ends():
    assert simplify(track([(10.0 * i, 0.0) for i in range(100)]), 1.0) == [0, 99]


def test_an_l_keeps_its_ends_and_its_corner():
    east = [(10.0 * i, 0.0) for i in range(50)]  # 0..490 m east
    north = [(490.0, 10.0 * i) for i in range(1, 50)]  # then north
    assert simplify(track(east + north), 1.0) == [0, 49, 98]


def test_a_parked_truck_then_a_move_keeps_the_first_the_corner_and_the_last():
    parked = [(0.0, 0.0)] * 50  # 25 minutes standing still
    east = [(10.0 * i, 0.0) for i in range(1, 30)]  # indices 50..78, the corner at 78
    north = [(290.0, 10.0 * i) for i in range(1, 30)]  # 79..107
    assert simplify(track(parked + east + north), 1.0) == [0, 78, 107]


def test_a_truck_parked_at_the_end_keeps_its_last_position():
    points = [(10.0 * i, 0.0) for i in range(30)] + [(290.0, 0.0)] * 20
    assert simplify(track(points), 1.0) == [0, 49]


def test_a_truck_parked_all_along_keeps_its_two_ends():
    assert simplify(track([(0.0, 0.0)] * 50), 1.0) == [0, 49]


def test_a_round_trip_keeps_the_turning_point():
    out_and_back = [(10.0 * i, 0.0) for i in range(50)] + [(10.0 * i, 0.0) for i in range(48, -1, -1)]
    assert simplify(track(out_and_back), 1.0) == [0, 49, 98]


def test_a_deviation_within_the_tolerance_is_dropped_and_one_beyond_it_kept():
    wobble = [(10.0 * i, 0.0) for i in range(20)]
    wobble[10] = (100.0, 4.0)
    assert simplify(track(wobble), 5.0) == [0, 19]
    assert simplify(track(wobble), 3.0) == [0, 9, 10, 11, 19]


def test_the_kept_indices_of_a_wandering_track_are_strictly_increasing_and_keep_both_ends():
    rng = np.random.default_rng(808)
    steps = rng.normal(0, 40, size=(500, 2))
    steps[100:160] = 0  # a stop
    offsets = np.cumsum(steps, axis=0)
    points = track([(float(x), float(y)) for x, y in offsets])
    kept = simplify(points, 15.0)
    assert kept[0] == 0
    assert kept[-1] == len(points) - 1
    assert all(a < b for a, b in pairwise(kept))
    assert 2 < len(kept) < len(points)


def test_a_zero_tolerance_keeps_every_turn():
    zigzag = [(10.0 * i, 10.0 * (i % 2)) for i in range(10)]
    assert simplify(track(zigzag), 0.0) == list(range(10))


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_a_tolerance_must_be_a_non_negative_number_of_metres(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        simplify(track([(0, 0), (1, 1), (2, 0)]), tolerance)
