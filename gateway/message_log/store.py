"""The message log's SQL: batches written with COPY, records read in keyset order, chains walked.

Every read here is bounded: a page, an export batch, a verify batch (``BATCH``); a year of records
is walked batch by batch, never held at once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, String, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.clock import EARLIEST, LATEST
from gateway.message_log.chain import Break, BreakReason, ChainWalker, Hasher, Record, same_mac
from gateway.models import MessageLogRecord, MessageLogWriter

BATCH = 1_000
COPY_TIMEOUT = 30.0
COLUMNS = (
    "writer_id",
    "seq",
    "at",
    "id",
    "request_id",
    "consumer",
    "dataset",
    "action",
    "method",
    "path",
    "query_keys",
    "status",
    "duration_ms",
    "dropped_before",
    "prev_hash",
    "prev_at",
    "hash",
    "record_count",
    "fields",
)
_SELECTED = [getattr(MessageLogRecord, name) for name in COLUMNS]
_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


# The widths of the text columns: what a record's strings must fit before they are hashed.
_WIDTHS = {
    column.name: column.type.length
    for column in MessageLogRecord.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def fit(column: str, value: str) -> str:
    """``value`` within its column's width: a longer one is cut and ends with a digest of the whole, so
    two values that begin alike stay apart."""
    width = _WIDTHS[column]
    if len(value) <= width:
        return value
    return value[: width - 17] + "~" + hashlib.sha256(value.encode()).hexdigest()[:16]


def row_of(record: Record) -> tuple[Any, ...]:
    values = {name: getattr(record, name) for name in COLUMNS}
    values["query_keys"] = list(record.query_keys)
    values["fields"] = list(record.fields) if record.fields else None
    return tuple(values[name] for name in COLUMNS)


def record_of(row: Any) -> Record:
    # Unpacked by name, not zipped into a dict: an export or a verify makes millions of these.
    (
        writer_id, seq, at, record_id, request_id, consumer, dataset, action, method, path,
        query_keys, status, duration_ms, dropped_before, prev_hash, prev_at, hash_, record_count, fields,
    ) = row  # fmt: skip
    return Record(
        id=record_id,
        writer_id=writer_id,
        seq=seq,
        at=at,
        request_id=request_id,
        consumer=consumer,
        dataset=dataset,
        action=action,
        method=method,
        path=path,
        query_keys=tuple(query_keys or ()),
        status=status,
        duration_ms=duration_ms,
        dropped_before=dropped_before,
        prev_hash=prev_hash,
        prev_at=prev_at,
        hash=hash_,
        record_count=record_count,
        fields=tuple(fields or ()),
    )


@dataclass(frozen=True)
class Announcement:
    """Who a writer is: what its row says besides the seal."""

    writer_id: uuid.UUID
    replica: str
    started_at: datetime
    key_id: str
    genesis: str


async def write_batch(
    sessions: async_sessionmaker[AsyncSession],
    writer: Announcement,
    records: Sequence[Record],
    seal: str,
) -> None:
    """One transaction: the records by COPY, and the writer's row sealed at the last of them."""
    last = records[-1]
    async with sessions() as session, session.begin():
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.copy_records_to_table(
            "message_log", records=[row_of(r) for r in records], columns=list(COLUMNS), timeout=COPY_TIMEOUT
        )
        sealed = {"last_seq": last.seq, "last_hash": last.hash, "last_at": last.at, "seal": seal}
        await session.execute(
            insert(MessageLogWriter)
            .values(
                writer_id=writer.writer_id,
                replica=writer.replica,
                started_at=writer.started_at,
                key_id=writer.key_id,
                genesis=writer.genesis,
                **sealed,
            )
            .on_conflict_do_update(index_elements=[MessageLogWriter.writer_id], set_=sealed)
        )


async def sealed_seq(sessions: async_sessionmaker[AsyncSession], writer_id: uuid.UUID) -> int:
    """The last sequence number the writer's row says is committed (0: none)."""
    async with sessions() as session:
        found = await session.scalar(
            select(MessageLogWriter.last_seq).where(MessageLogWriter.writer_id == writer_id)
        )
    return int(found or 0)


@dataclass(frozen=True)
class Filters:
    consumer: str | None = None
    dataset: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None  # "404" or a class, "4xx"

    def apply(self, query: Select[Any]) -> Select[Any]:
        table = MessageLogRecord
        if self.consumer is not None:
            query = query.where(table.consumer == self.consumer)
        if self.dataset is not None:
            query = query.where(table.dataset == self.dataset)
        if self.since is not None:
            query = query.where(table.at >= self.since)
        if self.until is not None:
            query = query.where(table.at < self.until)
        if self.status is not None:
            if self.status.endswith("xx"):
                first = int(self.status[0]) * 100
                query = query.where(table.status >= first, table.status < first + 100)
            else:
                query = query.where(table.status == int(self.status))
        return query


