"""Admin endpoints every service carries: its dead letters and its quarantined outbox events,
listed and replayed."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select, update

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, require_scope
from citygrid.clock import CityTime
from citygrid.errors import NotFound
from citygrid.inbox import DeadLetter, DeadLetterNotFound, find_dead_letter
from citygrid.outbox import OutboxMessage
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class DeadLetterOut(BaseModel):
    id: uuid.UUID
    consumer: str
    event_id: str | None
    subject: str
    error: str
    deliveries: int
    failed_at: CityTime
    replayed_at: CityTime | None


class ReplayOut(BaseModel):
    id: uuid.UUID
    handled: bool
    detail: str


@router.get("/dead-letters", operation_id="list_dead_letters")
async def list_dead_letters(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    consumer: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9._\-]+$")] = None,
    pending_only: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DeadLetterOut]:
    require_scope(principal, ADMIN_SCOPE)
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit + 1)
    if consumer:
        query = query.where(DeadLetter.consumer == consumer)
    if pending_only:
        query = query.where(DeadLetter.replayed_at.is_(None))
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(DeadLetter.id < cursor_value(uuid.UUID, after))
    async with runtime.db() as session:
        letters = list((await session.scalars(query)).all())
    items = [DeadLetterOut.model_validate(letter, from_attributes=True) for letter in letters[:limit]]
    next_cursor = encode_cursor(str(letters[limit - 1].id)) if len(letters) > limit else None
    return Page[DeadLetterOut](items=items, next_cursor=next_cursor)


@router.post("/dead-letters/{dead_letter_id}/replay", operation_id="replay_dead_letter")
async def replay_dead_letter(
    dead_letter_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ReplayOut:
    require_scope(principal, ADMIN_SCOPE)
    letter = await find_dead_letter(runtime.db, dead_letter_id)
    # A dead letter is filed under the consumer's inbox key, which outlives a rename of the consumer.
    runner = runtime.consumers.get(letter.consumer) or next(
        (r for r in runtime.consumers.values() if r.spec.inbox == letter.consumer), None
    )
    if runner is None:
        raise DeadLetterNotFound(f"consumer {letter.consumer} does not run in this service")
    handled = await runner.replay(dead_letter_id)
    detail = "handled" if handled else "already handled before; marked replayed"
    return ReplayOut(id=dead_letter_id, handled=handled, detail=detail)


class QuarantinedEventNotFound(NotFound):
    code = "outbox.not_quarantined"


class QuarantinedEventOut(BaseModel):
    event_id: uuid.UUID
    subject: str
    aggregate_id: str | None
    attempts: int
    last_error: str | None
    created_at: CityTime
    quarantined_at: CityTime


class RequeuedOut(BaseModel):
    event_id: uuid.UUID
    detail: str


@router.get("/outbox/quarantined", operation_id="list_quarantined_events")
async def list_quarantined_events(
    runtime: RuntimeDep, principal: CurrentPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> Page[QuarantinedEventOut]:
    """Events the server refused ``outbox_max_attempts`` times (a subject no stream takes, a message
    too large…): fix the cause, then replay them."""
    require_scope(principal, ADMIN_SCOPE)
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.quarantined_at.is_not(None))
        .order_by(OutboxMessage.seq)
        .limit(limit + 1)
    )
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(OutboxMessage.seq > cursor_value(int, after))
    async with runtime.db() as session:
        rows = list((await session.scalars(query)).all())
    items = [QuarantinedEventOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = encode_cursor(str(rows[limit - 1].seq)) if len(rows) > limit else None
    return Page[QuarantinedEventOut](items=items, next_cursor=next_cursor)


@router.post("/outbox/quarantined/{event_id}/replay", operation_id="replay_quarantined_event")
async def replay_quarantined_event(
    event_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> RequeuedOut:
    """Put a quarantined event back in the relay's queue, at its original place. It may now reach
    the stream after newer events of its aggregate: consumers that mirror the aggregate skip it
    when its version is stale."""
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.uow() as uow:
        requeued = await uow.session.scalar(
            update(OutboxMessage)
            .where(OutboxMessage.event_id == event_id, OutboxMessage.quarantined_at.is_not(None))
            .values(quarantined_at=None, attempts=0, next_attempt_at=None)
            .returning(OutboxMessage.seq)
        )
        if requeued is None:
            raise QuarantinedEventNotFound(f"no quarantined event {event_id}")
    return RequeuedOut(event_id=event_id, detail="requeued: the relay publishes it at its next round")
