"""Anomalies in the cylinders' traces, as the scans and checks that revealed them recorded them."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.pagination import cursor_time, cursor_value, decode_cursor, encode_cursor
from services.gas.models import Anomaly, AnomalyKind, Cylinder


async def list_anomalies(
    session: AsyncSession,
    *,
    kind: AnomalyKind | None,
    cylinder: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Anomaly], str | None]:
    """Newest first (the kind's index, or the cylinder's)."""
    query = select(Anomaly).order_by(Anomaly.detected_at.desc(), Anomaly.id.desc()).limit(limit + 1)
    if kind is not None:
        query = query.where(Anomaly.kind == kind.value)
    if cylinder is not None:
        query = query.where(Anomaly.cylinder_code == cylinder)
    if cursor:
        at, anomaly_id = decode_cursor(cursor, 2)
        before = cursor_time(at)
        query = query.where(
            or_(
                Anomaly.detected_at < before,
                and_(Anomaly.detected_at == before, Anomaly.id < cursor_value(uuid.UUID, anomaly_id)),
            )
        )
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.detected_at.isoformat(), str(last.id))
    return found[:limit], next_cursor


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
