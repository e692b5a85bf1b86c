"""The bin-side rules: what is a violation, what is the same one seen again, what is urgent."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contract.waste import WasteStream, WasteViolation
from services.waste.domain.hours import CITY_TZ, parse_window
from services.waste.domain.supervision import (
    FIRE_CATEGORY,
    GATES,
    OVERFLOW_CATEGORY,
    SORTING_CATEGORY,
    Episode,
    Observation,
    Observed,
    Verdict,
    decide,
    describe,
    near,
)

HOURS = [parse_window("07:00-09:00"), parse_window("19:00-22:00")]
NIGHT_HOURS = [parse_window("22:00-02:00")]


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 3, hour, minute, tzinfo=CITY_TZ)


def seen(observed: Observed, when: datetime, confidence: float = 0.9, **kwargs) -> Observation:
    return Observation(observed, when, confidence, **kwargs)


def test_a_mixed_deposit_seen_with_confidence_is_a_new_violation():
    decision = decide(seen(Observed.MIXED_DEPOSIT, at(8)), HOURS, None)
    assert decision.verdict is Verdict.NEW
    assert decision.kind is WasteViolation.MIXED_DEPOSIT
    assert decision.gate is not None
    assert (decision.gate.severity, decision.gate.category_code) == ("normal", SORTING_CATEGORY)


def test_an_observation_below_its_kinds_confidence_is_ignored():
    decision = decide(seen(Observed.OVERFLOW, at(8), confidence=0.79), HOURS, None)
    assert (decision.verdict, decision.reason) == (Verdict.IGNORED, "below_confidence")


def test_a_confirmed_alarm_is_not_gated_on_confidence_again():
    decision = decide(seen(Observed.OVERFLOW, at(8), confidence=0.5, confirmed=True), HOURS, None)
    assert decision.verdict is Verdict.NEW


def test_smoke_or_fire_is_urgent_raises_a_fire_case_and_passes_a_lower_bar():
    decision = decide(seen(Observed.SMOKE_OR_FIRE, at(3), confidence=0.65), HOURS, None)
    assert decision.verdict is Verdict.NEW
    assert decision.gate is not None
    assert (decision.gate.severity, decision.gate.category_code) == ("urgent", FIRE_CATEGORY)
    assert all(
        gate.severity == "normal" for kind, gate in GATES.items() if kind is not WasteViolation.SMOKE_OR_FIRE
    )


def test_an_overflow_is_an_overflowing_bin_case():
    decision = decide(seen(Observed.OVERFLOW, at(8)), HOURS, None)
    assert decision.gate is not None
    assert decision.gate.category_code == OVERFLOW_CATEGORY


def test_a_deposit_in_the_opening_hours_is_no_violation():
    decision = decide(seen(Observed.DEPOSIT, at(7, 30)), HOURS, None)
    assert (decision.verdict, decision.reason) == (Verdict.IGNORED, "within_opening_hours")


def test_a_deposit_outside_the_opening_hours_is_a_violation():
    decision = decide(seen(Observed.DEPOSIT, at(12)), HOURS, None)
    assert (decision.verdict, decision.kind) == (Verdict.NEW, WasteViolation.OUTSIDE_OPENING_HOURS)


@pytest.mark.parametrize(("hour", "open_"), [(23, True), (1, True), (2, False), (21, False)])
def test_opening_hours_that_cross_midnight_are_kept(hour, open_):
    decision = decide(seen(Observed.DEPOSIT, at(hour)), NIGHT_HOURS, None)
    assert (decision.verdict is Verdict.IGNORED) == open_


def test_a_point_open_around_the_clock_never_sees_a_deposit_outside_its_hours():
    assert decide(seen(Observed.DEPOSIT, at(3)), [], None).verdict is Verdict.IGNORED


def test_the_same_kind_seen_again_within_its_dedup_window_is_a_repeat():
    episode = Episode(at(8), at(8, 10))
    again = seen(Observed.MIXED_DEPOSIT, at(8, 10) + GATES[WasteViolation.MIXED_DEPOSIT].dedup)
    assert decide(again, HOURS, episode).verdict is Verdict.REPEAT


def test_the_same_kind_seen_after_its_dedup_window_is_a_new_episode():
    episode = Episode(at(8), at(8, 10))
    later = seen(
        Observed.MIXED_DEPOSIT, at(8, 10) + GATES[WasteViolation.MIXED_DEPOSIT].dedup + timedelta(seconds=1)
    )
    assert decide(later, HOURS, episode).verdict is Verdict.NEW


def test_a_late_observation_just_before_an_episode_joins_it():
    episode = Episode(at(8), at(8, 10))
    assert near(episode, at(7, 40), timedelta(minutes=30))
    assert not near(episode, at(7, 29), timedelta(minutes=30))


def test_an_ignored_observation_is_ignored_whatever_the_episode():
    episode = Episode(at(8), at(8))
    assert decide(seen(Observed.OVERFLOW, at(8), confidence=0.1), HOURS, episode).verdict is Verdict.IGNORED


def test_the_description_names_the_point_the_problem_and_the_bin():
    text = describe(WasteViolation.UNBROKEN_FOOD_BAG, "Xiagang No. 3", WasteStream.FOOD)
    assert text == "Drop-off point Xiagang No. 3: food waste deposited in its bag (food bin)"
