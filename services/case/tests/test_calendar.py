"""Working-time deadlines on the Chinese work calendar (office hours 09:00–12:00, 13:30–18:00)."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time, timedelta

import pytest

from citygrid.clock import CITY_TIMEZONE
from services.case.domain.calendar import (
    DEFAULT_CALENDAR_DIRECTORY,
    LimitUnit,
    TimeLimit,
    WorkCalendar,
    calendar_from_documents,
    is_configured,
    load_calendar,
)

HOURS = LimitUnit.WORKING_HOURS
DAYS = LimitUnit.WORKING_DAYS
NATURAL = LimitUnit.NATURAL_HOURS


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CITY_TIMEZONE)


@pytest.fixture(scope="module")
def calendar() -> WorkCalendar:
    return load_calendar()


def document(year: object = 2026, **overrides):
    base = {
        "year": year,
        "source": "test",
        "holidays": [{"name": "元旦", "dates": [f"{year}-01-01"]}],
        "makeup_workdays": [f"{year}-01-04"] if year == 2026 else [],
    }
    base.update(overrides)
    return base


# --- working hours -------------------------------------------------------------------------------


def test_working_hours_within_one_morning_end_the_same_morning(calendar):
    assert calendar.add(at(2026, 3, 10, 9), TimeLimit(2, HOURS)) == at(2026, 3, 10, 11)


def test_two_working_hours_from_friday_afternoon_end_on_monday_morning(calendar):
    assert calendar.add(at(2026, 3, 13, 17), TimeLimit(2, HOURS)) == at(2026, 3, 16, 10)


def test_the_lunch_break_is_not_working_time(calendar):
    assert calendar.add(at(2026, 3, 10, 11), TimeLimit(2, HOURS)) == at(2026, 3, 10, 14, 30)


def test_a_case_reported_before_office_hours_starts_counting_at_nine(calendar):
    assert calendar.add(at(2026, 3, 10, 7), TimeLimit(1, HOURS)) == at(2026, 3, 10, 10)


def test_a_case_reported_after_office_hours_starts_counting_the_next_morning(calendar):
    assert calendar.add(at(2026, 3, 10, 20), TimeLimit(1, HOURS)) == at(2026, 3, 11, 10)


def test_a_case_reported_during_lunch_starts_counting_at_half_past_one(calendar):
    assert calendar.add(at(2026, 3, 10, 12, 15), TimeLimit(1, HOURS)) == at(2026, 3, 10, 14, 30)


def test_a_case_reported_on_a_holiday_starts_counting_on_the_first_workday_after_it(calendar):
    # National Day 2026 runs 1–7 October; the 8th is a Thursday.
    assert calendar.add(at(2026, 10, 3, 10), TimeLimit(1, HOURS)) == at(2026, 10, 8, 10)


def test_a_deadline_that_fills_the_afternoon_exactly_stays_at_eighteen_hundred(calendar):
    assert calendar.add(at(2026, 3, 10, 16), TimeLimit(2, HOURS)) == at(2026, 3, 10, 18)


def test_a_deadline_that_fills_the_morning_exactly_stays_at_noon(calendar):
    assert calendar.add(at(2026, 3, 10, 11), TimeLimit(1, HOURS)) == at(2026, 3, 10, 12)


def test_a_make_up_saturday_counts_as_a_workday(calendar):
    # 10 October 2026 is a Saturday worked in exchange for the National Day holiday.
    assert calendar.is_workday(date(2026, 10, 10))
    assert calendar.add(at(2026, 10, 9, 17), TimeLimit(2, HOURS)) == at(2026, 10, 10, 10)


def test_an_ordinary_weekend_is_skipped(calendar):
    assert not calendar.is_workday(date(2026, 3, 14))
    assert not calendar.is_workday(date(2026, 3, 15))
    assert calendar.add(at(2026, 3, 14, 10), TimeLimit(1, HOURS)) == at(2026, 3, 16, 10)


def test_national_day_2025_is_skipped_together_with_mid_autumn(calendar):
    # 2025: 1–8 October off (National Day and Mid-Autumn merged); the 9th is a Thursday.
    assert calendar.add(at(2025, 9, 30, 16), TimeLimit(3, HOURS)) == at(2025, 10, 9, 10)


def test_national_day_2026_is_skipped(calendar):
    assert calendar.add(at(2026, 9, 30, 17), TimeLimit(2, HOURS)) == at(2026, 10, 8, 10)


def test_a_weekday_public_holiday_is_a_rest_day(calendar):
    assert date(2026, 1, 1).weekday() == 3
    assert not calendar.is_workday(date(2026, 1, 1))


# --- working days --------------------------------------------------------------------------------


def test_one_working_day_is_the_same_time_on_the_next_workday(calendar):
    assert calendar.add(at(2026, 3, 10, 10, 20), TimeLimit(1, DAYS)) == at(2026, 3, 11, 10, 20)


def test_one_working_day_from_friday_is_monday(calendar):
    assert calendar.add(at(2026, 3, 13, 15), TimeLimit(1, DAYS)) == at(2026, 3, 16, 15)


def test_working_days_from_outside_office_time_start_at_the_next_working_moment(calendar):
    # Friday evening → counting starts Monday 09:00 → one working day later is Tuesday 09:00.
    assert calendar.add(at(2026, 3, 13, 19), TimeLimit(1, DAYS)) == at(2026, 3, 17, 9)


def test_spring_festival_2026_week_is_skipped_for_a_case_reported_on_the_make_up_saturday(calendar):
    # 14 Feb 2026 (Saturday) is worked; 15–23 Feb is Spring Festival; 24 Feb is a Tuesday.
    assert calendar.add(at(2026, 2, 14, 10), TimeLimit(1, DAYS)) == at(2026, 2, 24, 10)


def test_spring_festival_2025_week_is_skipped_for_a_case_reported_the_day_before_it(calendar):
    # 28 Jan – 4 Feb 2025 off (from New Year's Eve, the day added in 2025); 5 Feb is a Wednesday.
    assert calendar.add(at(2025, 1, 27, 10), TimeLimit(1, DAYS)) == at(2025, 2, 5, 10)


def test_working_days_across_labour_day_land_on_the_make_up_saturday(calendar):
    # 1–5 May 2026 off; 6, 7, 8 May worked; Saturday 9 May worked in exchange.
    assert calendar.add(at(2026, 4, 30, 10), TimeLimit(3, DAYS)) == at(2026, 5, 8, 10)
    assert calendar.add(at(2026, 4, 30, 10), TimeLimit(4, DAYS)) == at(2026, 5, 9, 10)


def test_working_days_cross_from_one_configured_year_into_the_next(calendar):
    # 31 Dec 2025 (Wednesday) → 1–3 Jan 2026 off → Sunday 4 Jan 2026 worked.
    assert calendar.add(at(2025, 12, 31, 11), TimeLimit(1, DAYS)) == at(2026, 1, 4, 11)


def test_half_a_working_day_is_three_and_three_quarter_working_hours(calendar):
    assert calendar.add(at(2026, 3, 9, 9), TimeLimit(0.5, DAYS)) == at(2026, 3, 9, 14, 15)


def test_one_and_a_half_working_days_add_the_half_after_the_whole_day(calendar):
    # Monday 15:00 → Tuesday 15:00 → 3 h left on Tuesday, 0.75 h on Wednesday morning.
    assert calendar.add(at(2026, 3, 9, 15), TimeLimit(1.5, DAYS)) == at(2026, 3, 11, 9, 45)


def test_a_twenty_working_day_deadline_spans_national_day(calendar):
    assert calendar.add(at(2026, 9, 28, 10), TimeLimit(20, DAYS)) == at(2026, 10, 30, 10)


def test_a_twenty_working_day_deadline_is_found_day_by_day_not_minute_by_minute(calendar):
    asked: list[date] = []

    class CountingCalendar(WorkCalendar):
        def is_workday(self, day: date) -> bool:
            asked.append(day)
            return super().is_workday(day)

    counting = CountingCalendar(calendar.holidays, calendar.makeup_workdays, years=calendar.years)
    for limit in (TimeLimit(20, DAYS), TimeLimit(150, HOURS)):
        asked.clear()
        assert counting.add(at(2026, 9, 28, 10), limit) == calendar.add(at(2026, 9, 28, 10), limit)
        assert len(asked) < 100


# --- natural hours -------------------------------------------------------------------------------


def test_natural_hours_ignore_holidays_weekends_and_office_hours(calendar):
    assert calendar.add(at(2026, 2, 16, 22), TimeLimit(4, NATURAL)) == at(2026, 2, 17, 2)
    assert calendar.add(at(2026, 3, 13, 17), TimeLimit(48, NATURAL)) == at(2026, 3, 15, 17)


def test_fractional_natural_hours_are_minutes(calendar):
    assert calendar.add(at(2026, 3, 10, 11, 50), TimeLimit(0.5, NATURAL)) == at(2026, 3, 10, 12, 20)


# --- time zones ----------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", list(LimitUnit))
def test_deadlines_are_returned_in_shanghai_time(calendar, unit):
    deadline = calendar.add(datetime(2026, 3, 10, 2, tzinfo=UTC), TimeLimit(1, unit))
    assert deadline.tzinfo == CITY_TIMEZONE
    assert deadline.utcoffset() == timedelta(hours=8)


def test_a_late_utc_evening_is_read_as_the_next_city_morning(calendar):
    # 23:30 UTC on Thursday is 07:30 on Friday in the city: before office hours.
    assert calendar.add(datetime(2026, 3, 12, 23, 30, tzinfo=UTC), TimeLimit(1, HOURS)) == at(2026, 3, 13, 10)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.add(datetime(2026, 3, 10, 9), TimeLimit(1, HOURS)),
        lambda c: c.add(datetime(2026, 3, 10, 9), TimeLimit(1, NATURAL)),
        lambda c: c.working_seconds_between(datetime(2026, 3, 10, 9), at(2026, 3, 10, 10)),
        lambda c: c.working_seconds_between(at(2026, 3, 10, 9), datetime(2026, 3, 10, 10)),
        lambda c: c.next_working_moment(datetime(2026, 3, 10, 9)),
    ],
)
def test_naive_datetimes_are_refused(calendar, call):
    with pytest.raises(ValueError, match="timezone-aware"):
        call(calendar)


# --- working_seconds_between and next_working_moment ----------------------------------------------


def test_working_seconds_between_skip_lunch_nights_and_weekends(calendar):
    assert calendar.working_seconds_between(at(2026, 3, 10, 11), at(2026, 3, 10, 14)) == 1.5 * 3600
    assert calendar.working_seconds_between(at(2026, 3, 13, 17), at(2026, 3, 16, 10)) == 2 * 3600
    # Make-up Saturday 14 Feb and Tuesday 24 Feb; 15–23 Feb is Spring Festival.
    assert calendar.working_seconds_between(at(2026, 2, 14, 0), at(2026, 2, 25, 0)) == 2 * 7.5 * 3600


def test_working_seconds_between_are_zero_when_the_end_is_not_after_the_start(calendar):
    assert calendar.working_seconds_between(at(2026, 3, 10, 11), at(2026, 3, 10, 11)) == 0
    assert calendar.working_seconds_between(at(2026, 3, 10, 11), at(2026, 3, 10, 10)) == 0


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 3, 10, 10), at(2026, 3, 10, 10)),
        (at(2026, 3, 10, 9), at(2026, 3, 10, 9)),
        (at(2026, 3, 10, 12), at(2026, 3, 10, 13, 30)),
        (at(2026, 3, 10, 18), at(2026, 3, 11, 9)),
        (at(2026, 3, 13, 18), at(2026, 3, 16, 9)),
        (at(2026, 2, 13, 20), at(2026, 2, 14, 9)),
        (at(2026, 2, 15, 9), at(2026, 2, 24, 9)),
    ],
)
def test_next_working_moment_is_the_moment_itself_or_the_next_period_start(calendar, moment, expected):
    assert calendar.next_working_moment(moment) == expected


def test_working_seconds_between_measure_exactly_the_limit_that_add_was_given(calendar):
    rng = random.Random(20260101)
    first, last = at(2025, 1, 1), at(2026, 10, 1)
    span = int((last - first).total_seconds())
    for _ in range(400):
        start = first + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(1_000_000))
        if rng.random() < 0.5:
            limit = TimeLimit(round(rng.uniform(0.01, 120), 4), HOURS)
            seconds = limit.amount * 3600
        else:
            amount = rng.choice([rng.randint(1, 30), round(rng.uniform(0.05, 25), 3)])
            limit = TimeLimit(amount, DAYS)
            seconds = limit.amount * 7.5 * 3600
        deadline = calendar.add(start, limit)
        assert deadline > start
        assert deadline.tzinfo == CITY_TIMEZONE
        assert calendar.working_seconds_between(start, deadline) == pytest.approx(seconds, abs=1e-6), (
            start,
            limit,
        )


# --- limits and calendar construction ------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, -0.5, float("nan"), float("inf")])
def test_a_time_limit_must_be_a_positive_finite_amount(amount):
    with pytest.raises(ValueError, match="> 0"):
        TimeLimit(amount, HOURS)


def test_a_time_limit_accepts_the_unit_as_its_json_string():
    assert TimeLimit(2, "working_days").unit is DAYS  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fortnights"):
        TimeLimit(2, "fortnights")  # type: ignore[arg-type]


def test_office_hours_are_configurable():
    single = WorkCalendar(frozenset(), frozenset(), office_hours=((time(8, 30), time(17, 30)),))
    assert single.working_day_length == timedelta(hours=9)
    assert single.add(at(2026, 3, 10, 12), TimeLimit(6, HOURS)) == at(2026, 3, 11, 9)
    assert single.add(at(2026, 3, 10, 12), TimeLimit(0.5, DAYS)) == at(2026, 3, 10, 16, 30)


@pytest.mark.parametrize(
    "office_hours",
    [
        (),
        ((time(12), time(9)),),
        ((time(9), time(12)), (time(11), time(14))),
        ((time(13), time(18)), (time(9), time(12))),
    ],
)
def test_office_hours_must_be_ordered_non_overlapping_periods(office_hours):
    with pytest.raises(ValueError, match="office"):
        WorkCalendar(frozenset(), frozenset(), office_hours=office_hours)


def test_a_calendar_cannot_list_a_day_as_both_holiday_and_make_up_day():
    day = date(2026, 1, 4)
    with pytest.raises(ValueError, match="both"):
        WorkCalendar(frozenset({day}), frozenset({day}))


def test_years_without_a_published_schedule_fall_back_to_monday_to_friday(calendar):
    assert not is_configured(calendar, date(2031, 1, 1))
    assert calendar.is_workday(date(2031, 1, 1))  # a Wednesday; the real 元旦 is unknown here
    assert not calendar.is_workday(date(2031, 1, 4))


def test_is_configured_knows_the_shipped_years(calendar):
    assert is_configured(calendar, date(2025, 6, 1))
    assert is_configured(calendar, date(2026, 12, 31))
    assert not is_configured(calendar, date(2024, 12, 31))


# --- documents and data files --------------------------------------------------------------------


def test_calendar_from_documents_merges_years():
    merged = calendar_from_documents([document(2026), document(2025)])
    assert merged.years == frozenset({2025, 2026})
    assert merged.holidays == frozenset({date(2025, 1, 1), date(2026, 1, 1)})
    assert merged.makeup_workdays == frozenset({date(2026, 1, 4)})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (document(holidays=[{"name": "元旦", "dates": ["2026-01-04"]}]), "both"),
        (document(makeup_workdays=["2025-12-28"]), "outside the document's year"),
        (document(holidays=[{"name": "元旦", "dates": ["2027-01-01"]}]), "outside the document's year"),
        (document(holidays=[{"name": "元旦", "dates": ["2026-13-01"]}]), "malformed date"),
        (document(holidays=[{"name": "元旦", "dates": ["2026-02-30"]}]), "malformed date"),
        (document(holidays=[{"name": "元旦", "dates": ["2026/01/01"]}]), "malformed date"),
        (document(holidays=[{"name": "元旦", "dates": ["20260101"]}]), "malformed date"),
        (document(holidays=[{"name": "元旦", "dates": [20260101]}]), "malformed date"),
        (document(makeup_workdays=["4 Jan 2026"]), "malformed date"),
        (document(holidays=[{"name": "元旦", "dates": ["2026-01-01", "2026-01-01"]}]), "more than once"),
        (document(makeup_workdays=["2026-01-05"]), "is a weekday"),
        (document(holidays=[{"name": "", "dates": ["2026-01-01"]}]), "name"),
        (document(holidays=[{"name": "元旦", "dates": []}]), "at least one date"),
        (document(holidays=[{"dates": ["2026-01-01"]}]), "'name' and 'dates'"),
        (document(holidays="2026-01-01"), "must be a list"),
        (document(year="2026"), "integer year"),
        (document(year=True), "integer year"),
        (document(source=7), "source"),
        (document(makeup_workday=["2026-01-04"]), "unknown"),
        ({"year": 2026, "holidays": []}, "missing 'makeup_workdays'"),
    ],
)
def test_invalid_documents_are_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        calendar_from_documents([bad])


def test_two_documents_for_the_same_year_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        calendar_from_documents([document(2026), document(2026)])


def test_load_calendar_finds_the_shipped_years():
    shipped = load_calendar()
    assert {2025, 2026} <= shipped.years
    assert date(2026, 2, 17) in shipped.holidays  # 2026 Spring Festival
    assert date(2025, 1, 28) in shipped.holidays  # 2025 New Year's Eve, a holiday since 2025
    assert date(2025, 5, 2) in shipped.holidays  # 2025 Labour Day's added day


def test_load_calendar_can_load_selected_years_only():
    only_2026 = load_calendar(years=[2026])
    assert only_2026.years == frozenset({2026})
    assert all(day.year == 2026 for day in only_2026.holidays | only_2026.makeup_workdays)


def test_load_calendar_refuses_a_year_without_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="2099"):
        load_calendar(years=[2099])
    with pytest.raises(FileNotFoundError, match=r"no <year>\.json"):
        load_calendar(directory=tmp_path)


def test_load_calendar_reads_another_directory_and_checks_file_name_against_year(tmp_path):
    (tmp_path / "2030.json").write_text(json.dumps(document(2030)), encoding="utf-8")
    assert load_calendar(directory=tmp_path).years == frozenset({2030})
    (tmp_path / "2031.json").write_text(json.dumps(document(2030)), encoding="utf-8")
    with pytest.raises(ValueError, match="file name says 2031"):
        load_calendar(directory=tmp_path)


def test_load_calendar_reports_a_file_that_is_not_json(tmp_path):
    (tmp_path / "2030.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calendar(directory=tmp_path)


def test_every_shipped_file_has_year_consistent_dates_and_no_overlap():
    paths = sorted(DEFAULT_CALENDAR_DIRECTORY.glob("*.json"))
    assert paths
    for path in paths:
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw["year"] == int(path.stem), path
        assert raw["source"].startswith(f"国务院办公厅关于{raw['year']}年部分节假日安排的通知"), path
        holidays = [date.fromisoformat(text) for entry in raw["holidays"] for text in entry["dates"]]
        makeups = [date.fromisoformat(text) for text in raw["makeup_workdays"]]
        assert len(holidays) == len(set(holidays)), path
        assert len(makeups) == len(set(makeups)), path
        assert not set(holidays) & set(makeups), path
        assert all(day.year == raw["year"] for day in holidays + makeups), path
        assert all(day.weekday() >= 5 for day in makeups), path
        assert calendar_from_documents([raw]).years == frozenset({raw["year"]})


@pytest.mark.parametrize(
    ("year", "name", "first", "days"),
    [
        (2025, "春节", date(2025, 1, 28), 8),
        (2025, "劳动节", date(2025, 5, 1), 5),
        (2025, "国庆节、中秋节", date(2025, 10, 1), 8),
        (2026, "元旦", date(2026, 1, 1), 3),
        (2026, "春节", date(2026, 2, 15), 9),
        (2026, "国庆节", date(2026, 10, 1), 7),
    ],
)
def test_shipped_long_holidays_match_the_state_council_notices(year, name, first, days):
    raw = json.loads((DEFAULT_CALENDAR_DIRECTORY / f"{year}.json").read_text(encoding="utf-8"))
    (entry,) = [entry for entry in raw["holidays"] if entry["name"] == name]
    assert entry["dates"] == [(first + timedelta(days=n)).isoformat() for n in range(days)]
