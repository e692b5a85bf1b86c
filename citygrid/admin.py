"""Admin endpoints every service carries: its dead letters, listed and replayed."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, require_scope
from citygrid.clock import CityTime
from citygrid.inbox import DeadLetter, DeadLetterNotFound, find_dead_letter
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
    runner = runtime.consumers.get(letter.consumer)
    if runner is None:
        raise DeadLetterNotFound(f"consumer {letter.consumer} does not run in this service")
    handled = await runner.replay(dead_letter_id)
    detail = "handled" if handled else "already handled before; marked replayed"
    return ReplayOut(id=dead_letter_id, handled=handled, detail=detail)
