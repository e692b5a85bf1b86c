"""Reading a positions table's new rows once each, whichever replica stored them: by the id of the
transaction that stored them (``positions.txid``), up to the *horizon*, the oldest transaction still
running. Every row stored by a transaction below it is committed (or never will be), so a reader
that takes ``[cursor, horizon)`` and moves its cursor to the horizon misses none, not even a batch
that committed minutes late after PostgreSQL was away, and reads none twice. A long transaction
elsewhere in the database holds the horizon back: the reader waits, and loses nothing.

A read covers at most ``span`` transaction ids past the cursor, so a reader far behind (the horizon
held back for an hour, a replica away) reads its backlog a window at a time, each one range of the
BRIN index on ``txid``, rather than sorting the whole backlog on every read. The span halves after a
full read and doubles after a sparse one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["HORIZON", "HorizonReader", "NewRows", "horizon", "whole_transactions"]

HORIZON = text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
# One transaction larger than a read (the writer holds at most 5,000 rows in one) is read whole,
# however large: its rows cannot be split between reads, and none may be skipped.
WHOLE_TRANSACTION = 2**31 - 1

Row = TypeVar("Row", bound=Any)


async def horizon(session: AsyncSession) -> int:
    """The transaction id below which every transaction has ended, as of this one's snapshot."""
    return int(await session.scalar(HORIZON) or 0)


def whole_transactions(rows: Sequence[Row], limit: int, high: int) -> tuple[list[Row], int]:
    """Rows read in ``txid`` order with ``LIMIT limit``, and where the cursor may move: a full read
    may stop inside one transaction's rows, so that transaction is left whole for the next read."""
    if len(rows) < limit or not rows:
        return list(rows), high
    last = int(rows[-1].txid)
    return [row for row in rows if row.txid < last], last


@dataclass(frozen=True)
class NewRows:
    rows: list[Any]
    cursor: int  # where the reader's cursor moves
    more: bool  # rows wait beyond this read: read again at once


@dataclass
class HorizonReader:
    """``statement`` takes ``:low``, ``:high``, ``:since`` (the oldest time still read, for the
    partitions) and ``:limit``, and orders by ``txid``."""

    statement: TextClause
    limit: int
    span: int = 50_000
    min_span: int = 1_000
    max_span: int = 50_000_000

    async def read(self, session: AsyncSession, *, low: int, since: datetime) -> NewRows:
        top = await horizon(session)
        high = min(top, low + self.span)
        rows = await self._rows(session, low, high, since, self.limit)
        if len(rows) < self.limit:
            more = high < top
            if more and len(rows) < self.limit // 4:
                self.span = min(self.max_span, self.span * 2)
            return NewRows(list(rows), max(high, low), more)
        self.span = max(self.min_span, self.span // 2)
        kept, cursor = whole_transactions(rows, self.limit, high)
        if not kept:
            # The read was one transaction's rows only: take that transaction whole.
            last = int(rows[-1].txid)
            kept = list(await self._rows(session, last, last + 1, since, WHOLE_TRANSACTION))
            cursor = last + 1
        return NewRows(kept, cursor, True)

    async def _rows(
        self, session: AsyncSession, low: int, high: int, since: datetime, limit: int
    ) -> Sequence[Any]:
        return (
            await session.execute(self.statement, {"since": since, "low": low, "high": high, "limit": limit})
        ).all()
