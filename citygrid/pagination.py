"""Cursor pagination: ``limit`` ≤ 500, an opaque ``cursor``, responses ``{items, next_cursor}``.

The cursor is the sort key of the last item of the page, so paging is stable under inserts and
each page is one index range scan, however deep the client pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from citygrid.errors import DomainError

RowT = TypeVar("RowT")

MAX_LIMIT = 500


class InvalidCursor(DomainError):
    code = "pagination.invalid_cursor"
    status = 400
    title = "Invalid cursor"


T = TypeVar("T")
V = TypeVar("V")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1–500).")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="Opaque cursor from the previous page's next_cursor.")
]


def encode_cursor(*key: Any) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_value(convert: Callable[[Any], V], raw: Any) -> V:
    """Turn one decoded cursor field back into its type, or refuse the cursor."""
    try:
        return convert(raw)
    except (TypeError, ValueError, OverflowError):
        raise InvalidCursor("the cursor is not one this API issued") from None


def cursor_time(raw: Any) -> datetime:
    """A time a cursor carries: aware and within the range records keep (a forged one far outside
    would otherwise reach the database and overflow there)."""
    from citygrid.clock import EARLIEST, LATEST

    moment = cursor_value(datetime.fromisoformat, raw)
    if moment.tzinfo is None or not EARLIEST <= moment < LATEST:
        raise InvalidCursor("the cursor is not one this API issued")
    return moment


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API issued") from None
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidCursor("the cursor is not one this API issued")
    # A forged cursor could carry text the database refuses (NUL); none we issue does.
    if any(isinstance(part, str) and "\x00" in part for part in key):
        raise InvalidCursor("the cursor is not one this API issued")
    return key


R = TypeVar("R")


@dataclass(frozen=True)
class NewestFirst:
    """Keyset paging newest first by a time and a UUID id (the tie-breaker), the commonest order of
    a record list: each page is one range scan of an index on ``(time, id)`` (or a filter's column
    before them)."""

    time: InstrumentedAttribute[datetime]
    id: InstrumentedAttribute[uuid.UUID]

    def page_query(self, query: Select[Any], limit: int, cursor: str | None) -> Select[Any]:
        """``query`` ordered newest first, from after ``cursor``, one row beyond the page."""
        query = query.order_by(self.time.desc(), self.id.desc()).limit(limit + 1)
        if cursor:
            at, after = decode_cursor(cursor, 2)
            query = query.where(
                tuple_(self.time, self.id) < (cursor_time(at), cursor_value(uuid.UUID, after))
            )
        return query

    def page(self, found: Sequence[R], limit: int) -> tuple[list[R], str | None]:
        """The page's rows and the cursor of the next page (None on the last)."""
        if len(found) <= limit:
            return list(found), None
        last = found[limit - 1]
        time: datetime = getattr(last, self.time.key)
        return list(found[:limit]), encode_cursor(time.isoformat(), str(getattr(last, self.id.key)))


async def page_by_key(
    session: Any,
    model: type[RowT],
    key: Any,
    *,
    limit: int,
    cursor: str | None,
    where: Sequence[Any] = (),
) -> tuple[list[RowT], str | None]:
    """One keyset page of ``model``'s rows in the order of ``key`` (a text column, unique), after the
    cursor; the next page's cursor, or None. ``session`` is an ``AsyncSession``."""
    query = select(model).where(*where).order_by(key).limit(limit + 1)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(key > cursor_value(str, after))
    found = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(getattr(found[limit - 1], key.key)) if len(found) > limit else None
    return found[:limit], next_cursor
