"""Daily or monthly partitions of a service's append-only tables: made ahead of the rows, dropped whole.

A table of scans or GPS positions grows by millions of rows a day and is kept for a fixed time: a
partition per day or month lets the old rows go by dropping a table instead of a row-by-row delete,
and a row finds its partition only if the partition was made before the row came. A row's time may
lie ``days_back`` days in the past (a handset that was offline, a history imported late), so
partitions exist from that far back to ``periods_ahead`` periods ahead of today. Each round, create
or drop, runs under the service's advisory lock, so one replica does it at a time.

Partition bounds are UTC midnights written out in full (``'2026-12-02 00:00:00+00'``): a bare date
bounding a ``timestamptz`` column is read in the session's time zone, and a replica with another one
would make a partition that overlaps its neighbours or leaves a gap. The kit's engines run in UTC, so
partitions made earlier with bare-date bounds have the same bounds; they are found by their name
(``scans_202612``, ``positions_20261202``), never by their bounds. On a ``date`` column the same
literal reads as the date.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

log = logging.getLogger("citygrid.partitions")

Period = Literal["day", "month"]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_IDENTIFIER = 63  # PostgreSQL cuts longer names, and the cut name would not be recognised
_SUFFIX = {"day": 8, "month": 6}  # YYYYMMDD, YYYYMM

_CHILDREN = text(
    "SELECT child.relname, inhdetachpending FROM pg_inherits "
    "JOIN pg_class child ON child.oid = inhrelid WHERE inhparent = CAST(CAST(:table AS text) AS regclass)"
)
_EXISTING = text(
    "SELECT name FROM unnest(CAST(:names AS text[])) AS name WHERE to_regclass(quote_ident(name)) IS NOT NULL"
)


def _month_shift(start: date, months: int) -> date:
    # Only first days of months come here, so no day needs clamping to a shorter month.
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _utc_midnight(day: date) -> str:
    return f"'{day.isoformat()} 00:00:00+00'"


@dataclass(frozen=True)
class TimePartitions:
    """The time partitions of ``tables``, each ``PARTITION BY RANGE`` on a ``date`` or ``timestamptz``."""

    tables: tuple[str, ...]
    period: Period
    days_back: int  # how far back a row's time may fall: late rows are accepted that far
    periods_ahead: int  # partitions made ahead of today's; the last one is a margin, not accepted
    lock_id: int  # the advisory lock of this service's partition rounds

    def __post_init__(self) -> None:
        if self.period not in _SUFFIX:
            raise ValueError(f"a partition period is a day or a month, not {self.period!r}")
        if not self.tables or len(set(self.tables)) != len(self.tables):
            raise ValueError("partitioned tables must be named, each once")
        for table in self.tables:
            # Names go into DDL as they are: only plain lower-case identifiers, short enough for the suffix.
            if not _IDENTIFIER.fullmatch(table) or len(table) + 1 + _SUFFIX[self.period] > _MAX_IDENTIFIER:
                raise ValueError(f"{table!r} is not a table name partitions can be named after")
        if self.days_back < 0:
            raise ValueError("days_back cannot be negative")
        if self.periods_ahead < 1:
            # The last partition is the margin after the last accepted day: with none, today would not be.
            raise ValueError("periods_ahead must be at least 1")

    def period_start(self, day: date) -> date:
        """The first day of the period ``day`` falls in."""
        return day if self.period == "day" else day.replace(day=1)

    def shift(self, start: date, periods: int) -> date:
        """The start of the period ``periods`` periods after (before, if negative) the one of ``start``."""
        first = self.period_start(start)
        return first + timedelta(days=periods) if self.period == "day" else _month_shift(first, periods)

    def partition_name(self, table: str, start: date) -> str:
        """The partition of ``table`` holding ``start``'s period: ``scans_202612``, ``positions_20261202``."""
        first = self.period_start(start)
        return f"{table}_{first:%Y%m%d}" if self.period == "day" else f"{table}_{first:%Y%m}"

    def period_of(self, table: str, name: str) -> date | None:
        """The start of the period a partition of ``table`` named ``name`` holds; None if not ours."""
        prefix = table + "_"
        digits = name.removeprefix(prefix)
        if not name.startswith(prefix) or len(digits) != _SUFFIX[self.period] or not digits.isdigit():
            return None
        try:
            start = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]) if self.period == "day" else 1)
        except ValueError:
            return None
        # A name the kit would not have written (scans_202600, positions_20261301) is someone else's.
        return start if self.partition_name(table, start) == name else None

    def periods_to_keep(self, today: date) -> list[date]:
        """The start of each period a partition exists for on ``today``, oldest first."""
        # One period more than a row may fall in: a city day's first hours are the day before in UTC.
        first = self.shift(today - timedelta(days=self.days_back), -1)
        last = self.shift(today, self.periods_ahead)
        periods = [first]
        while periods[-1] < last:
            periods.append(self.shift(periods[-1], 1))
        return periods

    def accepted_range(self, today: date) -> tuple[date, date]:
        """The first and the last day a row's time may fall on, with its partition made."""
        return today - timedelta(days=self.days_back), self.shift(today, self.periods_ahead) - timedelta(
            days=1
        )

    async def ensure(self, db: async_sessionmaker[AsyncSession], today: date) -> int:
        """Create the partitions a row may land in from ``today``; returns how many were created.

        All in one transaction under a transaction-level try-lock: a replica that finds the lock taken
        does nothing this round, as another is making the same partitions."""
        created = 0
        wanted = self.periods_to_keep(today)
        async with db() as session, session.begin():
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(self.lock_id))):
                return 0
            for table in self.tables:
                children = {name for name, _ in (await session.execute(_CHILDREN, {"table": table})).all()}
                names = {self.partition_name(table, start): start for start in wanted}
                missing = {name: start for name, start in names.items() if name not in children}
                if not missing:
                    continue
                taken = set((await session.execute(_EXISTING, {"names": list(missing)})).scalars())
                for name, start in missing.items():
                    if name in taken:
                        # A table of that name that is not a partition: someone else's, left alone.
                        log.warning("%s exists and is not a partition of %s: not created", name, table)
                        continue
                    await session.execute(
                        text(
                            f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES '
                            f"FROM ({_utc_midnight(start)}) TO ({_utc_midnight(self.shift(start, 1))})"
                        )
                    )
                    created += 1
        if created:
            log.info("created %d %s partitions of %s", created, self._adjective, ", ".join(self.tables))
        return created

    async def drop_expired(
        self, db: async_sessionmaker[AsyncSession], today: date, retention_days: int
    ) -> int:
        """Detach and drop every partition wholly older than ``retention_days``; returns how many.

        ``DETACH PARTITION … CONCURRENTLY`` takes no lock that stops a row being written (a plain
        ``DROP`` of a partition would lock its parent, and a long read queues every writer behind
        it). It cannot run in a transaction, so the round holds a session-level advisory lock on an
        autocommit connection of its own; the lock is the one ``ensure`` takes, so the two rounds
        never overlap either. A detach interrupted half-way (its wait for older readers cancelled) is
        left pending and finished with ``FINALIZE`` the next round."""
        if retention_days < self.days_back:
            raise ValueError(
                f"a retention of {retention_days} days would drop rows accepted {self.days_back} days back"
            )
        cutoff = today - timedelta(days=retention_days)
        # A partition ensure would make again is never dropped, whatever the retention says.
        kept_from = self.periods_to_keep(today)[0]
        dropped = 0
        async with db() as session:
            connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            if not await connection.scalar(select(func.pg_try_advisory_lock(self.lock_id))):
                return 0
            try:
                for table in self.tables:
                    children = (await connection.execute(_CHILDREN, {"table": table})).all()
                    dropped += await self._drop(connection, table, children, cutoff, kept_from)
            finally:
                await connection.scalar(select(func.pg_advisory_unlock(self.lock_id)))
        if dropped:
            log.info(
                "dropped %d %s partitions of %s older than %d days",
                dropped,
                self._adjective,
                ", ".join(self.tables),
                retention_days,
            )
        return dropped

    async def _drop(
        self,
        connection: AsyncConnection,
        table: str,
        children: Sequence[tuple[str, bool]],
        cutoff: date,
        kept_from: date,
    ) -> int:
        dropped = 0
        for name, pending in children:
            start = self.period_of(table, name)
            if start is None:
                continue  # not one of ours: left alone
            if self.shift(start, 1) > cutoff or start >= kept_from:
                continue
            how = "FINALIZE" if pending else "CONCURRENTLY"
            await connection.execute(text(f'ALTER TABLE "{table}" DETACH PARTITION "{name}" {how}'))
            await connection.execute(text(f'DROP TABLE "{name}"'))
            dropped += 1
        return dropped

    @property
    def _adjective(self) -> str:
        return "daily" if self.period == "day" else "monthly"
