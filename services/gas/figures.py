"""The fleet's figures for Prometheus, and the expiry of the daily violation counters.

Counting 5.4 M cylinders by status is a scan of the table: one replica does it per period (an
advisory lock, and the stored figures' age), every replica shows the stored result.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Date, cast, delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gas.domain.lifecycle import CylinderStatus
from services.gas.metrics import GasMetrics
from services.gas.models import Cylinder, FleetFigures, Incident, Violation

FIGURES_LOCK = 7_733_002
VIOLATIONS_LOCK = 7_733_005
FIGURES_ROW = 1
ANALYTICS_TIMEOUT = "60s"
# A violation counter matters for its day (one case per cylinder, station and day); kept a while
# beyond for the figures, then deleted in batches.
VIOLATION_DAYS = 400
EXPIRY_BATCH = 5_000


async def compute(session: AsyncSession) -> dict[str, object]:
    by_status = dict(
        (await session.execute(select(Cylinder.status, func.count()).group_by(Cylinder.status))).all()
    )
    open_incidents = await session.scalar(select(func.count()).where(Incident.closed_at.is_(None)))
    return {
        "cylinders_by_status": {
            status.value: int(by_status.get(status.value, 0)) for status in CylinderStatus
        },
        "open_incidents": int(open_incidents or 0),
        "computed_at": func.now(),
    }


async def refresh(
    sessions: async_sessionmaker[AsyncSession], metrics: GasMetrics, *, every_seconds: float
) -> bool:
    """Compute the figures if this replica's turn has come, then show the stored ones."""
    computed = False
    async with sessions() as session, session.begin():
        if await session.scalar(select(func.pg_try_advisory_xact_lock(FIGURES_LOCK))):
            fresh = await session.scalar(
                select(func.count()).where(
                    FleetFigures.id == FIGURES_ROW,
                    FleetFigures.computed_at > func.now() - timedelta(seconds=every_seconds * 0.8),
                )
            )
            if not fresh:
                await session.execute(text(f"SET LOCAL statement_timeout = '{ANALYTICS_TIMEOUT}'"))
                figures = await compute(session)
                await session.execute(
                    insert(FleetFigures)
                    .values(id=FIGURES_ROW, **figures)
                    .on_conflict_do_update(index_elements=[FleetFigures.id], set_=figures)
                )
                computed = True
    async with sessions() as session:
        row = (
            await session.execute(select(FleetFigures, func.now()).where(FleetFigures.id == FIGURES_ROW))
        ).first()
    if row is not None:
        show(metrics, row[0], row[1])
    return computed


def show(metrics: GasMetrics, figures: FleetFigures, now: datetime) -> None:
    for status, count in figures.cylinders_by_status.items():
        metrics.cylinders.labels(status=status).set(count)
    metrics.open_incidents.set(figures.open_incidents)
    metrics.figures_age.set(max((now - figures.computed_at).total_seconds(), 0.0))


async def expire_violations(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Delete a batch of day counters older than ``VIOLATION_DAYS`` city days; one replica a round."""
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(VIOLATIONS_LOCK))):
            return 0
        city_today = cast(func.timezone("Asia/Shanghai", func.now()), Date)
        old = (
            select(Violation.station_code, Violation.cylinder_code, Violation.day)
            .where(Violation.day < city_today - VIOLATION_DAYS)
            .limit(EXPIRY_BATCH)
        )
        key = tuple_(Violation.station_code, Violation.cylinder_code, Violation.day)
        result = await session.execute(delete(Violation).where(key.in_(old)))
        return int(getattr(result, "rowcount", 0) or 0)
