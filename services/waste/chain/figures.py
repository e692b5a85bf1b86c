"""The chain's figures: tonnage, the recycling and resource-utilisation rates, coverage of the
schedule, points' violation rates, facilities' intake; and today's, for the gauges.

Every figure is over a bounded period and reads an index on time (``ix_weighings_at``,
``ix_trips_started``, ``ix_chain_violations_at``, ``ix_pickups_point_stream_at``). Today's figures
are computed by one replica per period (an advisory lock and the stored figures' age, as the gas
service does) and shown by every replica.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any, Final, Literal

from sqlalchemy import Date, DateTime, Select, String, case, cast, column, func, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.waste.chain.models import ChainFigures, ChainViolation, Pickup, TripRow, Weighing
from services.waste.chain.rounds import route_of
from services.waste.domain import chain
from services.waste.domain.chain_checks import ViolationKind
from services.waste.domain.chain_figures import ChainRates
from services.waste.domain.chain_schedule import Coverage, coverage_visits
from services.waste.metrics import ChainMetrics
from services.waste.models import Facility
from services.waste.models import Route as RouteRow

FIGURES_LOCK: Final = 7_745_010
FIGURES_ROW: Final = 1
ANALYTICS_TIMEOUT: Final = "30s"
FOOD_TREATMENT: Final = (chain.FacilityKind.FOOD_WASTE_TREATMENT.value,)
KG_PER_T: Final = 1000.0
Tonnage = Literal["stream", "district", "day"]


def city_day(moment: datetime) -> date:
    return moment.astimezone(chain.CITY_TIMEZONE).date()


def day_span(day: date) -> tuple[datetime, datetime]:
    """The city date as ``[its midnight, the next midnight)``."""
    start = datetime.combine(day, time(0), tzinfo=chain.CITY_TIMEZONE)
    return start, start + timedelta(days=1)


def _city_date(column: Any) -> Any:
    return cast(func.timezone("Asia/Shanghai", column), Date)


async def tonnage(
    session: AsyncSession, by: Tonnage, since: datetime, until: datetime, district: str | None
) -> list[tuple[str, float, int]]:
    """Tonnes weighed in ``[since, until)`` per stream, district (the vehicle's) or city date."""
    key: Any = {
        "stream": Weighing.stream,
        "district": Weighing.district_code,
        "day": func.to_char(_city_date(Weighing.at), "YYYY-MM-DD"),
    }[by]
    query = (
        select(key, func.sum(Weighing.net_kg), func.count())
        .where(Weighing.at >= since, Weighing.at < until)
        .group_by(key)
        .order_by(key)
    )
    if district is not None:
        query = query.where(Weighing.district_code == district)
    return [(str(k), float(kg) / KG_PER_T, int(n)) for k, kg, n in (await session.execute(query)).all()]


async def rates(session: AsyncSession, since: datetime, until: datetime, district: str | None) -> ChainRates:
    """The rates of ``domain.chain_figures.chain_rates`` over ``[since, until)``, summed in the
    database: recyclable is what recyclable vehicles unloaded, food treated what food vehicles
    unloaded at a food-waste treatment facility."""
    treated = (Weighing.stream == chain.Stream.FOOD.value) & Facility.kind.in_(FOOD_TREATMENT)
    query = (
        select(
            func.coalesce(func.sum(Weighing.net_kg), 0.0),
            func.coalesce(
                func.sum(Weighing.net_kg).filter(Weighing.stream == chain.Stream.RECYCLABLE.value), 0.0
            ),
            func.coalesce(func.sum(Weighing.net_kg).filter(treated), 0.0),
        )
        .select_from(Weighing)
        .outerjoin(Facility, Facility.code == Weighing.facility_code)
        .where(Weighing.at >= since, Weighing.at < until)
    )
    if district is not None:
        query = query.where(Weighing.district_code == district)
    total, recyclable, food = (await session.execute(query)).one()
    return ChainRates(float(total) / KG_PER_T, float(recyclable) / KG_PER_T, float(food) / KG_PER_T)


async def facility_intake(
    session: AsyncSession, since: datetime, until: datetime, district: str | None
) -> list[tuple[str, str, float, int]]:
    query = (
        select(Weighing.facility_code, Weighing.stream, func.sum(Weighing.net_kg), func.count())
        .where(Weighing.at >= since, Weighing.at < until)
        .group_by(Weighing.facility_code, Weighing.stream)
        .order_by(Weighing.facility_code, Weighing.stream)
    )
    if district is not None:
        query = query.where(Weighing.district_code == district)
    return [(f, s, float(kg) / KG_PER_T, int(n)) for f, s, kg, n in (await session.execute(query)).all()]


async def coverage(session: AsyncSession, day: date, now: datetime, district: str | None) -> Coverage:
    """The share of the point-visits due in the windows opening on ``day`` done within them (on a
    day under way, of the windows closed by now).

    The visits due come from the routes (``domain.chain_schedule.coverage_visits``); the database
    says how many had a lift of their stream at their point within their window, one index probe
    (``ix_pickups_point_stream_at``) per visit, so no pickup leaves it."""
    query = select(RouteRow).order_by(RouteRow.code)
    if district is not None:
        query = query.where(RouteRow.district_code == district)
    routes = [route for row in await session.scalars(query) if (route := route_of(row)) is not None]
    due = coverage_visits(routes, day, now=now)
    if not due:
        return Coverage(day, 0, 0)
    visits = (
        func.unnest(
            _array([visit.point for visit in due], String()),
            _array([visit.stream.value for visit in due], String()),
            _array([visit.opens_at for visit in due], DateTime(timezone=True)),
            _array([visit.closes_at for visit in due], DateTime(timezone=True)),
        )
        .table_valued(
            column("point", String()),
            column("stream", String()),
            column("opens_at", DateTime(timezone=True)),
            column("closes_at", DateTime(timezone=True)),
        )
        .render_derived(name="visit", with_types=False)
    )
    lifted = (
        select(Pickup.at)
        .where(
            Pickup.point_code == visits.c.point,
            Pickup.stream == visits.c.stream,
            Pickup.at >= visits.c.opens_at,
            Pickup.at < visits.c.closes_at,
        )
        .exists()
    )
    done = await session.scalar(select(func.count()).select_from(visits).where(lifted))
    return Coverage(day, len(due), int(done or 0))


def _array(values: list[Any], of: Any) -> Any:
    """A list as one array parameter, typed: ``unnest`` cannot tell the type of an untyped one."""
    return literal(values, ARRAY(of))


async def point_rates(
    session: AsyncSession, since: datetime, until: datetime, district: str | None, limit: int
) -> list[tuple[str, int, int]]:
    """Each point's violations over its occasions in ``[since, until)``, as
    ``domain.chain_figures.violation_rates_by_point`` counts them: a trip serving the point is one
    occasion, a missed collection another; highest rate first."""
    served: Select[Any] = select(
        func.unnest(TripRow.points).label("point"), literal(1).label("occasion"), literal(0).label("hit")
    ).where(TripRow.started_at >= since, TripRow.started_at < until)
    found: Select[Any] = select(
        ChainViolation.point_code.label("point"),
        case((ChainViolation.kind == ViolationKind.MISSED_COLLECTION.value, 1), else_=0).label("occasion"),
        literal(1).label("hit"),
    ).where(ChainViolation.at >= since, ChainViolation.at < until, ChainViolation.point_code.is_not(None))
    if district is not None:
        served = served.where(TripRow.district_code == district)
        found = found.where(ChainViolation.district_code == district)
    both = served.union_all(found).subquery()
    hits, occasions = func.sum(both.c.hit), func.sum(both.c.occasion)
    rate = hits / func.nullif(occasions, 0)
    query = (
        select(both.c.point, hits, occasions)
        .group_by(both.c.point)
        .order_by(rate.desc().nulls_first(), both.c.point)
        .limit(limit)
    )
    return [(str(p), int(h), int(o)) for p, h, o in (await session.execute(query)).all()]


# -- today's figures for the gauges ------------------------------------------------------------------


async def compute_today(session: AsyncSession, now: datetime) -> dict[str, Any]:
    since, until = day_span(city_day(now))
    by_stream = {key: t for key, t, _ in await tonnage(session, "stream", since, until, None)}
    today = await rates(session, since, until, None)
    covered = await coverage(session, city_day(now), now, None)
    open_trips = await session.scalar(select(func.count()).where(TripRow.ending == "open"))
    closed_today = await session.scalar(
        select(func.count()).where(
            TripRow.started_at >= since, TripRow.started_at < until, TripRow.ending != "open"
        )
    )
    return {
        "tonnage_t": {stream.value: by_stream.get(stream.value, 0.0) for stream in chain.Stream},
        "recycling_rate": today.recycling_rate,
        "resource_utilisation_rate": today.resource_utilisation_rate,
        "coverage": covered.rate,
        "trips": {"open": int(open_trips or 0), "closed": int(closed_today or 0)},
    }


async def refresh(
    sessions: async_sessionmaker[AsyncSession], metrics: ChainMetrics, *, every_seconds: float
) -> bool:
    """Compute today's figures if this replica's turn has come, then show the stored ones."""
    computed = False
    async with sessions() as session, session.begin():
        if await session.scalar(select(func.pg_try_advisory_xact_lock(FIGURES_LOCK))):
            fresh = await session.scalar(
                select(func.count()).where(
                    ChainFigures.id == FIGURES_ROW,
                    ChainFigures.computed_at > func.now() - timedelta(seconds=every_seconds * 0.8),
                )
            )
            if not fresh:
                await session.execute(text(f"SET LOCAL statement_timeout = '{ANALYTICS_TIMEOUT}'"))
                now = (await session.execute(select(func.now()))).scalar_one()
                figures = await compute_today(session, now)
                await session.execute(
                    insert(ChainFigures)
                    .values(id=FIGURES_ROW, figures=figures, computed_at=func.now())
                    .on_conflict_do_update(
                        index_elements=[ChainFigures.id], set_={"figures": figures, "computed_at": func.now()}
                    )
                )
                computed = True
    async with sessions() as session:
        row = (
            await session.execute(select(ChainFigures, func.now()).where(ChainFigures.id == FIGURES_ROW))
        ).first()
    if row is not None:
        show(metrics, row[0], row[1])
    return computed


def show(metrics: ChainMetrics, stored: ChainFigures, now: datetime) -> None:
    figures = stored.figures
    for stream, tonnes in figures.get("tonnage_t", {}).items():
        metrics.tonnage_today.labels(stream=stream).set(tonnes)
    for name, gauge in (
        ("recycling_rate", metrics.recycling_rate_today),
        ("resource_utilisation_rate", metrics.resource_utilisation_rate_today),
        ("coverage", metrics.coverage_today),
    ):
        value = figures.get(name)
        gauge.set(float("nan") if value is None else float(value))
    for state, count in figures.get("trips", {}).items():
        metrics.trips.labels(state=state).set(count)
    metrics.figures_age.set(max((now - stored.computed_at).total_seconds(), 0.0))
