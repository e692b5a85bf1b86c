"""Evaluation (综合评价) in SQL: a period's figures per district, street, unit or category in one
query over the cases a period touches, and today's figures per district as Prometheus gauges.

Both run on the analytics engine (``Runtime.analytics``: longer time limits, a pool of its own). A
client's evaluation is further limited to what the gateway waits for, so it ends as a 503 problem
rather than running on after its client is gone. Today's figures are computed once for all
replicas, by the replica that holds the job's advisory lock when the stored ones are stale, and
every replica shows the stored ones (``evaluation_snapshots``).

The definitions are in docs/evaluation.md. Each case row carries when it was reported, registered,
(last) dispatched, (last) handled and closed; the history adds, through a small partial index, which
cases were reworked, got an approved extension or were ever handled after their deadline. So a
period reads its cases by four range indexes and joins only those marks, never the whole history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.db import milliseconds, transaction_time
from citygrid.runtime import Runtime
from services.case.domain.evaluation import Counts, Evaluation, GroupFigures, Grouping, Period
from services.case.models import EVALUATION_MARKS_SQL, EvaluationSnapshot

GROUP_COLUMNS: dict[Grouping, str] = {
    Grouping.DISTRICT: "c.district_code",
    Grouping.STREET: "c.street_code",
    Grouping.UNIT: "c.unit",
    Grouping.CATEGORY: "c.category_code",
}

IN_PERIOD = "({column} >= :start AND {column} < :end)"

# The cases of the period, each with the cohorts it belongs to (see docs/evaluation.md).
_EVALUATION_SQL = """
WITH marks AS (
    SELECT case_id,
           bool_or(action = 'rework') AS reworked,
           bool_or(action = 'extension_approved') AS extended,
           bool_or(action = 'handle') AS handled_late
    FROM case_history
    WHERE at >= :start AND ({marks})
    GROUP BY case_id
), scoped AS (
    SELECT {key} AS key,
           c.id,
           c.status,
           c.dispatched_at,
           c.handled_at,
           {reported} AS reported,
           {registered} AS registered,
           {closed} AS closed,
           {dispatched} AND c.status NOT IN ('registered', 'cancelled') AS due_to_handle,
           c.stage = 'handle' AND (c.overdue_at IS NOT NULL OR c.deadline_at < now()) AS past_deadline,
           {registered} AND c.status <> 'cancelled' AS due_to_close
    FROM cases c
    WHERE {touches_period} {district_filter}
), flagged AS (
    SELECT s.*,
           s.due_to_handle AND s.status IN ('handled', 'closed') AS handled,
           coalesce(m.handled_late, false) AS handled_late,
           coalesce(m.reworked, false) AS reworked,
           coalesce(m.extended, false) AS extended
    FROM scoped s LEFT JOIN marks m ON m.case_id = s.id
)
SELECT key,
       GROUPING(key) = 1 AS is_total,
       count(*) FILTER (WHERE reported) AS reported,
       count(*) FILTER (WHERE registered) AS registered,
       count(*) FILTER (WHERE closed) AS closed,
       count(*) FILTER (WHERE due_to_handle) AS due_to_handle,
       count(*) FILTER (WHERE handled) AS handled,
       count(*) FILTER (WHERE handled AND NOT handled_late) AS handled_on_time,
       count(*) FILTER (WHERE due_to_handle AND past_deadline) AS overdue_pending,
       count(*) FILTER (WHERE due_to_handle AND extended) AS extended,
       count(*) FILTER (WHERE due_to_close) AS due_to_close,
       count(*) FILTER (WHERE due_to_close AND status = 'closed') AS closed_of_due,
       count(*) FILTER (WHERE due_to_close AND reworked) AS reworked,
       avg(extract(epoch FROM handled_at - dispatched_at)) FILTER (WHERE handled) AS mean_handling_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM handled_at - dispatched_at))
           FILTER (WHERE handled) AS median_handling_seconds
