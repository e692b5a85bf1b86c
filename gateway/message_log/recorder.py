"""This replica's writer of the message log: records chained in memory, written in batches.

A call costs the request path no database round trip: ``record`` chains the record (one HMAC) and
appends it to a bounded buffer, and a background task writes what is there every ``flush_seconds``
(sooner once ``batch_size`` records wait) with one COPY and the writer's sealed row, in one
transaction. While the database is down the buffer grows up to ``max_pending`` records, and up to
``max_pending`` KiB (a record is about 0.85 KiB; one whose caller filled its path and query names to
their limits is up to 6 KiB and counts as such, so no caller can make the buffer outgrow the pod's
memory); a record that finds it full is dropped and counted, and the next record written says how
many went (``dropped_before``), so the chain itself shows where the log has holes. A failed batch is
retried as it was (same sequence numbers, same hashes), so retries never fork the chain.

A crash loses what was still in the buffer: at most ``flush_seconds`` of calls while the database
answers, and everything buffered while it does not (at most ``max_pending`` records). A stop flushes
first, for up to ``shutdown_seconds``.

Each process is a writer of its own, with a new writer id: nothing about a chain is read back at
start (the database may be down then), no two processes ever extend one chain, and a replica never
contends with another on a "last hash". The writer announces itself in ``message_log_writers`` with
its first batch; its genesis hash (the previous hash of its first record) is a MAC over that
announcement.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.ids import new_id
from citygrid.runtime import cancel_all
from gateway.message_log import store
from gateway.message_log.chain import Hasher, Record, chained
from gateway.metrics import GatewayMetrics

log = logging.getLogger("gateway.message_log")

MAX_BACKOFF_SECONDS = 5.0
# The buffer's byte bound is ``max_pending`` of these: a typical record holds about 850 bytes.
RECORD_BYTES = 1_024
# What every record holds besides its path, consumer and query names (ids, times, hashes, the slots).
_FIXED_BYTES = 560


# What a record keeps of the fields an answer held: at most this many names, each at most this long.
MAX_FIELDS = 100
FIELD_NAME_LENGTH = 64


@dataclass(frozen=True)
class Call:
    """What the request path knows of a call when it answers."""

    request_id: str | None
    consumer: str
    dataset: str
    action: str
    method: str
    path: str
    query_keys: tuple[str, ...]
    status: int
    duration_ms: int
    record_count: int | None = None  # of an answer the gateway read (the exchange's)
    fields: tuple[str, ...] = ()


class MessageLog:
    def __init__(
        self,
        *,
        hasher: Hasher,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        metrics: GatewayMetrics,
        batch_size: int = 500,
        flush_seconds: float = 0.1,
        max_pending: int = 50_000,
        shutdown_seconds: float = 5.0,
        replica: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.hasher = hasher
        self.sessions = sessions
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.shutdown_seconds = shutdown_seconds
        self.clock = clock
        started_at = clock()
        writer_id = new_id()
        replica = (replica or socket.gethostname())[:200]
        self.announcement = store.Announcement(
            writer_id=writer_id,
            replica=replica,
            started_at=started_at,
            key_id=hasher.key_id,
            genesis=hasher.genesis(writer_id, replica, started_at),
        )
        self.max_pending_bytes = max_pending * RECORD_BYTES
        # Each with when it was recorded (monotonic) and what it holds in memory.
        self._pending: deque[tuple[Record, float, int]] = deque()
        self._pending_bytes = 0
        self._seq = 0
        self._last_hash = self.announcement.genesis
        self._last_at = started_at
        self._dropped = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def writer_id(self) -> uuid.UUID:
        return self.announcement.writer_id

    @property
    def pending(self) -> int:
        return len(self._pending)

    def oldest_pending_age(self) -> float:
        return time.monotonic() - self._pending[0][1] if self._pending else 0.0

    def record(self, call: Call) -> None:
        """Chain the call and buffer it; never waits, never raises."""
        try:
            size = _size_of(call)
            if len(self._pending) >= self.max_pending or self._pending_bytes + size > self.max_pending_bytes:
                self._drop()
                return
            # One writer's times never go backwards, whatever the wall clock does.
            at = max(self.clock(), self._last_at)
            record = chained(
                self.hasher,
                Record(
                    id=new_id(),
                    writer_id=self.writer_id,
                    seq=self._seq + 1,
                    at=at,
                    # Cut to their columns before they are hashed: a value the table refuses would
                    # hold this writer's every later batch back, retried for ever.
                    request_id=None if call.request_id is None else store.fit("request_id", call.request_id),
                    consumer=store.fit("consumer", call.consumer),
                    dataset=store.fit("dataset", call.dataset),
                    action=call.action,
                    method=call.method,
                    path=store.fit("path", call.path),
                    query_keys=call.query_keys,
                    status=call.status,
                    # Only the exchange reads answers (it masks them): /api calls carry no count.
                    duration_ms=call.duration_ms,
                    record_count=call.record_count,
                    fields=tuple(name[:FIELD_NAME_LENGTH] for name in call.fields[:MAX_FIELDS]),
                    dropped_before=self._dropped,
                    prev_hash=self._last_hash,
                    prev_at=self._last_at if self._seq else None,
                ),
            )
        except Exception:
            # Counted and said in the chain like a call the buffer had no room for, never silent.
            log.exception("message log: a call could not be recorded")
            self._drop()
            return
        self._seq, self._last_hash, self._last_at, self._dropped = record.seq, record.hash, at, 0
        self._pending.append((record, time.monotonic(), size))
        self._pending_bytes += size
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def _drop(self) -> None:
        self._dropped += 1
        self.metrics.message_log_dropped.inc()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="job-message-log-writer")
        return self._task

    async def run(self) -> None:
        """Flush until stopped; a failed batch is retried (with backoff) until it is written."""
        backoff = 0.0
        while not self._stopping:
            # Backing off, a full batch does not cut the pause short (calls would set the pace of
            # retries against a database that is down); only a stop does.
            await _pause(self._stop if backoff else self._wake, backoff or self.flush_seconds)
            self._wake.clear()
            try:
                while self._pending and not self._stopping:
                    await self.flush_once()
                backoff = 0.0
            except Exception as error:
                self.metrics.message_log_flush_failures.inc()
                log.warning("message log: could not write %d records: %s", len(self._pending), error)
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_SECONDS)

    async def flush_once(self) -> int:
        """Write the oldest batch; it leaves the buffer only once committed."""
        batch = [self._pending[i][0] for i in range(min(self.batch_size, len(self._pending)))]
        if not batch:
            return 0
        last = batch[-1]
        started = time.perf_counter()
        try:
            await store.write_batch(
                self.sessions(),
                self.announcement,
                batch,
                self.hasher.seal(self.writer_id, last.seq, last.hash, last.at),
            )
        except (IntegrityError, asyncpg.exceptions.UniqueViolationError):
            # A commit whose answer was lost, then retried: the rows are there if the seal says so.
            if await store.sealed_seq(self.sessions(), self.writer_id) < last.seq:
                raise
        self.metrics.message_log_flush_seconds.observe(time.perf_counter() - started)
        for _ in batch:
            self._pending_bytes -= self._pending.popleft()[2]
        self.metrics.message_log_written.inc(len(batch))
        return len(batch)

    async def stop(self) -> None:
        """Let the flushing task finish its batch, then write what is left for up to
        ``shutdown_seconds``; what still is not written is logged as lost."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_seconds
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.shutdown_seconds)
            await cancel_all([self._task])
        while self._pending and loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self.flush_once()
            except TimeoutError:
                break
            except Exception as error:
                log.warning("message log: flush on shutdown failed: %s", error)
                await asyncio.sleep(0.2)
        if self._pending:
            log.error("message log: %d records were not written before the stop", len(self._pending))
        if self._dropped:
            # No record after them will say so in the chain: this line is all that does.
            log.error(
                "message log: %d calls since the last record were not recorded before the stop", self._dropped
            )


def _size_of(call: Call) -> int:
    """About what the call's record will hold in memory (measured with ``tracemalloc``)."""
    return (
        _FIXED_BYTES
        + sys.getsizeof(call.path)
        + sys.getsizeof(call.consumer)
        + sum(map(sys.getsizeof, call.query_keys))
        + sum(map(sys.getsizeof, call.fields))
    )


async def _pause(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
