"""The horizon reader: a full read leaves its last transaction whole for the next read (without I/O),
and against PostgreSQL every row read once, whole transactions, one larger than a read, a
transaction still running, a backlog read a window at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.fleet.horizon import HorizonReader, horizon, whole_transactions
from citygrid.settings import to_asyncpg_url
from citygrid.testing import Infrastructure


class Row(NamedTuple):
    txid: int


def test_a_read_short_of_its_limit_takes_everything_up_to_the_horizon() -> None:
    rows = [Row(5), Row(5), Row(7)]
    assert whole_transactions(rows, 10, 9) == (rows, 9)
    assert whole_transactions([], 10, 9) == ([], 9)


def test_a_full_read_leaves_its_last_transaction_for_the_next() -> None:
    rows = [Row(5), Row(6), Row(7), Row(7)]
    assert whole_transactions(rows, 4, 9) == ([Row(5), Row(6)], 7)


def test_a_full_read_of_one_transaction_keeps_nothing_of_it() -> None:
    # The reader then reads that transaction whole (HorizonReader).
    assert whole_transactions([Row(7)] * 3, 3, 9) == ([], 7)


# --- against PostgreSQL -----------------------------------------------------------------------------

ROWS = text(
    "SELECT n, txid FROM horizon_rows WHERE at >= :since AND txid >= :low AND txid < :high "
    "ORDER BY txid LIMIT :limit"
)


@pytest.fixture(scope="session")
def horizon_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("gateway")


@pytest.fixture
async def sessions(horizon_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(to_asyncpg_url(horizon_database))
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS horizon_rows"))
        await connection.execute(
            text(
                "CREATE TABLE horizon_rows (n int, at timestamptz DEFAULT now(), "
                "txid bigint DEFAULT (pg_current_xact_id()::text)::bigint)"
            )
        )
    try:
        yield create_sessionmaker(engine)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE horizon_rows"))
        await engine.dispose()


async def insert(sessions: async_sessionmaker[AsyncSession], numbers: range) -> None:
    async with sessions() as session, session.begin():
        for n in numbers:
            await session.execute(text("INSERT INTO horizon_rows (n) VALUES (:n)"), {"n": n})


async def start_at(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await horizon(session)


async def read_all(
    sessions: async_sessionmaker[AsyncSession], reader: HorizonReader, low: int
) -> tuple[list[list[int]], int]:
    """Reads until nothing more waits; the numbers of each read and where the cursor ends."""
    reads: list[list[int]] = []
    for _ in range(100):
        async with sessions() as session:
            read = await reader.read(session, low=low, since=datetime.now(UTC) - timedelta(hours=1))
        if read.rows:
            reads.append([row.n for row in read.rows])
        low = read.cursor
        if not read.more:
            return reads, low
    raise AssertionError("the reader never caught up")


async def test_reads_take_whole_transactions_and_every_row_once(sessions):
    low = await start_at(sessions)
    for start in range(0, 10, 2):
        await insert(sessions, range(start, start + 2))  # five transactions of two rows
    reads, _ = await read_all(sessions, HorizonReader(ROWS, limit=3), low)
    assert sorted(n for read in reads for n in read) == list(range(10))
    # Each read holds whole transactions: a pair is never split across two reads.
    assert all(len(read) % 2 == 0 for read in reads)


async def test_a_transaction_larger_than_a_read_is_read_whole(sessions):
    low = await start_at(sessions)
    await insert(sessions, range(7))
    await insert(sessions, range(7, 9))
    reads, _ = await read_all(sessions, HorizonReader(ROWS, limit=3), low)
    assert reads[0] == list(range(7))
    assert sorted(n for read in reads for n in read) == list(range(9))


async def test_a_transaction_still_running_holds_the_horizon_and_nothing_is_missed(sessions):
    low = await start_at(sessions)
    reader = HorizonReader(ROWS, limit=100)
    async with sessions() as held:
        await held.execute(text("INSERT INTO horizon_rows (n) VALUES (0)"))  # not committed yet
        await insert(sessions, range(1, 4))  # committed after it started
        reads, low = await read_all(sessions, reader, low)
        assert reads == []  # nothing below the horizon but what is still running
        await held.commit()
    reads, _ = await read_all(sessions, reader, low)
    assert sorted(n for read in reads for n in read) == [0, 1, 2, 3]


async def test_a_reader_far_behind_reads_its_backlog_a_window_at_a_time(sessions):
    low = await start_at(sessions)
    for n in range(6):
        await insert(sessions, range(n, n + 1))
    reader = HorizonReader(ROWS, limit=100, span=1, min_span=1)
    reads, _ = await read_all(sessions, reader, low)
    assert sorted(n for read in reads for n in read) == list(range(6))
    assert reader.span > 1  # sparse reads widened the window
