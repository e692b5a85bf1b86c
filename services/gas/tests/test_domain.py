"""The cylinder lifecycle, the fill check and its safety dates, and the leak drill, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from contract.gas import RefusalReason
from services.gas.domain.incidents import (
    NOTIFIED_PARTIES,
    IncidentStep,
    StepOutOfOrder,
    advance,
    is_open,
    next_step,
)
from services.gas.domain.lifecycle import (
    TERMINAL,
    CylinderStatus,
    IllegalScan,
    ScanKind,
    allowed_scans,
    next_status,
)
from services.gas.domain.rules import (
    CylinderFacts,
    Observations,
    StationFacts,
    add_months,
    add_years,
    distance_m,
    end_of_life,
    fill_refusals,
    implausible_travel,
    inspection_due,
    near_end_of_life,
    stove_life_ends,
    stove_past_life,
)

S = CylinderStatus
K = ScanKind
R = RefusalReason

# -- the lifecycle ---------------------------------------------------------------------------------

# The transitions as the domain states them, written out here rather than read from the module, so
# a wrong entry in the module's table fails a test.
LIVE = [S.IN_STOCK, S.FILLED, S.IN_TRANSIT, S.AT_USER, S.RETURNED, S.IN_INSPECTION, S.REPORTED_LOST]
LEGAL: dict[tuple[CylinderStatus, ScanKind], CylinderStatus] = {
    (S.IN_STOCK, K.FILL): S.FILLED,
    (S.RETURNED, K.FILL): S.FILLED,
    (S.FILLED, K.DISPATCH): S.IN_TRANSIT,
    (S.IN_TRANSIT, K.DELIVER): S.AT_USER,
    (S.FILLED, K.DELIVER): S.AT_USER,
    (S.AT_USER, K.RECOVER): S.RETURNED,
    (S.REPORTED_LOST, K.RECOVER): S.RETURNED,
    (S.IN_STOCK, K.SEND_TO_INSPECTION): S.IN_INSPECTION,
    (S.RETURNED, K.SEND_TO_INSPECTION): S.IN_INSPECTION,
    **{(status, K.SCRAP): S.SCRAPPED for status in LIVE},
    **{(status, K.VOID): S.VOID for status in LIVE},
    **{
        (status, K.REPORT_LOST): S.REPORTED_LOST
        for status in (S.FILLED, S.IN_TRANSIT, S.AT_USER, S.RETURNED, S.IN_STOCK)
    },
}
INSPECTABLE = [S.IN_STOCK, S.RETURNED, S.IN_INSPECTION]
ILLEGAL = [
    (status, kind)
    for status in CylinderStatus
    for kind in ScanKind
    if kind is not K.INSPECT and (status, kind) not in LEGAL
]


@pytest.mark.parametrize(("status", "kind"), list(LEGAL), ids=lambda v: str(v))
def test_a_legal_scan_moves_the_cylinder_to_its_next_status(status, kind):
    assert next_status(status, kind) is LEGAL[(status, kind)]


@pytest.mark.parametrize("status", INSPECTABLE)
def test_a_passed_inspection_puts_the_cylinder_in_stock_and_a_failed_one_keeps_it_in_inspection(status):
    assert next_status(status, K.INSPECT, passed=True) is S.IN_STOCK
    assert next_status(status, K.INSPECT, passed=False) is S.IN_INSPECTION


@pytest.mark.parametrize(("status", "kind"), ILLEGAL, ids=lambda v: str(v))
def test_an_illegal_scan_is_refused_with_the_status_and_the_scan(status, kind):
    with pytest.raises(IllegalScan) as refused:
        next_status(status, kind)
    assert (refused.value.status, refused.value.kind) == (status, kind)
    assert f"cannot {kind.value} a cylinder that is {status.value}" in str(refused.value)


@pytest.mark.parametrize("status", [s for s in CylinderStatus if s not in INSPECTABLE])
@pytest.mark.parametrize("passed", [True, False])
def test_a_cylinder_outside_stock_returns_and_inspection_cannot_be_inspected(status, passed):
    with pytest.raises(IllegalScan):
        next_status(status, K.INSPECT, passed=passed)


@pytest.mark.parametrize("status", INSPECTABLE)
def test_an_inspection_without_its_verdict_is_refused(status):
    with pytest.raises(ValueError, match="needs its verdict"):
        next_status(status, K.INSPECT)


def test_a_scan_other_than_an_inspection_takes_no_verdict():
    with pytest.raises(ValueError, match="has no verdict"):
        next_status(S.IN_STOCK, K.FILL, passed=True)


def test_an_illegal_scan_says_what_is_allowed_from_the_status():
    with pytest.raises(IllegalScan, match=r"only dispatch, deliver, scrap, void, report_lost is allowed"):
        next_status(S.FILLED, K.FILL)


@pytest.mark.parametrize("status", [S.SCRAPPED, S.VOID])
def test_nothing_leaves_scrapped_or_void(status):
    assert status in TERMINAL
    assert allowed_scans(status) == frozenset()
    with pytest.raises(IllegalScan, match="nothing is allowed"):
        next_status(status, K.RECOVER)


def test_only_scrapped_and_void_are_terminal():
    assert frozenset({S.SCRAPPED, S.VOID}) == TERMINAL


@pytest.mark.parametrize("status", list(CylinderStatus))
def test_the_allowed_scans_are_those_the_table_takes_from_the_status(status):
    expected = {kind for (source, kind) in LEGAL if source == status}
    if status in INSPECTABLE:
        expected.add(K.INSPECT)
    assert allowed_scans(status) == frozenset(expected)


def test_a_cylinder_goes_round_the_cycle_and_back_to_stock_through_inspection():
    status = S.IN_STOCK
    for kind in (K.FILL, K.DISPATCH, K.DELIVER, K.RECOVER, K.SEND_TO_INSPECTION):
        status = next_status(status, kind)
    assert status is S.IN_INSPECTION
    assert next_status(status, K.INSPECT, passed=False) is S.IN_INSPECTION
    assert next_status(status, K.INSPECT, passed=True) is S.IN_STOCK


# -- the fill check --------------------------------------------------------------------------------

TODAY = date(2026, 6, 15)
SOUND = CylinderFacts(
    code="GZ-0000001",
    status=S.IN_STOCK,
    owner_enterprise="gz-gas",
    manufactured_on=date(2023, 3, 1),  # inspection due 2027-03-01, end of life 2031-03-01
    last_passed_inspection_on=None,
    tare_kg=14.5,
)
LICENSED = StationFacts(
    code="ST-TH-01", enterprise="gz-gas", licence_valid_until=date(2030, 12, 31), locked=False
)


def test_a_sound_cylinder_at_a_licensed_station_of_its_owner_is_filled():
    assert fill_refusals(SOUND, LICENSED, TODAY) == []


@pytest.mark.parametrize(
    ("cylinder", "station", "observed", "reason"),
    [
        (replace(SOUND, status=S.FILLED), LICENSED, Observations(), R.ALREADY_FILLED),
        (replace(SOUND, status=S.VOID), LICENSED, Observations(), R.CODE_VOID),
        (replace(SOUND, status=S.SCRAPPED), LICENSED, Observations(), R.SCRAPPED),
        (replace(SOUND, status=S.REPORTED_LOST), LICENSED, Observations(), R.REPORTED_LOST),
        (replace(SOUND, status=S.IN_INSPECTION), LICENSED, Observations(), R.IN_INSPECTION),
        (None, LICENSED, Observations(), R.UNREGISTERED),
        # Inspection due 2024-01-01, end of life 2028-01-01.
        (replace(SOUND, manufactured_on=date(2020, 1, 1)), LICENSED, Observations(), R.INSPECTION_OVERDUE),
        # Passed at year 10: inspection due at year 14, but the life ends at year 12.
        (
            replace(SOUND, manufactured_on=date(2014, 1, 1), last_passed_inspection_on=date(2024, 1, 1)),
            LICENSED,
            Observations(),
            R.PAST_SERVICE_LIFE,
        ),
        (replace(SOUND, owner_enterprise="fs-gas"), LICENSED, Observations(), R.NOT_OWNED_BY_FILLER),
        (replace(SOUND, tare_kg=None), LICENSED, Observations(), R.UNKNOWN_TARE),
        (SOUND, LICENSED, Observations(modified=True), R.MODIFIED),
        (SOUND, LICENSED, Observations(wrong_marking=True), R.WRONG_MARKING),
        (SOUND, LICENSED, Observations(damaged=True), R.DAMAGED),
        (SOUND, LICENSED, Observations(no_residual_pressure=True), R.NO_RESIDUAL_PRESSURE),
        (SOUND, replace(LICENSED, locked=True), Observations(), R.STATION_LOCKED),
        (SOUND, replace(LICENSED, licence_valid_until=date(2026, 6, 14)), Observations(), R.LICENCE_EXPIRED),
        (SOUND, replace(LICENSED, licence_valid_until=None), Observations(), R.LICENCE_EXPIRED),
    ],
    ids=lambda v: v.value if isinstance(v, RefusalReason) else "",
)
def test_each_reason_alone_refuses_the_fill(cylinder, station, observed, reason):
    assert fill_refusals(cylinder, station, TODAY, observed) == [reason]


@pytest.mark.parametrize("status", [S.FILLED, S.IN_TRANSIT, S.AT_USER])
def test_a_cylinder_not_returned_empty_since_its_last_fill_is_already_filled(status):
    assert fill_refusals(replace(SOUND, status=status), LICENSED, TODAY) == [R.ALREADY_FILLED]


@pytest.mark.parametrize("status", [S.IN_STOCK, S.RETURNED])
def test_a_cylinder_in_stock_or_returned_empty_has_no_status_reason(status):
    assert fill_refusals(replace(SOUND, status=status), LICENSED, TODAY) == []


def test_a_cylinder_of_an_entrusting_company_may_be_filled_and_one_of_another_may_not():
    station = replace(LICENSED, entrusted_by=frozenset({"fs-gas"}))
    assert fill_refusals(replace(SOUND, owner_enterprise="fs-gas"), station, TODAY) == []
    assert fill_refusals(replace(SOUND, owner_enterprise="hz-gas"), station, TODAY) == [R.NOT_OWNED_BY_FILLER]


def test_every_reason_that_applies_is_given_once_in_the_declared_order():
    worst = CylinderFacts(
        code="GZ-0000002",
        status=S.SCRAPPED,
        owner_enterprise="fs-gas",
        manufactured_on=date(2010, 5, 1),
        last_passed_inspection_on=None,
        tare_kg=None,
    )
    station = replace(LICENSED, locked=True, licence_valid_until=date(2025, 12, 31))
    everything = Observations(modified=True, wrong_marking=True, damaged=True, no_residual_pressure=True)
    reasons = fill_refusals(worst, station, TODAY, everything)
    assert reasons == [
        R.INSPECTION_OVERDUE,
        R.PAST_SERVICE_LIFE,
        R.SCRAPPED,
        R.NOT_OWNED_BY_FILLER,
        R.MODIFIED,
        R.WRONG_MARKING,
        R.DAMAGED,
        R.NO_RESIDUAL_PRESSURE,
        R.UNKNOWN_TARE,
        R.STATION_LOCKED,
        R.LICENCE_EXPIRED,
    ]
    assert len(set(reasons)) == len(reasons)
    declared = list(RefusalReason)
    assert reasons == sorted(reasons, key=declared.index)


def test_an_unregistered_cylinder_has_no_registry_reasons_but_the_stations_and_what_was_seen():
    station = replace(LICENSED, locked=True, licence_valid_until=None, enterprise="other")
    assert fill_refusals(None, station, TODAY) == [R.UNREGISTERED, R.STATION_LOCKED, R.LICENCE_EXPIRED]
    assert fill_refusals(None, station, TODAY, Observations(damaged=True)) == [
        R.UNREGISTERED,
        R.DAMAGED,
        R.STATION_LOCKED,
        R.LICENCE_EXPIRED,
    ]


def test_the_licence_is_valid_through_its_last_day_and_expired_the_day_after():
    station = replace(LICENSED, licence_valid_until=date(2026, 6, 15))
    assert fill_refusals(SOUND, station, date(2026, 6, 14)) == []
    assert fill_refusals(SOUND, station, date(2026, 6, 15)) == []
    assert fill_refusals(SOUND, station, date(2026, 6, 16)) == [R.LICENCE_EXPIRED]


# -- the safety dates ------------------------------------------------------------------------------


def test_inspection_is_due_four_years_after_manufacture_and_the_due_day_is_refused():
    cylinder = replace(SOUND, manufactured_on=date(2020, 5, 10))
    assert inspection_due(date(2020, 5, 10), None) == date(2024, 5, 10)
    assert fill_refusals(cylinder, LICENSED, date(2024, 5, 9)) == []
    assert fill_refusals(cylinder, LICENSED, date(2024, 5, 10)) == [R.INSPECTION_OVERDUE]
    assert fill_refusals(cylinder, LICENSED, date(2024, 5, 11)) == [R.INSPECTION_OVERDUE]


def test_inspection_is_due_four_years_after_the_last_passed_inspection():
    assert inspection_due(date(2016, 5, 10), date(2021, 9, 1)) == date(2025, 9, 1)


def test_without_inspection_the_life_ends_at_eight_years():
    cylinder = replace(SOUND, manufactured_on=date(2016, 5, 10))
    assert end_of_life(date(2016, 5, 10), None) == date(2024, 5, 10)
    assert fill_refusals(cylinder, LICENSED, date(2024, 5, 9)) == [R.INSPECTION_OVERDUE]
    assert fill_refusals(cylinder, LICENSED, date(2024, 5, 10)) == [R.INSPECTION_OVERDUE, R.PAST_SERVICE_LIFE]


def test_an_inspection_passed_at_year_eight_extends_the_life_to_twelve_years():
    made, passed = date(2016, 5, 10), date(2024, 5, 10)
    assert end_of_life(made, passed) == date(2028, 5, 10)
    cylinder = replace(SOUND, manufactured_on=made, last_passed_inspection_on=passed)
    assert fill_refusals(cylinder, LICENSED, date(2028, 5, 9)) == []
    assert fill_refusals(cylinder, LICENSED, date(2028, 5, 10)) == [R.INSPECTION_OVERDUE, R.PAST_SERVICE_LIFE]


def test_an_inspection_passed_at_year_five_extends_the_life_to_nine_years():
    assert end_of_life(date(2016, 5, 10), date(2021, 5, 10)) == date(2025, 5, 10)


def test_an_early_inspection_does_not_shorten_the_design_life():
    assert end_of_life(date(2016, 5, 10), date(2018, 5, 10)) == date(2024, 5, 10)


def test_an_inspection_passed_at_year_ten_cannot_take_the_life_past_twelve_years():
    made, passed = date(2016, 5, 10), date(2026, 5, 10)
    assert end_of_life(made, passed) == date(2028, 5, 10)
    assert inspection_due(made, passed) == date(2030, 5, 10)
    cylinder = replace(SOUND, manufactured_on=made, last_passed_inspection_on=passed)
    assert fill_refusals(cylinder, LICENSED, date(2028, 5, 9)) == []
    assert fill_refusals(cylinder, LICENSED, date(2028, 5, 10)) == [R.PAST_SERVICE_LIFE]


def test_a_leap_day_anniversary_falls_on_the_leap_day_or_on_28_february():
    assert inspection_due(date(2016, 2, 29), None) == date(2020, 2, 29)
    assert add_years(date(2020, 2, 29), 1) == date(2021, 2, 28)
    assert add_years(date(2019, 2, 28), 1) == date(2020, 2, 28)
    assert end_of_life(date(2016, 2, 29), None) == date(2024, 2, 29)
    assert end_of_life(date(2016, 2, 29), date(2021, 2, 28)) == date(2025, 2, 28)


def test_a_leap_day_cylinder_is_overdue_from_the_leap_day_four_years_on():
    cylinder = replace(SOUND, manufactured_on=date(2016, 2, 29))
    assert fill_refusals(cylinder, LICENSED, date(2020, 2, 28)) == []
    assert fill_refusals(cylinder, LICENSED, date(2020, 2, 29)) == [R.INSPECTION_OVERDUE]


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 3, 15), 6, date(2026, 9, 15)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2027, 8, 31), 6, date(2028, 2, 29)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2026, 11, 30), 14, date(2028, 1, 30)),
        (date(2026, 3, 15), -3, date(2025, 12, 15)),
    ],
)
def test_months_are_calendar_months_clamped_to_the_end_of_a_shorter_month(day, months, expected):
    assert add_months(day, months) == expected


def test_a_stove_may_be_used_until_the_day_before_its_eighth_anniversary_of_sale():
    sold = date(2018, 3, 1)
    assert stove_life_ends(sold) == date(2026, 3, 1)
    assert not stove_past_life(sold, date(2026, 2, 28))
    assert stove_past_life(sold, date(2026, 3, 1))
    assert stove_past_life(sold, date(2026, 3, 2))


def test_a_stove_sold_on_a_leap_day_ends_on_the_leap_day_eight_years_on():
    assert stove_life_ends(date(2016, 2, 29)) == date(2024, 2, 29)


def test_the_end_of_life_is_near_within_six_calendar_months_before_it():
    end = date(2026, 12, 15)
    assert not near_end_of_life(end, date(2026, 6, 14))
    assert near_end_of_life(end, date(2026, 6, 15))
    assert near_end_of_life(end, date(2026, 12, 14))
    assert not near_end_of_life(end, date(2026, 12, 15))  # already over, not near
    assert not near_end_of_life(end, date(2026, 12, 16))


def test_near_end_of_life_counts_months_to_the_end_of_a_short_month():
    assert near_end_of_life(date(2027, 2, 28), date(2026, 8, 31))
    assert not near_end_of_life(date(2027, 3, 1), date(2026, 8, 31))
    assert near_end_of_life(date(2027, 3, 1), date(2026, 8, 31), months=7)


# -- implausible travel ----------------------------------------------------------------------------

TIANHE = (113.3245, 23.1291)
BAIYUN_AIRPORT = (113.299, 23.392)
NOON = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_tianhe_to_baiyun_airport_is_about_29_km():
    assert distance_m(TIANHE, BAIYUN_AIRPORT) == pytest.approx(29_349, rel=1e-3)
    assert distance_m(BAIYUN_AIRPORT, TIANHE) == distance_m(TIANHE, BAIYUN_AIRPORT)
    assert distance_m(TIANHE, TIANHE) == 0.0


def test_a_cylinder_cannot_cross_the_city_in_ten_minutes_but_can_in_an_hour():
    assert implausible_travel(TIANHE, NOON, BAIYUN_AIRPORT, NOON + timedelta(minutes=10))
    assert not implausible_travel(TIANHE, NOON, BAIYUN_AIRPORT, NOON + timedelta(hours=1))


def test_the_speed_limit_decides_around_the_time_the_trip_needs():
    # 29.35 km at 120 km/h takes 14.7 minutes.
    assert implausible_travel(TIANHE, NOON, BAIYUN_AIRPORT, NOON + timedelta(minutes=14))
    assert not implausible_travel(TIANHE, NOON, BAIYUN_AIRPORT, NOON + timedelta(minutes=15))
    assert not implausible_travel(
        TIANHE, NOON, BAIYUN_AIRPORT, NOON + timedelta(minutes=10), max_speed_kmh=200.0
    )


def test_the_order_of_the_two_scans_does_not_matter():
    assert implausible_travel(BAIYUN_AIRPORT, NOON + timedelta(minutes=10), TIANHE, NOON)


@pytest.mark.parametrize("apart", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_two_scans_at_the_same_spot_are_never_implausible(apart):
    assert not implausible_travel(TIANHE, NOON, TIANHE, NOON + apart)


def test_within_50_m_is_the_same_place_and_beyond_it_the_same_instant_is_implausible():
    near = (TIANHE[0], TIANHE[1] + 0.0004)  # 44 m north
    beyond = (TIANHE[0], TIANHE[1] + 0.0009)  # 100 m north
    assert not implausible_travel(TIANHE, NOON, near, NOON)
    assert implausible_travel(TIANHE, NOON, beyond, NOON)


# -- the leak drill --------------------------------------------------------------------------------

DRILL_ORDER = [
    IncidentStep.REPORTED,
    IncidentStep.NOTIFIED,
    IncidentStep.EVACUATED,
    IncidentStep.CORDONED,
    IncidentStep.IGNITION_CONTROLLED,
    IncidentStep.VENTILATED,
    IncidentStep.MEASURED_SAFE,
    IncidentStep.REPAIRED,
    IncidentStep.CLOSED,
]


def test_a_leak_is_taken_through_every_step_of_the_drill_in_order():
    step = IncidentStep.REPORTED
    walked = [step]
    while (following := next_step(step)) is not None:
        step = advance(step, following)
        walked.append(step)
    assert walked == DRILL_ORDER


@pytest.mark.parametrize(
    ("current", "step"),
    [
        (current, step)
        for i, current in enumerate(DRILL_ORDER)
        for j, step in enumerate(DRILL_ORDER)
        if j != i + 1
    ],
    ids=lambda v: v.value,
)
def test_a_step_other_than_the_next_is_refused(current, step):
    with pytest.raises(StepOutOfOrder) as refused:
        advance(current, step)
    assert (refused.value.current, refused.value.step) == (current, step)
    following = DRILL_ORDER.index(current) + 1
    assert refused.value.expected == (DRILL_ORDER[following] if following < len(DRILL_ORDER) else None)


def test_a_reported_leak_cannot_be_closed_straight_away():
    with pytest.raises(StepOutOfOrder, match="the next step is notified"):
        advance(IncidentStep.REPORTED, IncidentStep.CLOSED)


def test_nothing_follows_a_closed_incident():
    assert next_step(IncidentStep.CLOSED) is None
    with pytest.raises(StepOutOfOrder, match="the incident is closed"):
        advance(IncidentStep.CLOSED, IncidentStep.REPORTED)


def test_an_incident_is_open_until_it_is_closed():
    assert [step for step in IncidentStep if not is_open(step)] == [IncidentStep.CLOSED]


def test_the_city_the_fire_brigade_and_the_gas_company_are_notified():
    assert NOTIFIED_PARTIES == ("city_management", "fire_brigade", "gas_company")
