"""Service functions of the manifests: one action applied to a row, with its step and its events in
the caller's transaction; the undelivered manifest of each truck; the overdue round."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import UnitOfWork
from citygrid.runtime import Runtime
from contract import muck as contract
from services.muck.domain import manifests as domain
from services.muck.domain.manifests import AbnormalReason, ManifestAction, ManifestStatus, Outcome
from services.muck.models import ManifestRow, ManifestStep

UNDELIVERED = (ManifestStatus.ISSUED, ManifestStatus.LOADED, ManifestStatus.IN_TRANSIT)


def manifest_of(row: ManifestRow) -> domain.Manifest:
    return domain.Manifest(
        status=ManifestStatus(row.status),
        declared_quantity_m3=row.declared_quantity_m3,
        received_quantity_m3=row.received_quantity_m3,
        window_end=row.window_end,
        origin_site=row.origin_site,
        disposal_site=row.disposal_site,
        abnormal_reason=AbnormalReason(row.abnormal_reason) if row.abnormal_reason else None,
    )


async def advance(
    uow: UnitOfWork,
    row: ManifestRow,
    action: ManifestAction,
    *,
    at: datetime,
    actor: str,
    detail: str | None = None,
    quantity_m3: float | None = None,
    reason: AbnormalReason | None = None,
    note: str | None = None,
) -> Outcome:
    """Apply ``action`` to the (locked) row: its fields, a step of its history, its events.

    InvalidManifestTransition (409) when its status forbids the action. Nothing is committed here.
    """
    outcome = domain.apply(manifest_of(row), action, at=at, quantity_m3=quantity_m3, reason=reason, note=note)
    row.status = outcome.status.value
    if "received_quantity_m3" in outcome.changes:
        row.received_quantity_m3 = outcome.manifest.received_quantity_m3
    if "abnormal_reason" in outcome.changes:
        reason_now = outcome.manifest.abnormal_reason
        row.abnormal_reason = reason_now.value if reason_now is not None else None
    if action is ManifestAction.LOAD:
        row.loaded_at = at
    elif action is ManifestAction.DELIVER:
        row.delivered_at = at
    elif action is ManifestAction.RESOLVE and note is not None:
        row.resolution_note = note.strip()
    if outcome.status in (ManifestStatus.CLOSED, ManifestStatus.CANCELLED):
        row.closed_at = at
    row.version += 1
    row.updated_at = at
    uow.session.add(
        ManifestStep(
            manifest_id=row.id, action=action.value, status=row.status, at=at, actor=actor, detail=detail
        )
    )
    for event in outcome.events:
        published = _contract_event(row, event)
        if published is not None:
            uow.publish(published, aggregate_id=str(row.id), version=row.version)
    await uow.session.flush()
    return outcome


def _contract_event(row: ManifestRow, event: domain.ManifestEvent) -> contract.ManifestEvent | None:
    common = {
        "manifest_id": row.id,
        "number": row.number,
        "plate": row.plate,
        "company_code": row.company_code,
        "origin_site": row.origin_site,
        "disposal_site": row.disposal_site,
        "district_code": row.district_code,
        "status": contract.ManifestStatus(row.status),
        "at": event.at,
    }
    if isinstance(event, domain.ManifestLoaded):
        return contract.ManifestLoaded(**common)
    if isinstance(event, domain.ManifestDelivered):
        return contract.ManifestDelivered(**common)
    if isinstance(event, domain.ManifestClosed):
        return contract.ManifestClosed(
            **common, received_quantity_m3=row.received_quantity_m3, resolution_note=row.resolution_note
        )
    if isinstance(event, domain.ManifestFlagged):
        return contract.ManifestAbnormal(**common, reason=event.reason.value)
    if isinstance(event, domain.ManifestCancelled):
        return contract.ManifestCancelled(**common)
    return None  # departed, confirmed: the status in the next event says it


def issued_event(row: ManifestRow) -> contract.ManifestIssued:
    return contract.ManifestIssued(
        manifest_id=row.id,
        number=row.number,
        plate=row.plate,
        company_code=row.company_code,
        origin_site=row.origin_site,
        disposal_site=row.disposal_site,
        district_code=row.district_code,
        status=contract.ManifestStatus(row.status),
        at=row.issued_at,
        waste_type=row.waste_type,
        declared_quantity_m3=row.declared_quantity_m3,
        window_start=row.window_start,
        window_end=row.window_end,
    )


async def undelivered_for(
    session: AsyncSession, plates: Collection[str], *, lock: bool = False
) -> dict[str, ManifestRow]:
    """Each plate's undelivered manifest (one at most: a partial unique index), locked if asked,
    in plate order so two lockers never wait on each other crosswise."""
    if not plates:
        return {}
    query = (
        select(ManifestRow)
        .where(ManifestRow.plate.in_(sorted(plates)), ManifestRow.status.in_([s.value for s in UNDELIVERED]))
        .order_by(ManifestRow.plate)
    )
    if lock:
        query = query.with_for_update()
    return {row.plate: row for row in (await session.scalars(query)).all()}


async def flag_overdue(runtime: Runtime, now: datetime | None = None, batch: int = 500) -> int:
    """Undelivered manifests whose window has ended become abnormal (overdue), each once: rows are
    claimed with ``SKIP LOCKED``, so replicas share the round and never repeat it."""
    async with runtime.uow() as uow:
        moment = now or await uow.now()
        rows = (
            await uow.session.scalars(
                select(ManifestRow)
                .where(
                    ManifestRow.status.in_([s.value for s in UNDELIVERED]),
                    ManifestRow.window_end <= moment,
                )
                .order_by(ManifestRow.window_end)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            await advance(
                uow,
                row,
                ManifestAction.FLAG,
                at=moment,
                actor="overdue",
                detail=f"not delivered by {row.window_end.isoformat()}",
                reason=AbnormalReason.OVERDUE,
            )
    return len(rows)


def new_number(manifest_id: uuid.UUID, issued_at: datetime) -> str:
    """A manifest's number: its day and the id's random tail, unique without a counter row."""
    return f"LD{issued_at:%Y%m%d}-{manifest_id.hex[-10:].upper()}"
