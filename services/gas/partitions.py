"""Monthly partitions of the append-only tables (``scans``, ``fill_checks``): made ahead, dropped whole.

A scan is accepted up to ``ACCEPT_DAYS_BACK`` days after it happened (a courier's handset that was
offline, an enterprise's EPCIS history), so partitions exist from that far back to
``MONTHS_AHEAD`` months ahead. Records are kept ``retention_days`` (the rules ask for two years at
least; three by default), and a partition entirely older than that is dropped: no row-by-row delete
over tens of millions of scans. One replica does either at a time (a transaction-level advisory lock).
"""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gas.domain.rules import add_months

log = logging.getLogger("services.gas.partitions")

PARTITIONED = ("scans", "fill_checks")
ACCEPT_DAYS_BACK = 400
# The shortest record retention: two years (the rules), and never shorter than scans are accepted.
MINIMUM_RETENTION_DAYS = 730
MONTHS_AHEAD = 3
PARTITION_LOCK = 7_733_001
FUTURE_TOLERANCE = timedelta(minutes=10)  # a handset's clock may run this far ahead


def month_start(day: date) -> date:
    return day.replace(day=1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_{month:%Y%m}"


def months_to_keep(today: date) -> list[date]:
    # One month more than a scan may fall in: a city day's first hours are the day before in UTC.
    first = add_months(month_start(today - timedelta(days=ACCEPT_DAYS_BACK)), -1)
    last = add_months(month_start(today), MONTHS_AHEAD)
    months = [first]
    while months[-1] < last:
        months.append(add_months(months[-1], 1))
    return months


async def _locked(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(PARTITION_LOCK))))


async def ensure_partitions(db: async_sessionmaker[AsyncSession], today: date) -> int:
    """Create the partitions a scan may land in from ``today``; returns how many were created."""
    created = 0
    async with db() as session, session.begin():
        if not await _locked(session):
            return 0
        existing = set(
            (
                await session.execute(
                    text(
                        "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = inhrelid "
                        "JOIN pg_class parent ON parent.oid = inhparent WHERE parent.relname = ANY(:tables)"
                    ),
                    {"tables": list(PARTITIONED)},
                )
            ).scalars()
        )
        for table in PARTITIONED:
            for month in months_to_keep(today):
                name = partition_name(table, month)
                if name in existing:
                    continue
                upper = add_months(month, 1)
                await session.execute(
                    text(
                        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table}" '
                        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{upper.isoformat()}')"
                    )
                )
                created += 1
    if created:
        log.info("created %d monthly partitions", created)
    return created


MONTHLY = re.compile(r"_(\d{4})(\d{2})$")


async def drop_expired_partitions(
    db: async_sessionmaker[AsyncSession], today: date, retention_days: int
) -> int:
    """Detach and drop every monthly partition wholly older than the retention; returns how many.

    ``DETACH PARTITION … CONCURRENTLY`` takes no lock that stops a scan or a fill check being
    written (a plain ``DROP`` of a partition would lock its parent, and a long read queues every
    writer behind it). It cannot run in a transaction, so the round holds a session-level advisory
    lock on a connection of its own. A detach interrupted half-way is finished the next round."""
    cutoff = today - timedelta(days=retention_days)
    dropped = 0
    async with db() as session:
        connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        if not await connection.scalar(select(func.pg_try_advisory_lock(PARTITION_LOCK))):
            return 0
        try:
            for table in PARTITIONED:
                children = (
                    await connection.execute(
                        text(
                            "SELECT child.relname, inhdetachpending FROM pg_inherits "
                            "JOIN pg_class child ON child.oid = inhrelid "
                            "JOIN pg_class parent ON parent.oid = inhparent WHERE parent.relname = :table"
                        ),
                        {"table": table},
                    )
                ).all()
                for name, pending in children:
                    monthly = MONTHLY.search(name)
                    if monthly is None or not name.startswith(table + "_"):
                        continue  # not one of ours: left alone
                    month = date(int(monthly[1]), int(monthly[2]), 1)
                    if add_months(month, 1) > cutoff:
                        continue
                    how = "FINALIZE" if pending else "CONCURRENTLY"
                    await connection.execute(text(f'ALTER TABLE "{table}" DETACH PARTITION "{name}" {how}'))
                    await connection.execute(text(f'DROP TABLE "{name}"'))
                    dropped += 1
        finally:
            await connection.scalar(select(func.pg_advisory_unlock(PARTITION_LOCK)))
    if dropped:
        log.info("dropped %d partitions older than %d days", dropped, retention_days)
    return dropped


def accepted_range(today: date) -> tuple[date, date]:
    """The first and the last day a scan's time may fall on (the partitions that exist)."""
    return today - timedelta(days=ACCEPT_DAYS_BACK), add_months(month_start(today), MONTHS_AHEAD) - timedelta(
        days=1
    )
