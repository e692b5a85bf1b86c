"""Evaluation arithmetic and today's gauges, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.case.domain.evaluation import Counts, GroupFigures, InvalidPeriod, Period, ratio
from services.case.evaluation import TodayGauges


def counts(**overrides: object) -> Counts:
    values: dict[str, object] = dict.fromkeys(Counts.__dataclass_fields__, 0)
    values.update(mean_handling_seconds=None, median_handling_seconds=None)
    values.update(overrides)
    return Counts(**values)  # type: ignore[arg-type]


def test_a_rate_of_nothing_due_is_none_not_zero():
    assert ratio(0, 0) is None
    assert ratio(0, 4) == 0.0
    assert ratio(3, 4) == 0.75


def test_rates_divide_by_the_cases_due():
    figures = counts(
        due_to_handle=4, handled=3, handled_on_time=2, due_to_close=5, closed_of_due=4, reworked=1
    )
    assert (figures.handling_rate, figures.on_time_handling_rate) == (0.75, 0.5)
    assert (figures.closure_rate, figures.rework_rate) == (0.8, 0.2)
    assert counts(mean_handling_seconds=5400.0).mean_handling_hours == 1.5


def test_a_period_must_start_before_it_ends_and_span_at_most_366_days():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert Period.of(start, start + timedelta(days=366)).end == start + timedelta(days=366)
    for end in (start, start - timedelta(seconds=1), start + timedelta(days=366, seconds=1)):
        with pytest.raises(InvalidPeriod):
            Period.of(start, end)


def test_today_is_the_citys_calendar_day():
    # 17:30 UTC is already the next day in Guangzhou (+08:00).
    day = Period.city_day(datetime(2026, 3, 1, 17, 30, tzinfo=UTC))
    assert day.start.isoformat() == "2026-03-02T00:00:00+08:00"
    assert day.end.isoformat() == "2026-03-03T00:00:00+08:00"


def test_a_districts_gauges_go_when_it_has_no_cases_today_and_a_rate_of_nothing_is_absent():
    registry = CollectorRegistry()
    gauges = TodayGauges(registry)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    gauges.show([GroupFigures("440106", counts(reported=2)), GroupFigures("440105", counts(reported=1))], now)
    text = generate_latest(registry).decode()
    assert 'citygrid_case_today_reported_cases{district="440105"} 1.0' in text
    assert "citygrid_case_today_closure_ratio{" not in text
    gauges.show([GroupFigures("440106", counts(reported=3, due_to_close=1))], now)
    text = generate_latest(registry).decode()
    assert 'citygrid_case_today_reported_cases{district="440106"} 3.0' in text
    assert 'district="440105"' not in text
    assert 'citygrid_case_today_closure_ratio{district="440106"} 0.0' in text
