"""The kit's time partitions on real PostgreSQL: made for the accepted days and ahead, in UTC whatever the
session's time zone, once however many replicas ask, and only wholly expired ones of ours dropped.

Each test has a database of its own; the sessions that make and drop partitions run in Asia/Shanghai,
so a bound read in the session's time zone would show as a shifted partition.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.devstack.servers import create_databases, database_url
from citygrid.partitions import TimePartitions
from citygrid.settings import to_asyncpg_url, to_libpq_url
from citygrid.testing import Infrastructure

TODAY = date(2026, 12, 2)
DAILY = TimePartitions(("positions",), "day", days_back=3, periods_ahead=2, lock_id=9_100_001)
# Today's partition, the three days back plus the one before them, and two ahead.
DAILY_NAMES = {f"positions_202611{d}" for d in (28, 29, 30)} | {f"positions_2026120{d}" for d in (1, 2, 3, 4)}


@dataclass
class Scratch:
    url: str
    db: async_sessionmaker[AsyncSession]

    async def connect(self) -> asyncpg.Connection:
        # Read in UTC, so the bounds pg_get_expr shows are the UTC ones.
        return await asyncpg.connect(to_libpq_url(self.url), server_settings={"timezone": "UTC"})

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        connection = await self.connect()
        try:
            rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
            return rows
        finally:
            await connection.close()

    async def children(self, parent: str) -> dict[str, str]:
        """The partitions of ``parent`` by name, with their bounds."""
        rows = await self.fetch(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits "
            "JOIN pg_class c ON c.oid = inhrelid WHERE inhparent = $1::regclass",
            parent,
        )
        return {row["relname"]: row["bound"] for row in rows}


@pytest.fixture
async def scratch(infrastructure: Infrastructure) -> AsyncIterator[Scratch]:
    name = f"partitions_{uuid.uuid4().hex[:12]}"
    await create_databases(infrastructure.server_url, [name])
    url = database_url(infrastructure.server_url, name)
    engine = create_async_engine(
        to_asyncpg_url(url), connect_args={"server_settings": {"timezone": "Asia/Shanghai"}}
    )
    made = Scratch(url, create_sessionmaker(engine))
    await made.fetch(
        "CREATE TABLE positions (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at)"
    )
    try:
        yield made
    finally:
        await engine.dispose()
        connection = await asyncpg.connect(to_libpq_url(infrastructure.server_url))
        try:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await connection.close()


async def test_daily_partitions_cover_the_accepted_days_and_the_days_ahead_in_utc(scratch: Scratch) -> None:
    assert DAILY.accepted_range(TODAY) == (date(2026, 11, 29), date(2026, 12, 3))
    assert await DAILY.ensure(scratch.db, TODAY) == len(DAILY_NAMES)
    children = await scratch.children("positions")
    assert set(children) == DAILY_NAMES
    assert children["positions_20261202"] == (
        "FOR VALUES FROM ('2026-12-02 00:00:00+00') TO ('2026-12-03 00:00:00+00')"
    )
    assert children["positions_20261130"] == (
        "FOR VALUES FROM ('2026-11-30 00:00:00+00') TO ('2026-12-01 00:00:00+00')"
    )


async def test_a_row_lands_in_the_partition_of_its_utc_day(scratch: Scratch) -> None:
    await DAILY.ensure(scratch.db, TODAY)
    await scratch.fetch(
        "INSERT INTO positions (id, at) VALUES (1, '2026-12-02 23:59:59+08:00'), "
        "(2, '2026-12-02 07:59:59+08:00'), (3, '2026-12-02 08:00:00+08:00')"
    )
    rows = await scratch.fetch("SELECT id, tableoid::regclass::text AS partition FROM positions ORDER BY id")
    assert [(row["id"], row["partition"]) for row in rows] == [
        (1, "positions_20261202"),
        (2, "positions_20261201"),
        (3, "positions_20261202"),
    ]


async def test_making_the_partitions_again_makes_none(scratch: Scratch) -> None:
    assert await DAILY.ensure(scratch.db, TODAY) == len(DAILY_NAMES)
    assert await DAILY.ensure(scratch.db, TODAY) == 0
    # The next day, only the new day ahead is made.
    assert await DAILY.ensure(scratch.db, date(2026, 12, 3)) == 1
    assert set(await scratch.children("positions")) == DAILY_NAMES | {"positions_20261205"}


async def test_replicas_making_partitions_at_once_make_each_once(scratch: Scratch) -> None:
    created = await asyncio.gather(*(DAILY.ensure(scratch.db, TODAY) for _ in range(4)))
    assert sum(created) == len(DAILY_NAMES)
    assert set(await scratch.children("positions")) == DAILY_NAMES


async def test_partitions_made_with_bare_date_bounds_are_recognised_by_name(scratch: Scratch) -> None:
    # As the code before the kit made them: bare dates, read in the session's UTC.
    await scratch.fetch(
        "CREATE TABLE positions_20261202 PARTITION OF positions FOR VALUES FROM ('2026-12-02') TO ('2026-12-03')"
    )
    assert await DAILY.ensure(scratch.db, TODAY) == len(DAILY_NAMES) - 1
    assert set(await scratch.children("positions")) == DAILY_NAMES


async def test_a_table_of_a_partitions_name_that_is_not_one_is_left_alone(scratch: Scratch) -> None:
    await scratch.fetch("CREATE TABLE positions_20261203 (note text)")
    assert await DAILY.ensure(scratch.db, TODAY) == len(DAILY_NAMES) - 1
    assert set(await scratch.children("positions")) == DAILY_NAMES - {"positions_20261203"}
    assert await scratch.fetch("SELECT note FROM positions_20261203") == []


async def test_only_partitions_of_ours_wholly_older_than_the_retention_are_dropped(scratch: Scratch) -> None:
    await DAILY.ensure(scratch.db, TODAY)
    await scratch.fetch(
        "CREATE TABLE positions_archive PARTITION OF positions "
        "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')"
    )
    await scratch.fetch(
        "CREATE TABLE positions_202002 PARTITION OF positions "
        "FOR VALUES FROM ('2020-02-01 00:00:00+00') TO ('2020-03-01 00:00:00+00')"
    )
    await scratch.fetch(
        "CREATE TABLE positions_20200301 PARTITION OF positions FOR VALUES FROM ('2020-03-01') TO ('2020-03-02')"
    )
    # Four days on, keeping five days: what ended by 1 December goes, 1 December itself stays.
    dropped = await DAILY.drop_expired(scratch.db, date(2026, 12, 6), retention_days=5)
    assert dropped == 4
    left = set(await scratch.children("positions"))
    assert left == (DAILY_NAMES - {"positions_20261128", "positions_20261129", "positions_20261130"}) | {
        "positions_archive",
        "positions_202002",
    }
    assert await scratch.fetch("SELECT 1 FROM pg_class WHERE relname = 'positions_20261130'") == []
    assert await DAILY.drop_expired(scratch.db, date(2026, 12, 6), retention_days=5) == 0


async def test_a_partition_still_accepting_rows_is_never_dropped(scratch: Scratch) -> None:
    await DAILY.ensure(scratch.db, TODAY)
    # A retention equal to the days back would reach the partition kept for the UTC margin.
    assert await DAILY.drop_expired(scratch.db, TODAY, retention_days=3) == 0
    assert set(await scratch.children("positions")) == DAILY_NAMES
    with pytest.raises(ValueError, match="retention"):
        await DAILY.drop_expired(scratch.db, TODAY, retention_days=2)


async def test_a_detach_left_pending_is_finalized_and_dropped(scratch: Scratch) -> None:
    await scratch.fetch(
        "CREATE TABLE positions_20200101 PARTITION OF positions "
        "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-01-02 00:00:00+00')"
    )
    reader, detacher = await scratch.connect(), await scratch.connect()
    try:
        # A reader's open transaction makes the concurrent detach wait; its time limit cuts the wait
        # short and leaves the partition detached half-way.
        await reader.execute("BEGIN; SELECT count(*) FROM positions")
        await detacher.execute("SET statement_timeout = '500ms'")
        with pytest.raises(asyncpg.QueryCanceledError):
            await detacher.execute("ALTER TABLE positions DETACH PARTITION positions_20200101 CONCURRENTLY")
        await reader.execute("ROLLBACK")
    finally:
        await reader.close()
        await detacher.close()
    pending = await scratch.fetch(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'positions_20200101'::regclass"
    )
    assert [row["inhdetachpending"] for row in pending] == [True]

    assert await DAILY.drop_expired(scratch.db, TODAY, retention_days=30) == 1
    assert await scratch.fetch("SELECT 1 FROM pg_class WHERE relname = 'positions_20200101'") == []


async def test_a_partition_round_waits_for_no_one_while_another_replica_holds_the_lock(
    scratch: Scratch,
) -> None:
    holder = await scratch.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", DAILY.lock_id)
        assert await DAILY.ensure(scratch.db, TODAY) == 0
        await scratch.fetch(
            "CREATE TABLE positions_20200101 PARTITION OF positions "
            "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-01-02 00:00:00+00')"
        )
        assert await DAILY.drop_expired(scratch.db, TODAY, retention_days=30) == 0
    finally:
        await holder.close()
    assert await DAILY.ensure(scratch.db, TODAY) == len(DAILY_NAMES)
    assert await DAILY.drop_expired(scratch.db, TODAY, retention_days=30) == 1


async def test_monthly_partitions_are_named_and_bounded_as_the_gas_service_names_them(
    scratch: Scratch,
) -> None:
    await scratch.fetch(
        "CREATE TABLE scans (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at)"
    )
    monthly = TimePartitions(("scans",), "month", days_back=400, periods_ahead=3, lock_id=9_100_002)
    today = date(2026, 12, 15)
    assert monthly.partition_name("scans", date(2026, 12, 15)) == "scans_202612"
    # 400 days back is 10 November 2025: from October 2025 (the UTC margin) to March 2027.
    keep = monthly.periods_to_keep(today)
    assert keep[0] == date(2025, 10, 1)
    assert keep[-1] == date(2027, 3, 1)
    assert len(keep) == 18
    assert monthly.accepted_range(today) == (date(2025, 11, 10), date(2027, 2, 28))
    # Made the old way, with bare dates.
    await scratch.fetch(
        "CREATE TABLE scans_202612 PARTITION OF scans FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
    )
    assert await monthly.ensure(scratch.db, today) == 17
    children = await scratch.children("scans")
    assert set(children) == {monthly.partition_name("scans", month) for month in keep}
    assert (
        children["scans_202701"] == "FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00')"
    )
    await scratch.fetch("INSERT INTO scans (id, at) VALUES (1, '2027-01-01 07:59:59+08:00')")
    assert [row["p"] for row in await scratch.fetch("SELECT tableoid::regclass::text AS p FROM scans")] == [
        "scans_202612"
    ]
    # On 15 June 2028 two years reach back to 16 June 2026: October 2025 to May 2026 go, June stays.
    assert await monthly.drop_expired(scratch.db, date(2028, 6, 15), retention_days=730) == 8
    assert min(await scratch.children("scans")) == "scans_202606"


async def test_a_date_column_takes_the_same_bounds_as_dates(scratch: Scratch) -> None:
    await scratch.fetch("CREATE TABLE counts (day date NOT NULL, n int) PARTITION BY RANGE (day)")
    days = TimePartitions(("counts",), "day", days_back=0, periods_ahead=1, lock_id=9_100_003)
    assert await days.ensure(scratch.db, TODAY) == 3
    children = await scratch.children("counts")
    assert children["counts_20261202"] == "FOR VALUES FROM ('2026-12-02') TO ('2026-12-03')"


@pytest.mark.parametrize(
    "arguments",
    [
        {"tables": (), "period": "day"},
        {"tables": ("a", "a"), "period": "day"},
        {"tables": ('x"; DROP TABLE y; --',), "period": "day"},
        {"tables": ("Positions",), "period": "day"},
        {"tables": ("p" * 55,), "period": "day"},
        {"tables": ("p",), "period": "week"},
        {"tables": ("p",), "period": "day", "periods_ahead": 0},
        {"tables": ("p",), "period": "day", "days_back": -1},
    ],
)
def test_a_declaration_the_partitions_could_not_follow_is_refused(arguments: dict[str, Any]) -> None:
    values = {"days_back": 1, "periods_ahead": 1, "lock_id": 1} | arguments
    with pytest.raises(ValueError):  # noqa: PT011
        TimePartitions(**values)


def test_names_not_written_by_the_kit_are_not_ours() -> None:
    monthly = TimePartitions(("scans",), "month", days_back=1, periods_ahead=1, lock_id=1)
    assert monthly.period_of("scans", "scans_202612") == date(2026, 12, 1)
    for name in ("scans_202613", "scans_202600", "scans_20261201", "scans_old_202612", "fill_checks_202612"):
        assert monthly.period_of("scans", name) is None
    assert DAILY.period_of("positions", "positions_20261231") == date(2026, 12, 31)
    for name in ("positions_20260230", "positions_202612", "positions_2026123x"):
        assert DAILY.period_of("positions", name) is None
    assert DAILY.shift(date(2026, 12, 31), 1) == date(2027, 1, 1)
    assert monthly.shift(date(2026, 12, 31), 1) == date(2027, 1, 1)
    assert monthly.shift(date(2026, 1, 31), -1) == date(2025, 12, 1)
