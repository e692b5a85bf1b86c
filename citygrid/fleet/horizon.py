"""Reading a positions table's new rows once each, whichever replica stored them: by the id of the
transaction that stored them (``positions.txid``), up to the *horizon*, the oldest transaction still
running. Every row stored by a transaction below it is committed (or never will be), so a reader
that takes ``[cursor, horizon)`` and moves its cursor to the horizon misses none, not even a batch
that committed minutes late after PostgreSQL was away, and reads none twice. A long transaction
elsewhere in the database holds the horizon back: the reader waits, and loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["HORIZON", "horizon", "read_new", "whole_transactions"]

HORIZON = text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")

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


async def read_new(
    session: AsyncSession, statement: TextClause, *, low: int, since: datetime, limit: int
) -> tuple[list[Any], int]:
    """The rows ``statement`` reads from ``low`` up to the horizon, and where the cursor may move.
    ``statement`` takes ``:low``, ``:high``, ``:since`` (the oldest time still read, for the
    partitions) and ``:limit``, and orders by ``txid``."""
    high = await horizon(session)
    rows = (
        await session.execute(statement, {"since": since, "low": low, "high": high, "limit": limit})
    ).all()
    return whole_transactions(rows, limit, high)
