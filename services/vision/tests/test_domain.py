"""Camera ids, the catalogue, the circuit breaker and the threshold recommendation, without I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.vision.domain.breaker import BreakerState, CircuitBreaker
from services.vision.domain.camera_ids import InvalidCameraId, parse_camera_id
from services.vision.domain.catalogue import ALGORITHMS, BY_CODE, Group, Severity
from services.vision.domain.review_stats import Reviewed, recommend_threshold

CASE_CATEGORIES = Path(__file__).resolve().parents[2] / "case" / "data" / "categories" / "v1.json"

# -- GB/T 28181 ids ---------------------------------------------------------------------------------


def test_a_tianhe_city_management_ipc_id_is_parsed_into_its_parts():
    parts = parse_camera_id("44010600081320000001")
    assert parts.division_code == "44010600"
    assert parts.district_code == "440106"
    assert (parts.industry_code, parts.industry) == ("08", "city_management")
    assert (parts.device_type_code, parts.device_type) == ("132", "ipc")
    assert (parts.network_code, parts.network) == ("0", "monitoring")
    assert parts.serial == "000001"


def test_a_camera_outside_the_citys_districts_has_no_district():
    assert parse_camera_id("11010100041316000001").district_code is None


@pytest.mark.parametrize(
    ("camera_id", "reason"),
    [
        ("4401060008132000000", "20 digits"),
        ("440106000813200000012", "20 digits"),
        ("4401060008132000000a", "20 digits"),
        ("４４０１０６０００８１３２０００００１", "20 digits"),
        ("44010600081180000001", "camera type"),
        ("00010600081320000001", "administrative division"),
        ("44000000081320000001", "administrative division"),
    ],
)
def test_an_id_that_is_not_a_gbt28181_camera_is_refused_with_the_reason(camera_id, reason):
    with pytest.raises(InvalidCameraId, match=reason):
        parse_camera_id(camera_id)


# -- catalogue --------------------------------------------------------------------------------------


def test_the_catalogue_has_57_classes_in_seven_groups_with_unique_codes():
    assert len(ALGORITHMS) == 57
    assert len(BY_CODE) == 57
    assert {a.group for a in ALGORITHMS} == set(Group)


def test_every_class_raises_an_event_category_of_the_case_catalogue():
    categories = {c["code"] for c in json.loads(CASE_CATEGORIES.read_text())["categories"]}
    for algorithm in ALGORITHMS:
        assert algorithm.category_code.startswith("2"), algorithm.code
        assert algorithm.category_code in categories, algorithm.code


def test_gates_are_within_practice():
    for algorithm in ALGORITHMS:
        gates = algorithm.gates
        assert 0.7 <= gates.min_confidence <= 0.9
        assert gates.dedup_window_seconds >= gates.min_persistence_seconds
        assert algorithm.name_zh
        assert algorithm.name_en


def test_a_stall_must_stay_minutes_before_it_is_a_case():
    assert BY_CODE["road_occupying_stall"].gates.min_persistence_seconds >= 180


def test_a_camera_override_changes_only_the_gates_it_names():
    gates = BY_CODE["overflowing_bin"].gates
    changed = gates.with_overrides({"min_confidence": 0.9, "severity": "high", "unknown": 1})
    assert changed.min_confidence == 0.9
    assert changed.severity is Severity.HIGH
    assert changed.cooldown_seconds == gates.cooldown_seconds
    assert gates.with_overrides(None) is gates


# -- circuit breaker -------------------------------------------------------------------------------


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


def test_the_breaker_opens_after_the_threshold_of_failures_in_a_row():
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=10)
    for now in (0, 1):
        assert breaker.allow(now)
        breaker.failed(now)
    assert state(breaker) is BreakerState.CLOSED
    breaker.failed(2)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow(5)


def test_a_success_resets_the_count_of_failures():
    breaker = CircuitBreaker(failure_threshold=2)
    breaker.failed(0)
    breaker.succeeded()
    breaker.failed(1)
    assert state(breaker) is BreakerState.CLOSED


def test_after_the_reset_time_one_trial_call_is_let_through():
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=10)
    breaker.failed(0)
    assert not breaker.allow(9.9)
    assert breaker.allow(10)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow(10.1)  # one trial at a time


def test_a_successful_trial_closes_the_breaker_and_a_failed_one_opens_it_again():
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=10)
    breaker.failed(0)
    assert breaker.allow(10)
    breaker.failed(10)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow(15)
    assert breaker.allow(20)
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow(20)


def test_an_abandoned_trial_lets_the_next_call_try():
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=10)
    breaker.failed(0)
    assert breaker.allow(10)  # the trial
    assert not breaker.allow(10)  # one at a time
    breaker.abandoned()  # cancelled: no verdict on the engine
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow(11)


# -- recommended threshold -------------------------------------------------------------------------


def test_too_few_reviews_recommend_nothing():
    result = recommend_threshold([Reviewed(0.9, False)] * 5, 0.75)
    assert result.recommended_min_confidence is None
    assert result.false_positive_rate == 0.0


def test_a_class_meeting_the_target_keeps_its_threshold():
    reviews = [Reviewed(0.8, False)] * 19 + [Reviewed(0.8, True)]
    result = recommend_threshold(reviews, 0.75, target_rate=0.1)
    assert result.false_positive_rate == pytest.approx(0.05)
    assert result.recommended_min_confidence == 0.75


def test_false_positives_at_low_confidence_raise_the_recommended_threshold():
    reviews = [Reviewed(0.76, True)] * 10 + [Reviewed(0.85, False)] * 18 + [Reviewed(0.9, True)]
    result = recommend_threshold(reviews, 0.75, target_rate=0.1)
    assert result.false_positive_rate == pytest.approx(11 / 29)
    assert result.recommended_min_confidence == 0.85


def test_no_threshold_is_recommended_when_none_reaches_the_target():
    reviews = [Reviewed(0.8 + i / 100, i % 2 == 0) for i in range(20)]
    assert recommend_threshold(reviews, 0.75, target_rate=0.01).recommended_min_confidence is None
