"""The alarm pipeline, gate by gate, without I/O."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.vision.domain.catalogue import Gates, Severity
from services.vision.domain.geometry import Rect, in_regions, iou, point_in_polygon
from services.vision.domain.pipeline import (
    KeyState,
    Observation,
    Outcome,
    best_outcome,
    observe,
    problem_still_there,
)

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
BOX = Rect(0.4, 0.4, 0.2, 0.2)
GATES = Gates(
    min_confidence=0.7,
    min_persistence_seconds=0,
    dedup_window_seconds=600,
    cooldown_seconds=60,
    severity=Severity.MEDIUM,
    auto_dispatch=False,
)
SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
LOWER_HALF = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]


def ids():
    counter = itertools.count(1)
    return lambda: next(counter)


def seen(
    seconds: float = 0, confidence: float = 0.9, box: Rect = BOX, track: str | None = None
) -> Observation:
    return Observation(T0 + timedelta(seconds=seconds), confidence, box, track, evidence=f"frame-{seconds}")


def run(state, observations, gates=GATES, regions=()):
    new_id = ids()
    return [observe(state, o, gates, regions, new_id)[0] for o in observations]


# -- geometry -------------------------------------------------------------------------------------


def test_iou_of_a_box_with_itself_is_one():
    assert iou(BOX, BOX) == pytest.approx(1.0)


def test_iou_of_disjoint_boxes_is_zero():
    assert iou(Rect(0, 0, 0.1, 0.1), Rect(0.5, 0.5, 0.1, 0.1)) == 0.0


def test_boxes_that_only_touch_at_an_edge_do_not_overlap():
    assert iou(Rect(0, 0, 0.5, 0.5), Rect(0.5, 0, 0.5, 0.5)) == 0.0


def test_iou_of_a_box_half_shifted_is_one_third():
    assert iou(Rect(0, 0, 0.2, 0.2), Rect(0.1, 0, 0.2, 0.2)) == pytest.approx(1 / 3)


def test_a_box_without_area_overlaps_nothing():
    assert iou(Rect(0.4, 0.4, 0.0, 0.2), BOX) == 0.0
    assert iou(Rect(0.4, 0.4, 0.0, 0.0), Rect(0.4, 0.4, 0.0, 0.0)) == 0.0


def test_a_box_inside_another_has_the_area_ratio_as_iou():
    assert iou(Rect(0, 0, 1, 1), Rect(0, 0, 0.5, 0.5)) == pytest.approx(0.25)


def test_a_point_on_the_boundary_of_a_region_is_inside():
    assert point_in_polygon((0.5, 0.5), LOWER_HALF)
    assert point_in_polygon((0.0, 0.75), LOWER_HALF)


def test_a_concave_region_excludes_its_notch():
    l_shape = [(0, 0), (1, 0), (1, 0.5), (0.5, 0.5), (0.5, 1), (0, 1)]
    assert point_in_polygon((0.25, 0.75), l_shape)
    assert not point_in_polygon((0.75, 0.75), l_shape)


def test_a_region_is_tested_with_the_bottom_centre_of_the_box():
    # The box lies mostly above the region, but it stands on the ground inside it.
    standing = Rect(0.4, 0.1, 0.2, 0.45)
    assert standing.bottom_centre == pytest.approx((0.5, 0.55))
    assert in_regions(standing, [LOWER_HALF])
    assert not in_regions(Rect(0.4, 0.1, 0.2, 0.3), [LOWER_HALF])


def test_no_region_means_the_whole_image_is_watched():
    assert in_regions(Rect(0, 0, 0.01, 0.01), [])


# -- gates ----------------------------------------------------------------------------------------


def test_a_detection_below_the_confidence_gate_is_dropped():
    state = KeyState()
    assert run(state, [seen(confidence=0.69)]) == [Outcome.BELOW_CONFIDENCE]
    assert state.items == []


def test_a_detection_at_exactly_the_confidence_gate_passes():
    assert run(KeyState(), [seen(confidence=0.7)]) == [Outcome.RAISED]


def test_a_detection_outside_every_region_of_interest_is_dropped():
    state = KeyState()
    assert run(state, [seen(box=Rect(0.4, 0.1, 0.2, 0.2))], regions=[LOWER_HALF]) == [Outcome.OUTSIDE_REGION]
    assert state.items == []


def test_a_detection_inside_a_region_of_interest_passes():
    assert run(KeyState(), [seen()], regions=[SQUARE]) == [Outcome.RAISED]


def test_a_stall_becomes_an_alarm_only_after_it_persisted_long_enough():
    gates = replace(GATES, min_persistence_seconds=300)
    state = KeyState()
    outcomes = run(state, [seen(0), seen(120), seen(299), seen(300)], gates)
    assert outcomes == [Outcome.PERSISTING, Outcome.PERSISTING, Outcome.PERSISTING, Outcome.RAISED]
    assert len(state.items) == 1
    alarm = state.items[0]
    assert alarm.is_alarm
    assert alarm.first_seen == T0
    assert alarm.raised_at == T0 + timedelta(seconds=300)
    assert alarm.detections == 4


def test_a_candidate_not_seen_again_within_the_window_starts_over():
    gates = replace(GATES, min_persistence_seconds=300, dedup_window_seconds=60)
    state = KeyState()
    outcomes = run(state, [seen(0), seen(200), seen(320)], gates)
    assert outcomes == [Outcome.PERSISTING, Outcome.PERSISTING, Outcome.PERSISTING]
    assert len(state.items) == 3


def test_duplicates_within_the_window_merge_into_the_open_alarm():
    state = KeyState()
    outcomes = run(state, [seen(0), seen(10), seen(500)])
    assert outcomes == [Outcome.RAISED, Outcome.MERGED, Outcome.MERGED]
    assert len(state.items) == 1
    assert state.items[0].detections == 3
    assert state.items[0].last_seen == T0 + timedelta(seconds=500)


def test_a_detection_after_the_dedup_window_is_not_merged():
    state = KeyState()
    outcomes = run(state, [seen(0), seen(601), seen(700)], replace(GATES, cooldown_seconds=0))
    assert outcomes == [Outcome.RAISED, Outcome.RAISED, Outcome.MERGED]
    assert len(state.items) == 2


def test_a_box_overlapping_by_exactly_half_merges_and_by_less_does_not():
    half = Rect(0.0, 0.0, 0.3, 0.2)
    overlapping_half = Rect(0.1, 0.0, 0.3, 0.2)  # IoU = 0.2*0.2 / (0.06+0.06-0.04) = 0.5
    assert iou(half, overlapping_half) == pytest.approx(0.5)
    state = KeyState()
    assert run(state, [seen(0, box=half), seen(1, box=overlapping_half)]) == [Outcome.RAISED, Outcome.MERGED]
    state = KeyState()
    less = Rect(0.11, 0.0, 0.3, 0.2)
    gates = replace(GATES, cooldown_seconds=0)
    assert run(state, [seen(0, box=half), seen(1, box=less)], gates) == [Outcome.RAISED, Outcome.RAISED]


def test_a_moving_object_with_the_same_track_id_merges_whatever_its_box():
    state = KeyState()
    far = Rect(0.0, 0.0, 0.1, 0.1)
    outcomes = run(state, [seen(0, track="t-7"), seen(5, box=far, track="t-7")])
    assert outcomes == [Outcome.RAISED, Outcome.MERGED]


def test_merging_keeps_the_most_confident_snapshot():
    state = KeyState()
    run(state, [seen(0, confidence=0.8), seen(1, confidence=0.95), seen(2, confidence=0.85)])
    alarm = state.items[0]
    assert alarm.best_confidence == 0.95
    assert alarm.evidence == "frame-1"


def test_a_snapshot_is_kept_even_from_a_detection_no_more_confident_than_the_first():
    state = KeyState()
    new_id = ids()
    observe(state, Observation(T0, 0.9, BOX), GATES, (), new_id)
    observe(state, Observation(T0 + timedelta(seconds=1), 0.8, BOX, evidence="late frame"), GATES, (), new_id)
    observe(
        state, Observation(T0 + timedelta(seconds=2), 0.85, BOX, evidence="later frame"), GATES, (), new_id
    )
    assert state.items[0].evidence == "late frame"
    assert state.items[0].best_confidence == 0.9


def test_a_second_object_within_the_cooldown_is_held_back():
    state = KeyState()
    other = Rect(0.0, 0.0, 0.1, 0.1)
    outcomes = run(state, [seen(0), seen(30, box=other), seen(59, box=other), seen(60, box=other)])
    assert outcomes == [Outcome.RAISED, Outcome.COOLING_DOWN, Outcome.COOLING_DOWN, Outcome.RAISED]
    assert len(state.items) == 2


def test_the_cooldown_counts_from_the_last_alarm_loaded_with_the_state():
    state = KeyState(last_raised_at=T0 - timedelta(seconds=30))
    assert run(state, [seen(0), seen(30)]) == [Outcome.COOLING_DOWN, Outcome.RAISED]


def test_a_class_that_may_dispatch_itself_marks_its_alarm_auto():
    state = KeyState()
    run(state, [seen()], replace(GATES, auto_dispatch=True))
    assert state.items[0].auto_dispatch
    assert state.items[0].just_raised


def test_a_detection_with_several_boxes_reports_its_best_outcome():
    assert best_outcome([Outcome.OUTSIDE_REGION, Outcome.MERGED, Outcome.PERSISTING]) == Outcome.MERGED
    assert best_outcome([Outcome.COOLING_DOWN, Outcome.BELOW_CONFIDENCE]) == Outcome.COOLING_DOWN


def test_a_detection_arriving_out_of_order_within_the_window_still_merges():
    state = KeyState()
    assert run(state, [seen(100), seen(40)]) == [Outcome.RAISED, Outcome.MERGED]
    assert state.items[0].first_seen == T0 + timedelta(seconds=40)


# -- re-check -------------------------------------------------------------------------------------


def test_a_recheck_passes_when_nothing_confident_is_left_where_the_alarm_was():
    assert not problem_still_there([], BOX, GATES, [])
    assert not problem_still_there([(0.5, BOX)], BOX, GATES, [])
    assert not problem_still_there([(0.9, Rect(0.0, 0.0, 0.1, 0.1))], BOX, GATES, [])


def test_a_recheck_fails_when_the_problem_is_still_in_the_region():
    assert problem_still_there([(0.9, Rect(0.42, 0.41, 0.2, 0.2))], BOX, GATES, [SQUARE])


def test_a_recheck_ignores_detections_outside_the_region():
    assert not problem_still_there([(0.9, BOX)], BOX, GATES, [[(0, 0), (1, 0), (1, 0.2), (0, 0.2)]])
