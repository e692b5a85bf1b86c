"""The transport rules over one truck's positions, every 30 s as JT/T 808 terminals report them, at
each rule's boundaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from services.muck.domain.violations import (
    DEFAULT_SETTINGS,
    NO_MANIFEST,
    Finding,
    Observation,
    RuleSettings,
    TruckContext,
    TruckRules,
    ViolationKind,
    offline,
)
from services.muck.domain.windows import CITY_TZ

K = ViolationKind
T0 = datetime(2026, 12, 1, 21, 0, tzinfo=CITY_TZ)
STEP = timedelta(seconds=30)

ON_MANIFEST = TruckContext(
    manifest_id="M-20261201-0001", origin_site="GZ-TH-0001", disposal_site="GZ-BY-D001"
)

# A loaded truck driving on its route, in its window, outside every site.
DRIVING = Observation(
    at=T0,
    lon=113.32,
    lat=23.12,
    speed_kmh=40.0,
    load="full",
    sites=frozenset(),
    disposal_sites=frozenset(),
    corridor_distance_m=5.0,
    in_window=True,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(
    observations: list[Observation], context: TruckContext = ON_MANIFEST, rules: TruckRules | None = None
) -> list[Finding]:
    rules = rules if rules is not None else TruckRules()
    return [finding for obs in observations for finding in rules.observe(obs, context)]


def every_30_s(count: int, start: float = 0.0, **changes) -> list[Observation]:
    """``count`` observations 30 s apart from ``start`` seconds after T0, DRIVING with ``changes``."""
    return [replace(DRIVING, at=at(start + i * 30), **changes) for i in range(count)]


def kinds(findings: list[Finding]) -> list[tuple[ViolationKind, str]]:
    return [(f.kind, f.severity) for f in findings]


# -- a clean trip -----------------------------------------------------------------------------------


def test_a_loaded_truck_on_its_route_in_its_window_breaks_no_rule():
    assert run(every_30_s(120)) == []


# -- off route --------------------------------------------------------------------------------------


def test_off_route_for_exactly_10_minutes_is_one_normal_finding():
    # 21 observations 30 s apart span exactly 10:00 from the first.
    findings = run(every_30_s(21, corridor_distance_m=80.0))
    assert kinds(findings) == [(K.OFF_ROUTE, "normal")]
    assert findings[0].episode_started_at == T0
    assert findings[0].at == at(600)
    assert findings[0].detail == "80 m from the approved route for 10:00 min"


def test_off_route_for_9_minutes_59_seconds_is_nothing():
    observations = [
        *every_30_s(20, corridor_distance_m=80.0),
        replace(DRIVING, at=at(599), corridor_distance_m=80.0),
    ]
    assert run(observations) == []


def test_off_route_for_15_minutes_adds_one_severe_finding_for_the_same_episode():
    findings = run(every_30_s(41, corridor_distance_m=80.0))  # 20:00 minutes off route
    assert kinds(findings) == [(K.OFF_ROUTE, "normal"), (K.OFF_ROUTE, "severe")]
    normal, severe = findings
    assert severe.at == at(900)
    assert severe.episode_started_at == normal.episode_started_at == T0


def test_off_route_for_14_minutes_59_seconds_is_not_severe():
    observations = [
        *every_30_s(30, corridor_distance_m=80.0),
        replace(DRIVING, at=at(899), corridor_distance_m=80.0),
    ]
    assert kinds(run(observations)) == [(K.OFF_ROUTE, "normal")]


def test_exactly_the_tolerance_of_50_m_is_on_route():
    assert run(every_30_s(41, corridor_distance_m=50.0)) == []
    assert kinds(run(every_30_s(21, corridor_distance_m=50.1))) == [(K.OFF_ROUTE, "normal")]


def test_a_return_within_tolerance_ends_the_episode_and_a_new_excursion_is_a_new_episode():
    first = every_30_s(21, corridor_distance_m=80.0)  # 0..600 s: one finding
    back = every_30_s(1, start=630)  # on route again
    second = every_30_s(21, start=660, corridor_distance_m=120.0)  # 660..1260 s: a new episode
    findings = run([*first, *back, *second])
    assert kinds(findings) == [(K.OFF_ROUTE, "normal"), (K.OFF_ROUTE, "normal")]
    assert [f.episode_started_at for f in findings] == [T0, at(660)]


def test_a_return_just_before_10_minutes_restarts_the_clock():
    observations = [
        *every_30_s(19, corridor_distance_m=80.0),  # 0..540 s
        *every_30_s(1, start=570),  # back on route
        *every_30_s(19, start=600, corridor_distance_m=80.0),  # 600..1140 s: 9:00 again
    ]
    assert run(observations) == []


def test_inside_a_site_is_never_off_route():
    inside = every_30_s(41, corridor_distance_m=800.0, sites=frozenset({"GZ-TH-0001"}), speed_kmh=10.0)
    assert run(inside) == []


def test_entering_a_site_ends_an_off_route_episode():
    observations = [
        *every_30_s(19, corridor_distance_m=80.0),
        *every_30_s(1, start=570, corridor_distance_m=80.0, sites=frozenset({"GZ-TH-0002"})),
        *every_30_s(19, start=600, corridor_distance_m=80.0),
    ]
    assert run(observations) == []


def test_without_a_manifest_or_a_corridor_there_is_no_route_to_leave():
    assert run(every_30_s(41, corridor_distance_m=800.0, load="empty"), context=NO_MANIFEST) == []
    assert run(every_30_s(41, corridor_distance_m=None)) == []


def test_a_new_manifest_starts_a_new_off_route_episode():
    rules = TruckRules()
    run(every_30_s(15, corridor_distance_m=80.0), rules=rules)  # 0..420 s on the first manifest
    next_trip = replace(ON_MANIFEST, manifest_id="M-20261201-0002")
    findings = run(every_30_s(15, start=450, corridor_distance_m=80.0), context=next_trip, rules=rules)
    assert findings == []  # 7:00 on the second manifest, not 14:30 in all


def test_one_late_position_after_a_gap_can_cross_both_thresholds():
    observations = [
        replace(DRIVING, corridor_distance_m=80.0),
        replace(DRIVING, at=at(960), corridor_distance_m=80.0),
    ]
    assert kinds(run(observations)) == [(K.OFF_ROUTE, "normal"), (K.OFF_ROUTE, "severe")]


def test_a_position_with_no_distance_to_its_corridor_is_not_off_route():
    # A position without a fix has NaN for its distance: unknown, so not evidence of leaving the route.
    assert run(every_30_s(41, corridor_distance_m=float("nan"))) == []


# -- out of order -----------------------------------------------------------------------------------


def test_an_observation_older_than_the_last_one_is_ignored():
    rules = TruckRules()
    run(every_30_s(20, corridor_distance_m=80.0), rules=rules)  # up to 570 s
    late = replace(DRIVING, at=at(300), corridor_distance_m=80.0, speed_kmh=120.0, load="empty")
    assert rules.observe(late, ON_MANIFEST) == []
    assert rules.last is not None
    assert rules.last.at == at(570)
    # The episode runs on from its first observation, untouched by the late one.
    assert kinds(rules.observe(replace(DRIVING, at=at(600), corridor_distance_m=80.0), ON_MANIFEST)) == [
        (K.OFF_ROUTE, "normal")
    ]


def test_a_resent_observation_of_the_same_time_is_ignored():
    rules = TruckRules()
    rules.observe(DRIVING, ON_MANIFEST)
    assert rules.observe(replace(DRIVING, load="empty"), ON_MANIFEST) == []  # would be an unloading


def test_a_blind_area_re_upload_arriving_late_does_not_re_open_an_episode():
    rules = TruckRules()
    run(every_30_s(21, corridor_distance_m=80.0), rules=rules)
    replay = every_30_s(21, start=-900, corridor_distance_m=80.0)
    assert run(replay, rules=rules) == []


# -- outside hours ----------------------------------------------------------------------------------


def test_moving_on_a_manifest_outside_the_window_is_one_finding_at_once():
    findings = run(every_30_s(20, in_window=False))
    assert kinds(findings) == [(K.OUTSIDE_HOURS, "normal")]
    assert findings[0].at == findings[0].episode_started_at == T0


def test_moving_at_exactly_5_km_h_counts_as_moving():
    assert kinds(run(every_30_s(1, in_window=False, speed_kmh=5.0))) == [(K.OUTSIDE_HOURS, "normal")]
    assert run(every_30_s(1, in_window=False, speed_kmh=4.9)) == []


def test_a_stop_outside_the_window_keeps_the_episode_going():
    observations = [
        *every_30_s(2, in_window=False),
        *every_30_s(4, start=60, in_window=False, speed_kmh=0.0),
        *every_30_s(2, start=180, in_window=False),
    ]
    assert kinds(run(observations)) == [(K.OUTSIDE_HOURS, "normal")]


def test_the_window_opening_ends_the_episode():
    observations = [
        *every_30_s(2, in_window=False),
        *every_30_s(1, start=60),
        *every_30_s(2, start=90, in_window=False),
    ]
    findings = run(observations)
    assert kinds(findings) == [(K.OUTSIDE_HOURS, "normal")] * 2
    assert [f.episode_started_at for f in findings] == [T0, at(90)]


def test_the_manifest_ending_ends_the_episode():
    rules = TruckRules()
    run(every_30_s(2, in_window=False), rules=rules)
    run(every_30_s(2, start=60, in_window=False, load="empty"), context=NO_MANIFEST, rules=rules)
    assert kinds(run(every_30_s(1, start=120, in_window=False), rules=rules)) == [(K.OUTSIDE_HOURS, "normal")]


def test_a_truck_without_a_manifest_is_never_outside_hours():
    assert run(every_30_s(10, in_window=False, load="empty"), context=NO_MANIFEST) == []


def test_a_truck_parked_outside_the_window_is_not_outside_hours():
    assert run(every_30_s(10, in_window=False, speed_kmh=0.0, sites=frozenset({"GZ-TH-0001"}))) == []


# -- overspeed --------------------------------------------------------------------------------------


def test_overspeed_for_exactly_60_seconds_is_one_finding():
    findings = run(every_30_s(3, speed_kmh=72.0))
    assert kinds(findings) == [(K.OVERSPEED, "normal")]
    assert findings[0].episode_started_at == T0
    assert findings[0].at == at(60)


def test_overspeed_for_59_seconds_is_nothing():
    assert run([replace(DRIVING, speed_kmh=72.0), replace(DRIVING, at=at(59), speed_kmh=72.0)]) == []


def test_a_long_overspeed_is_still_one_finding():
    assert kinds(run(every_30_s(40, speed_kmh=80.0))) == [(K.OVERSPEED, "normal")]


def test_exactly_the_limit_is_not_overspeed_and_ends_the_episode():
    assert run(every_30_s(10, speed_kmh=60.0)) == []
    observations = [
        *every_30_s(2, speed_kmh=70.0),
        *every_30_s(1, start=60, speed_kmh=60.0),
        *every_30_s(2, start=90, speed_kmh=70.0),
    ]
    assert run(observations) == []


def test_overspeed_applies_without_a_manifest_too():
    assert kinds(run(every_30_s(3, speed_kmh=72.0, load="empty"), context=NO_MANIFEST)) == [
        (K.OVERSPEED, "normal")
    ]


# -- suspected illegal dumping ----------------------------------------------------------------------


def test_a_loaded_truck_stopped_outside_every_site_for_10_minutes_is_suspected_of_dumping():
    findings = run(every_30_s(21, speed_kmh=0.0))
    assert kinds(findings) == [(K.ILLEGAL_DUMPING, "normal")]
    assert findings[0].episode_started_at == T0
    assert findings[0].at == at(600)


def test_a_stop_of_9_minutes_59_seconds_is_not():
    assert run([*every_30_s(20, speed_kmh=0.0), replace(DRIVING, at=at(599), speed_kmh=0.0)]) == []


def test_a_stop_inside_a_site_is_not_dumping():
    assert run(every_30_s(41, speed_kmh=0.0, sites=frozenset({"GZ-TH-0001"}))) == []
    disposal = frozenset({"GZ-BY-D001"})
    assert run(every_30_s(41, speed_kmh=0.0, sites=disposal, disposal_sites=disposal)) == []


def test_an_empty_truck_may_stop_anywhere():
    assert run(every_30_s(41, speed_kmh=0.0, load="empty"), context=NO_MANIFEST) == []


def test_an_unknown_load_on_an_undelivered_manifest_counts_as_loaded():
    assert kinds(run(every_30_s(21, speed_kmh=0.0, load="unknown"))) == [(K.ILLEGAL_DUMPING, "normal")]
    assert run(every_30_s(21, speed_kmh=0.0, load="unknown"), context=NO_MANIFEST) == []


def test_a_half_load_without_a_manifest_counts_as_loaded():
    findings = run(every_30_s(21, speed_kmh=1.0, load="half"), context=NO_MANIFEST)
    assert kinds(findings) == [(K.ILLEGAL_DUMPING, "normal")]


def test_creeping_at_the_stop_speed_of_3_km_h_is_not_stopped():
    assert run(every_30_s(41, speed_kmh=3.0)) == []


def test_moving_off_ends_the_stop_and_a_later_stop_is_a_new_episode():
    observations = [
        *every_30_s(21, speed_kmh=0.0),  # 0..600 s
        *every_30_s(1, start=630),  # drives off
        *every_30_s(21, start=660, speed_kmh=0.0),  # 660..1260 s
    ]
    findings = run(observations)
    assert kinds(findings) == [(K.ILLEGAL_DUMPING, "normal")] * 2
    assert [f.episode_started_at for f in findings] == [T0, at(660)]


# -- unloaded outside the site ----------------------------------------------------------------------


def test_unloading_outside_every_site_is_a_finding_at_once():
    findings = run([DRIVING, replace(DRIVING, at=at(30), load="empty")])
    assert kinds(findings) == [(K.UNLOADED_OUTSIDE_SITE, "normal")]
    assert findings[0].at == findings[0].episode_started_at == at(30)
    assert findings[0].detail == "unloaded outside its designated disposal site GZ-BY-D001"


def test_unloading_inside_the_designated_disposal_site_is_nothing():
    designated = frozenset({"GZ-BY-D001"})
    inside = replace(DRIVING, sites=designated, disposal_sites=designated, speed_kmh=2.0)
    assert run([inside, replace(inside, at=at(30), load="empty")]) == []


def test_unloading_inside_another_disposal_site_with_a_manifest_is_a_finding():
    other = frozenset({"GZ-HP-D007"})
    inside = replace(DRIVING, sites=other, disposal_sites=other, speed_kmh=2.0)
    findings = run([inside, replace(inside, at=at(30), load="empty")])
    assert kinds(findings) == [(K.UNLOADED_OUTSIDE_SITE, "normal")]
    assert findings[0].detail == "unloaded outside its designated disposal site GZ-BY-D001, inside GZ-HP-D007"


def test_without_a_manifest_unloading_inside_any_disposal_site_is_nothing():
    disposal = frozenset({"GZ-HP-D007"})
    inside = replace(DRIVING, sites=disposal, disposal_sites=disposal, speed_kmh=2.0)
    assert run([inside, replace(inside, at=at(30), load="empty")], context=NO_MANIFEST) == []


def test_without_a_manifest_unloading_inside_a_construction_site_is_a_finding():
    site = frozenset({"GZ-TH-0003"})
    inside = replace(DRIVING, sites=site, speed_kmh=2.0, load="half")
    findings = run([inside, replace(inside, at=at(30), load="empty")], context=NO_MANIFEST)
    assert kinds(findings) == [(K.UNLOADED_OUTSIDE_SITE, "normal")]
    assert findings[0].detail == "unloaded outside every disposal site"


def test_an_unknown_load_on_either_side_is_no_unloading():
    assert run([replace(DRIVING, load="unknown"), replace(DRIVING, at=at(30), load="empty")]) == []
    assert (
        run([DRIVING, replace(DRIVING, at=at(30), load="unknown"), replace(DRIVING, at=at(60), load="empty")])
        == []
    )


def test_a_full_load_going_half_is_no_unloading():
    assert run([DRIVING, replace(DRIVING, at=at(30), load="half")]) == []


# -- left without a manifest ------------------------------------------------------------------------

SITE = frozenset({"GZ-TH-0001"})


def loading_at(site: frozenset[str], load="full") -> list[Observation]:
    """A truck that drives into ``site`` empty, loads there and drives out: the last one is outside."""
    return [
        replace(DRIVING, load="empty"),
        replace(DRIVING, at=at(30), sites=site, speed_kmh=8.0, load="empty"),
        replace(DRIVING, at=at(60), sites=site, speed_kmh=0.0, load=load),
        replace(DRIVING, at=at(90), load=load),
    ]


def test_leaving_a_construction_site_loaded_without_a_manifest_is_a_finding_at_once():
    findings = run(loading_at(SITE), context=NO_MANIFEST)
    assert kinds(findings) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]
    assert findings[0].at == findings[0].episode_started_at == at(90)
    assert findings[0].detail == "left GZ-TH-0001 loaded without a manifest"


def test_leaving_half_loaded_counts_too():
    assert kinds(run(loading_at(SITE, load="half"), context=NO_MANIFEST)) == [
        (K.LEFT_WITHOUT_MANIFEST, "normal")
    ]


def test_leaving_the_manifests_origin_site_loaded_is_nothing():
    assert run(loading_at(SITE)) == []


def test_leaving_another_site_than_the_manifests_origin_loaded_is_a_finding():
    findings = run(loading_at(frozenset({"GZ-TH-0002"})))
    assert kinds(findings) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]
    assert findings[0].detail == (
        "left GZ-TH-0002 loaded on manifest M-20261201-0001, which is from GZ-TH-0001"
    )


def test_driving_loaded_through_another_site_is_not_leaving_it_with_a_load():
    # The route passes a site (or the GPS strays over its boundary): the truck leaves with what it
    # came in with.
    observations = [
        DRIVING,
        replace(DRIVING, at=at(30), sites=frozenset({"GZ-TH-0002"})),
        replace(DRIVING, at=at(60)),
    ]
    assert run(observations) == []
    assert run(observations, context=NO_MANIFEST) == []


def test_topping_up_a_half_load_at_another_site_is_a_finding():
    other = frozenset({"GZ-TH-0002"})
    observations = [
        replace(DRIVING, load="half"),
        replace(DRIVING, at=at(30), sites=other, speed_kmh=0.0, load="half"),
        replace(DRIVING, at=at(60), sites=other, speed_kmh=0.0, load="full"),
        replace(DRIVING, at=at(90)),
    ]
    assert kinds(run(observations)) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]


def test_a_truck_first_seen_inside_a_site_may_have_loaded_there():
    observations = [replace(DRIVING, sites=SITE, speed_kmh=0.0), replace(DRIVING, at=at(30))]
    assert kinds(run(observations, context=NO_MANIFEST)) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]


def test_an_unknown_load_at_the_gate_in_then_full_at_the_gate_out_is_a_finding():
    observations = [
        replace(DRIVING, load="unknown"),
        replace(DRIVING, at=at(30), sites=SITE, speed_kmh=8.0, load="unknown"),
        replace(DRIVING, at=at(60)),
    ]
    assert kinds(run(observations, context=NO_MANIFEST)) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]


def test_leaving_a_site_empty_is_nothing():
    assert run(loading_at(SITE, load="empty"), context=NO_MANIFEST) == []


def test_leaving_a_site_with_an_unknown_load_is_nothing():
    assert run(loading_at(SITE, load="unknown"), context=NO_MANIFEST) == []


def test_leaving_a_disposal_site_loaded_is_not_leaving_a_construction_site():
    disposal = frozenset({"GZ-BY-D001"})
    observations = [
        replace(DRIVING, load="empty"),
        replace(DRIVING, at=at(30), sites=disposal, disposal_sites=disposal, speed_kmh=8.0, load="empty"),
        replace(DRIVING, at=at(60)),
    ]
    assert run(observations, context=NO_MANIFEST) == []


def test_moving_between_overlapping_sites_is_no_departure_until_the_truck_leaves_both():
    both = frozenset({"GZ-TH-0001", "GZ-TH-0002"})
    observations = [
        replace(DRIVING, load="empty"),
        replace(DRIVING, at=at(30), sites=SITE, speed_kmh=8.0, load="empty"),
        replace(DRIVING, at=at(60), sites=both, speed_kmh=0.0),
        replace(DRIVING, at=at(90), sites=frozenset({"GZ-TH-0002"}), speed_kmh=8.0),
    ]
    rules = TruckRules()
    assert kinds(run(observations, context=NO_MANIFEST, rules=rules)) == [(K.LEFT_WITHOUT_MANIFEST, "normal")]
    # It came into GZ-TH-0001 empty and left it full; into GZ-TH-0002 full, and leaves it full.
    assert run([replace(DRIVING, at=at(120))], context=NO_MANIFEST, rules=rules) == []


def test_a_truck_that_leaves_and_comes_back_is_judged_on_its_new_visit():
    rules = TruckRules()
    run(loading_at(SITE), rules=rules)  # loaded at its origin on its manifest: nothing
    back = [
        replace(DRIVING, at=at(120), sites=SITE, speed_kmh=8.0),
        replace(DRIVING, at=at(150)),
    ]
    assert run(back, context=NO_MANIFEST, rules=rules) == []  # came back full, left full


# -- terminal offline -------------------------------------------------------------------------------


def test_a_terminal_silent_for_exactly_10_minutes_on_a_manifest_is_offline():
    assert offline(T0, T0 + timedelta(minutes=10), on_manifest=True)
    assert not offline(T0, T0 + timedelta(minutes=9, seconds=59), on_manifest=True)


def test_a_terminal_off_a_manifest_is_never_offline():
    assert not offline(T0, T0 + timedelta(hours=5), on_manifest=False)
    assert not offline(None, T0, on_manifest=False)


def test_a_truck_on_a_manifest_never_heard_from_is_offline():
    assert offline(None, T0, on_manifest=True)


def test_the_offline_threshold_comes_from_the_settings():
    settings = RuleSettings(offline_after=timedelta(minutes=3))
    assert offline(T0, T0 + timedelta(minutes=3), True, settings)


# -- settings ---------------------------------------------------------------------------------------


def test_the_default_settings_are_the_practice_in_guangdong():
    s = DEFAULT_SETTINGS
    assert s.corridor_tolerance_m == 50.0
    assert (s.off_route_after, s.off_route_severe_after) == (timedelta(minutes=10), timedelta(minutes=15))
    assert (s.overspeed_kmh, s.overspeed_after) == (60.0, timedelta(seconds=60))
    assert (s.stop_speed_kmh, s.dumping_stop_after, s.moving_speed_kmh) == (3.0, timedelta(minutes=10), 5.0)
    assert s.offline_after == timedelta(minutes=10)


def test_rules_follow_their_settings():
    strict = TruckRules(RuleSettings(overspeed_kmh=50.0, overspeed_after=timedelta(seconds=30)))
    assert kinds(run(every_30_s(2, speed_kmh=55.0), rules=strict)) == [(K.OVERSPEED, "normal")]


@pytest.mark.parametrize(
    "changes",
    [
        {"off_route_after": timedelta(0)},
        {"off_route_severe_after": timedelta(minutes=5)},
        {"overspeed_after": timedelta(seconds=-1)},
        {"offline_after": timedelta(0)},
        {"corridor_tolerance_m": -1.0},
    ],
)
def test_impossible_settings_are_refused(changes):
    with pytest.raises(ValueError, match=r"duration|shorter|negative"):
        RuleSettings(**changes)


def test_each_truck_has_its_own_episodes():
    a, b = TruckRules(), TruckRules()
    run(every_30_s(15, corridor_distance_m=80.0), rules=a)
    assert run(every_30_s(7, start=450, corridor_distance_m=80.0), rules=b) == []
    assert kinds(run(every_30_s(7, start=450, corridor_distance_m=80.0), rules=a)) == [
        (K.OFF_ROUTE, "normal")
    ]
