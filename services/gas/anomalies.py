"""Anomalies in the cylinders' traces, as the scans and checks that revealed them recorded them."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.pagination import NewestFirst
from services.gas.models import Anomaly, AnomalyKind, Cylinder

ANOMALIES_PAGE = NewestFirst(Anomaly.detected_at, Anomaly.id)


async def list_anomalies(
    session: AsyncSession,
    *,
    kind: AnomalyKind | None,
    cylinder: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Anomaly], str | None]:
    """Newest first (the kind's index, or the cylinder's)."""
    query = ANOMALIES_PAGE.page_query(select(Anomaly), limit, cursor)
    if kind is not None:
        query = query.where(Anomaly.kind == kind.value)
    if cylinder is not None:
        query = query.where(Anomaly.cylinder_code == cylinder)
    return ANOMALIES_PAGE.page((await session.scalars(query)).all(), limit)


async def inspections_due_by_owner(session: AsyncSession, until: date) -> list[tuple[str, int, date]]:
    """Per owning company: its live cylinders due for inspection by ``until``, and the earliest due.
    Read by the (owner, next due) index, one range per owner."""
    query = (
        select(Cylinder.owner_code, func.count(), func.min(Cylinder.next_inspection_due))
        .where(Cylinder.next_inspection_due <= until, Cylinder.status.not_in(("scrapped", "void")))
        .group_by(Cylinder.owner_code)
        .order_by(Cylinder.owner_code)
    )
    return [(owner, int(count), earliest) for owner, count, earliest in (await session.execute(query)).all()]