FROM flagged
GROUP BY GROUPING SETS ((key), ())
"""


MEMBERSHIP = {
    "reported": IN_PERIOD.format(column="c.created_at"),
    "registered": IN_PERIOD.format(column="c.registered_at"),
    "dispatched": IN_PERIOD.format(column="c.dispatched_at"),
    "closed": IN_PERIOD.format(column="c.closed_at"),
}

# The cases a period touches: reported, registered, (last) dispatched or closed in it. Each term
# has its range index, so a day is read through them; a month or more is cheaper as one scan.
TOUCHES_PERIOD_SQL = "(" + " OR ".join(MEMBERSHIP.values()) + ")"


def evaluation_sql(by: Grouping, *, district: bool) -> str:
    return _EVALUATION_SQL.format(
        marks=EVALUATION_MARKS_SQL,
        key=GROUP_COLUMNS[by],
        touches_period=TOUCHES_PERIOD_SQL,
        district_filter="AND c.district_code = :district" if district else "",
        **MEMBERSHIP,
    )


def _counts(row: Any) -> Counts:
    def seconds(value: Any) -> float | None:
        return None if value is None else float(value)

    return Counts(
        reported=row.reported,
        registered=row.registered,
        closed=row.closed,
        due_to_handle=row.due_to_handle,
        handled=row.handled,
        handled_on_time=row.handled_on_time,
        overdue_pending=row.overdue_pending,
        extended=row.extended,
        due_to_close=row.due_to_close,
        closed_of_due=row.closed_of_due,
        reworked=row.reworked,
        mean_handling_seconds=seconds(row.mean_handling_seconds),
        median_handling_seconds=seconds(row.median_handling_seconds),
    )


EMPTY = Counts(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None)


async def evaluate(
    session: AsyncSession, period: Period, by: Grouping, *, district: str | None = None
) -> Evaluation:
    """The figures of ``period`` per group, and for all its cases together (``total``)."""
    parameters: dict[str, Any] = {"start": period.start, "end": period.end}
    if district is not None:
        parameters["district"] = district
    rows = (await session.execute(text(evaluation_sql(by, district=district is not None)), parameters)).all()
    total = next((_counts(row) for row in rows if row.is_total), EMPTY)
    groups = [GroupFigures(row.key, _counts(row)) for row in rows if not row.is_total]
    groups.sort(key=lambda group: (group.key is None, group.key or ""))
    return Evaluation(period=period, by=by, total=total, groups=groups)


async def evaluate_within(
    sessions: async_sessionmaker[AsyncSession],
    period: Period,
    by: Grouping,
    *,
    district: str | None = None,
    statement_timeout_seconds: float = 0.0,
) -> Evaluation:
    """``evaluate`` for a client that waits: in a transaction of its own on ``sessions`` (the
    analytics ones), under ``statement_timeout_seconds`` (0: the engine's limit)."""
    async with sessions() as session, session.begin():
        if statement_timeout_seconds > 0:
            await session.execute(
                select(func.set_config("statement_timeout", milliseconds(statement_timeout_seconds), True))
            )
        return await evaluate(session, period, by, district=district)


TODAY_FIGURES = {
    "reported_cases": "Cases reported today.",
    "registered_cases": "Cases registered today.",
    "closed_cases": "Cases closed today.",
    "due_to_handle_cases": "Cases dispatched today and due to be handled by their unit.",
    "handling_ratio": "Of today's due cases, the share handled.",
    "on_time_handling_ratio": "Of today's due cases, the share handled without missing a handling deadline.",
    "overdue_pending_ratio": "Of today's due cases, the share still unhandled past their deadline.",
    "extension_ratio": "Of today's due cases, the share with an approved extension.",
    "closure_ratio": "Of the cases registered today (not cancelled), the share closed.",
    "rework_ratio": "Of the cases registered today (not cancelled), the share sent back for rework.",
    "handling_mean_seconds": "Mean time from dispatch to handled of today's handled due cases.",
    "handling_median_seconds": "Median time from dispatch to handled of today's handled due cases.",
}


@dataclass
class TodayGauges:
    """Today's figures per district (the city's local day), shown from the stored snapshot.

    One replica computes them (``compute_today_figures``) and every replica shows the same stored
    figures, so they agree; aggregate with ``max by (district)``. A rate is absent for a district
    where nothing was due, rather than a made-up 0 or 1.
    """

    registry: CollectorRegistry
    gauges: dict[str, Gauge] = field(init=False)
    refreshed: Gauge = field(init=False)
    shown: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gauges = {
            name: Gauge(f"citygrid_case_today_{name}", help_text, ["district"], registry=self.registry)
            for name, help_text in TODAY_FIGURES.items()
        }
        self.refreshed = Gauge(
            "citygrid_case_today_refreshed_timestamp_seconds",
            "When today's evaluation gauges were last computed (Unix time).",
            registry=self.registry,
        )

    @staticmethod
    def values(counts: Counts) -> dict[str, float | None]:
        return {
            "reported_cases": counts.reported,
            "registered_cases": counts.registered,
            "closed_cases": counts.closed,
            "due_to_handle_cases": counts.due_to_handle,
            "handling_ratio": counts.handling_rate,
            "on_time_handling_ratio": counts.on_time_handling_rate,
            "overdue_pending_ratio": counts.overdue_pending_rate,
            "extension_ratio": counts.extension_rate,
            "closure_ratio": counts.closure_rate,
            "rework_ratio": counts.rework_rate,
            "handling_mean_seconds": counts.mean_handling_seconds,
            "handling_median_seconds": counts.median_handling_seconds,
        }

    def show(self, groups: Iterable[GroupFigures], at: datetime) -> None:
        fresh: dict[str, dict[str, float]] = {name: {} for name in TODAY_FIGURES}
        for group in groups:
            if group.key is None:
                continue
            for name, value in self.values(group.counts).items():
                if value is not None:
                    fresh[name][group.key] = float(value)
        for name, gauge in self.gauges.items():
            for district, value in fresh[name].items():
                gauge.labels(district=district).set(value)
            for district in self.shown.get(name, set()) - fresh[name].keys():
                gauge.remove(district)  # yesterday's district with nothing today
            self.shown[name] = set(fresh[name])
        self.refreshed.set(at.timestamp())


# The stored snapshot of today's figures by district, and the lock its computation takes: any fixed
# key, the same in every replica ("eval" in ASCII).
TODAY_SNAPSHOT = "today_by_district"
TODAY_LOCK = 0x6576616C


async def compute_today_figures(sessions: async_sessionmaker[AsyncSession], *, max_age: timedelta) -> bool:
    """Compute today's figures by district and store them, once across replicas: only in the replica
    that gets the advisory lock, and only when the stored figures are older than ``max_age`` or of
    another day. True when this call computed them."""
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(TODAY_LOCK))):
            return False  # another replica is computing them right now
        now = await transaction_time(session)
        period = Period.city_day(now)
        # Read after the lock: a replica that computed them just before committed before letting go.
        stored = await session.get(EvaluationSnapshot, TODAY_SNAPSHOT)
        if stored is not None and stored.period_start == period.start and stored.computed_at > now - max_age:
            return False
        evaluation = await evaluate(session, period, Grouping.DISTRICT)
        values = {
            "period_start": period.start,
            "period_end": period.end,
            "computed_at": now,
            "groups": [{"key": group.key, "counts": group.counts.as_json()} for group in evaluation.groups],
        }
        await session.execute(
            insert(EvaluationSnapshot)
            .values(name=TODAY_SNAPSHOT, **values)
            .on_conflict_do_update(index_elements=[EvaluationSnapshot.name], set_=values)
        )
    return True


async def show_today_figures(sessions: async_sessionmaker[AsyncSession], gauges: TodayGauges) -> int:
    """Show the stored figures on this replica's gauges; returns how many districts they have."""
    async with sessions() as session:
        stored = await session.get(EvaluationSnapshot, TODAY_SNAPSHOT)
    if stored is None:
        return 0
    groups = [GroupFigures(group["key"], Counts.from_json(group["counts"])) for group in stored.groups]
    gauges.show(groups, stored.computed_at)
    return len(groups)


async def refresh_today_gauges(runtime: Runtime, gauges: TodayGauges, *, max_age: timedelta) -> int:
    """The gauges' periodic job in every replica: compute the figures if it is this replica's turn,
    then show the stored ones (even when computing failed: the job still counts the error)."""
    try:
        await compute_today_figures(runtime.analytics, max_age=max_age)
    finally:
        shown = await show_today_figures(runtime.db, gauges)
    return shown