async def page(
    sessions: async_sessionmaker[AsyncSession],
    filters: Filters,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Record]:
    """Up to ``limit`` records in time order (``at``, then ``id``), after the key ``after``."""
    table = MessageLogRecord
    query = filters.apply(select(*_SELECTED)).order_by(table.at, table.id).limit(limit)
    if after is not None:
        query = query.where(tuple_(table.at, table.id) > tuple_(*after))
    async with sessions() as session:
        return [record_of(row) for row in (await session.execute(query)).all()]


async def every_record(sessions: async_sessionmaker[AsyncSession], filters: Filters) -> AsyncIterator[Record]:
    """Every record the filters select, in time order, read ``BATCH`` at a time (no transaction held
    between batches, so a slow client holds no database resource)."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        batch = await page(sessions, filters, after=after, limit=BATCH)
        for record in batch:
            yield record
        if len(batch) < BATCH:
            return
        after = (batch[-1].at, batch[-1].id)


@dataclass
class Verification:
    writers_checked: int = 0
    records_checked: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


async def verify(
    sessions: async_sessionmaker[AsyncSession],
    hashers: Sequence[Hasher],
    *,
    kept_from: datetime | None,
    since: datetime | None = None,
    until: datetime | None = None,
    writer_id: uuid.UUID | None = None,
) -> Verification:
    """Walk every writer's chain (or one's) over ``[since, until)``: the first break of each.

    A writer's chain is checked from its genesis when all of it should still be there (it started
    after the oldest kept partition, and the window starts before it); else its oldest record in the
    window is the anchor. Its tail is checked against its seal when the window reaches the seal, and
    no record may lie past the seal. Writers are read first: records written after that are left for
    the next verification. Records of a writer without a row are a break of their own: nothing
    else would check them, and an export would show them as if they were the gateway's.
    """
    by_key = {hasher.key_id: hasher for hasher in _trusted(hashers)}
    query = select(MessageLogWriter).order_by(MessageLogWriter.started_at, MessageLogWriter.writer_id)
    if writer_id is not None:
        query = query.where(MessageLogWriter.writer_id == writer_id)
    async with sessions() as session:
        writers = list((await session.scalars(query)).all())
    result = Verification()
    for writer in writers:
        result.writers_checked += 1
        hasher = by_key.get(writer.key_id)
        if hasher is None:
            result.breaks.append(
                Break(writer.writer_id, BreakReason.UNKNOWN_KEY, f"no key {writer.key_id} on this gateway")
            )
            continue
        found = _announcement_break(hasher, writer)
        if found is None:
            walker, found = await _walk(sessions, hasher, writer, kept_from, since, until)
            result.records_checked += walker.checked
        if found is None:
            found = await _past_seal(sessions, writer, since, until)
        if found is not None:
            result.breaks.append(found)
    known = {writer.writer_id for writer in writers}
    result.breaks.extend(await _unknown_writers(sessions, known, since, until, writer_id))
    return result


def _trusted(hashers: Sequence[Hasher]) -> Sequence[Hasher]:
    """The hashers a chain may have been written with. Under a key, a keyless chain (plain SHA-256,
    which anyone can compute) proves nothing, whatever the list of earlier keys holds."""
    if any(hasher.key is not None for hasher in hashers):
        return [hasher for hasher in hashers if hasher.key is not None]
    return hashers


def _announcement_break(hasher: Hasher, writer: MessageLogWriter) -> Break | None:
    genesis = hasher.genesis(writer.writer_id, writer.replica, writer.started_at)
    seal = hasher.seal(writer.writer_id, writer.last_seq, writer.last_hash, writer.last_at)
    if not (same_mac(genesis, writer.genesis) and same_mac(seal, writer.seal)):
        return Break(writer.writer_id, BreakReason.WRITER_CHANGED, "the writer's row does not match its MAC")
    return None


def _window(query: _Query, since: datetime | None, until: datetime | None) -> _Query:
    if since is not None:
        query = query.where(MessageLogRecord.at >= since)
    if until is not None:
        query = query.where(MessageLogRecord.at < until)
    return query


async def _walk(
    sessions: async_sessionmaker[AsyncSession],
    hasher: Hasher,
    writer: MessageLogWriter,
    kept_from: datetime | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[ChainWalker, Break | None]:
    retained = kept_from is None or writer.started_at >= kept_from
    from_start = retained and (since is None or since <= writer.started_at)
    limits = [moment for moment in (kept_from, since) if moment is not None]
    walker = ChainWalker(
        hasher,
        writer.writer_id,
        anchor=writer.genesis if from_start else None,
        first_seq=1 if from_start else None,
        predecessor_before=max(limits) if limits else None,
    )
    last_at = writer.last_at
    if last_at is None or (kept_from is not None and last_at < kept_from):
        return walker, None  # nothing written, or all of it past the retention
    if (since is not None and since > last_at) or (until is not None and until <= writer.started_at):
        return walker, None  # the window holds none of this writer's records
    table = MessageLogRecord
    after = 0
    while walker.broken is None:
        query = _window(
            select(*_SELECTED)
            .where(table.writer_id == writer.writer_id, table.seq > after, table.seq <= writer.last_seq)
            .order_by(table.seq)
            .limit(BATCH),
            since,
            until,
        )
        async with sessions() as session:
            batch = [record_of(row) for row in (await session.execute(query)).all()]
        walker.feed(batch)
        if len(batch) < BATCH:
            break
        after = batch[-1].seq
    if until is None or until > last_at:
        walker.finish(writer.last_seq, writer.last_hash)
    return walker, walker.broken


async def _past_seal(
    sessions: async_sessionmaker[AsyncSession],
    writer: MessageLogWriter,
    since: datetime | None,
    until: datetime | None,
) -> Break | None:
    """A record after the one the writer sealed. A writer commits its records and its seal in one
    transaction, so a record seen here that the seal, read again after it, still does not cover was
    never written by the writer."""
    table = MessageLogRecord
    query = _window(
        select(table.seq, table.id)
        .where(table.writer_id == writer.writer_id, table.seq > writer.last_seq)
        .order_by(table.seq)
        .limit(1),
        since,
        until,
    )
    async with sessions() as session:
        found = (await session.execute(query)).first()
        if found is None:
            return None
        sealed = await session.scalar(
            select(MessageLogWriter.last_seq).where(MessageLogWriter.writer_id == writer.writer_id)
        )
    if sealed is not None and found.seq <= sealed:
        return None  # written since the writer's row was read: the next verification walks it
    return Break(
        writer.writer_id,
        BreakReason.PAST_SEAL,
        f"record {found.seq} lies past the writer's seal (record {sealed})",
        seq=found.seq,
        record_id=found.id,
    )


# Every writer id in the table, one index probe per writer and partition (a loose index scan of the
# primary key), however many records each writer holds.
_WRITER_IDS = text(
    "WITH RECURSIVE found(writer_id) AS ("
    " (SELECT writer_id FROM message_log WHERE at >= :since AND at < :until ORDER BY writer_id LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT m.writer_id FROM message_log m WHERE m.writer_id > found.writer_id"
    " AND m.at >= :since AND m.at < :until ORDER BY m.writer_id LIMIT 1)"
    " FROM found WHERE found.writer_id IS NOT NULL"
    ") SELECT writer_id FROM found WHERE writer_id IS NOT NULL"
)


async def _unknown_writers(
    sessions: async_sessionmaker[AsyncSession],
    known: set[uuid.UUID],
    since: datetime | None,
    until: datetime | None,
    writer_id: uuid.UUID | None,
) -> list[Break]:
    """The writers whose records are in the table but who have no row (read again: a writer's first
    batch commits its records and its row together), each with its first record."""
    window = {"since": since or EARLIEST, "until": until or LATEST}
    table = MessageLogRecord
    async with sessions() as session:
        if writer_id is None:
            present = set((await session.execute(_WRITER_IDS, window)).scalars().all())
        else:
            present = {writer_id}
        missing = present - known
        if not missing:
            return []
        missing -= set(
            (
                await session.scalars(
                    select(MessageLogWriter.writer_id).where(MessageLogWriter.writer_id.in_(missing))
                )
            ).all()
        )
        breaks = []
        for writer in sorted(missing):
            first = (
                await session.execute(
                    _window(
                        select(table.seq, table.id)
                        .where(table.writer_id == writer)
                        .order_by(table.seq)
                        .limit(1),
                        since,
                        until,
                    )
                )
            ).first()
            if first is not None:
                breaks.append(
                    Break(
                        writer,
                        BreakReason.UNKNOWN_WRITER,
                        "records of a writer that has no row: inserted, or the writer's row removed",
                        seq=first.seq,
                        record_id=first.id,
                    )
                )
    return breaks
