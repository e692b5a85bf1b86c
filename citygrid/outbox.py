"""Transactional outbox and its relay to JetStream.

An event row commits in the same transaction as the state change it describes. The relay publishes
rows in commit order with ``Nats-Msg-Id`` = event id and the expected stream named, waits for the
PubAck, and only then marks the row published. A crash between PubAck and the mark re-publishes the
row; JetStream drops the copy inside its duplicate window, and consumers' inboxes drop it after.

There is no NOTIFY (it serialises commits server-wide): relays poll a tiny partial index
adaptively, and a process's own commits wake its relay at once.

Order per aggregate holds with any number of replicas: a relay round runs only while it holds the
service's relay lock (a transaction-level advisory lock), so one replica publishes at a time and the
others stand by, taking over at their next round when the active one stops or dies. Inside a round
an aggregate has at most one event in flight: a batch is published in waves, the oldest unsent event
of each aggregate per wave, so an event refused by the server never has a later event of its
aggregate stored ahead of it.

A row the server refuses (no stream for its subject, wrong stream, too large) is retried with
backoff and quarantined after ``max_attempts``: kept, counted in a gauge, replayable by an admin,
and no longer holding back its aggregate's later events. Connection trouble (NATS down, a timeout)
counts against no row: the round ends and the relay retries with backoff. NATS down: rows wait;
HTTP requests are never blocked by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.db import KitBase
from citygrid.events import CloudEvent, stream_name
from citygrid.logging import scrubbed_logger
from citygrid.metrics import KitMetrics
from citygrid.scrub import scrub

# Every line it logs is scrubbed (citygrid.scrub), like the errors it stores.
log = scrubbed_logger("citygrid.outbox")

# pg_try_advisory_xact_lock key of the relay: advisory locks are per database, and each service
# has its own database, so this is one lock per service.
RELAY_LOCK = 7_731_002
# A relay that vanished mid-round (its pod gone without closing the connection) holds the lock at
# most this long: PostgreSQL ends the idle transaction and the standby takes over.
RELAY_IDLE_TIMEOUT = "30s"
MAX_ROW_BACKOFF_SECONDS = 300.0
MIN_POLL_SECONDS = 0.05


class OutboxMessage(KitBase):
    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    subject: Mapped[str] = mapped_column(String(255))
    aggregate_id: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Only rows waiting to go are in this index, so the relay's claim query stays small forever.
        Index(
            "ix_outbox_unpublished",
            "seq",
            postgresql_where=text("published_at IS NULL AND quarantined_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at", postgresql_where=text("published_at IS NOT NULL")),
        Index("ix_outbox_quarantined", "seq", postgresql_where=text("quarantined_at IS NOT NULL")),
    )


# One statement for any number of events (executed with a list of rows): a VALUES list built per
# transaction would cost SQLAlchemy a new cache key, and a compiled form per row count.
# The table's insert, not the model's: the ORM's bulk path would cost more than it gives here.
OUTBOX_INSERT = insert(cast(Table, OutboxMessage.__table__))


def outbox_rows(events: Sequence[CloudEvent]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": uuid.UUID(event.id),
            "subject": event.nats_subject,
            "aggregate_id": (event.subject or "")[:200] or None,
            "payload": event.model_dump(mode="json", exclude_none=True),
        }
        for event in events
    ]


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def expected_stream(subject: str) -> str:
    """The stream a subject must land in: ``case.case.registered`` → ``CASE``."""
    return stream_name(subject.split(".", 1)[0])


class PublishRefused(Exception):
    """JetStream answered this message with an error (wrong stream, no stream, too large…): it would
    answer the same again, unlike connection trouble, which says nothing about the message."""


def refused_by_server(error: BaseException) -> bool:
    return isinstance(error, PublishRefused | nats.errors.MaxPayloadError)


class PipelinedPublisher:
    """Publishes to JetStream without waiting for each PubAck, and hands every answer back, errors
    included, to the future of its message.

    nats-py's ``publish_async`` loses an error answer (its reply handler raises instead of setting
    the future, which then only times out), so a refused event would look like an outage.
    """

    def __init__(self, client: NatsClient) -> None:
        self.client = client
        self._prefix: str | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._counter = 0

    async def _start(self) -> str:
        if self._prefix is None:
            prefix = self.client.new_inbox()
            await self.client.subscribe(f"{prefix}.*", cb=self._on_reply)
            self._prefix = prefix
        return self._prefix

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[None]:
        prefix = await self._start()
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._pending.pop(token, None))
        self._pending[token] = future
        await self.client.publish(subject, payload, reply=f"{prefix}.{token}", headers=headers)
        return future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject.rsplit(".", 1)[-1])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(PublishRefused("no stream takes this subject (no responders)"))
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(PublishRefused(f"not a PubAck: {msg.data[:200]!r}"))
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            if error.get("code") == 503:  # JetStream itself unavailable for now: not the message's fault
                future.set_exception(ConnectionError(f"JetStream unavailable: {error.get('description')}"))
            else:
                future.set_exception(
                    PublishRefused(f"{error.get('code')}/{error.get('err_code')}: {error.get('description')}")
                )
            return
        future.set_result(None)


def row_backoff_seconds(attempts: int) -> float:
    return float(min(2**attempts, MAX_ROW_BACKOFF_SECONDS))


@dataclass(frozen=True)
class OutboxState:
    backlog: int
    oldest_age_seconds: float
    quarantined: int


async def outbox_state(sessions: async_sessionmaker[AsyncSession]) -> OutboxState:
    """Backlog, age of its oldest event and quarantined rows, straight from the table: true whatever
    the relay is doing (failing, never started because NATS was never reached)."""
    waiting = OutboxMessage.published_at.is_(None) & OutboxMessage.quarantined_at.is_(None)
    async with sessions() as session:
        backlog, oldest_age, quarantined = (
            await session.execute(
                select(
                    select(func.count()).where(waiting).scalar_subquery(),
                    select(func.extract("epoch", func.now() - func.min(OutboxMessage.created_at)))
                    .where(waiting)
                    .scalar_subquery(),
                    select(func.count()).where(OutboxMessage.quarantined_at.is_not(None)).scalar_subquery(),
                )
            )
        ).one()
    return OutboxState(int(backlog), float(oldest_age or 0.0), int(quarantined))


@dataclass(frozen=True)
class ClaimedRow:
    seq: int
    event_id: uuid.UUID
    subject: str
    aggregate: str
    payload: dict[str, Any]
    attempts: int
    waiting: bool  # its retry time has not come: its aggregate waits with it


@dataclass
class RoundResult:
    acked: list[ClaimedRow]
    refused: list[tuple[ClaimedRow, str]]
    interrupted: tuple[ClaimedRow, str] | None = None


class OutboxRelay:
    """Moves committed events from the outbox table to JetStream; one per service process, one of
    them active at a time."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        nats: NatsClient,
        metrics: KitMetrics | None = None,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        min_poll_seconds: float = MIN_POLL_SECONDS,
        publish_timeout: float = 5.0,
        max_attempts: int = 10,
    ) -> None:
        self.sessions = sessions
        self.publisher = PipelinedPublisher(nats)
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.min_poll_seconds = min(min_poll_seconds, poll_seconds)
        self.publish_timeout = publish_timeout
        self.max_attempts = max_attempts
        self.active = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> list[uuid.UUID]:
        """Publish one batch of the oldest unpublished rows if this relay holds the relay lock;
        return the ids JetStream acknowledged (none when another replica is the active relay)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                text(f"SET LOCAL idle_in_transaction_session_timeout = '{RELAY_IDLE_TIMEOUT}'")
            )
            self.active = bool(await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK))))
            if self.metrics is not None:
                self.metrics.outbox_relay_active.set(1 if self.active else 0)
            if not self.active:
                return []
            claim = (
                select(
                    OutboxMessage.seq,
                    OutboxMessage.event_id,
                    OutboxMessage.subject,
                    func.coalesce(OutboxMessage.aggregate_id, func.cast(OutboxMessage.seq, String)),
                    OutboxMessage.payload,
                    OutboxMessage.attempts,
                    func.coalesce(OutboxMessage.next_attempt_at > func.now(), False),
                )
                .where(OutboxMessage.published_at.is_(None), OutboxMessage.quarantined_at.is_(None))
                .order_by(OutboxMessage.seq)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = [ClaimedRow(*row) for row in (await session.execute(claim)).all()]
            if not rows:
                return []
            result = await self._publish(rows)
            await self._record(session, result)
        if self.metrics is not None:
            self.metrics.outbox_published.inc(len(result.acked))
        if result.interrupted is not None:
            raise OutboxPublishError(result.interrupted[1])
        return [row.event_id for row in result.acked]

    async def _publish(self, rows: Sequence[ClaimedRow]) -> RoundResult:
        """Publish in waves: each wave holds the oldest unsent row of every aggregate, pipelined;
        a refused row holds back the rest of its aggregate, connection trouble ends the round."""
        queues: dict[str, deque[ClaimedRow]] = {}
        for row in rows:
            queues.setdefault(row.aggregate, deque()).append(row)
        for aggregate in [key for key, queue in queues.items() if queue[0].waiting]:
            del queues[aggregate]
        result = RoundResult(acked=[], refused=[])
        while queues:
            wave = [queue.popleft() for queue in queues.values()]
            futures: list[asyncio.Future[None]] = []
            current = wave[0]
            try:
                for row in wave:
                    current = row
                    futures.append(
                        await self.publisher.publish(
                            row.subject,
                            encode_payload(row.payload),
                            headers={
                                "Nats-Msg-Id": str(row.event_id),
                                "Nats-Expected-Stream": expected_stream(row.subject),
                            },
                        )
                    )
                deadline = time.monotonic() + self.publish_timeout
                for row, future in zip(wave, futures, strict=False):
                    current = row
                    try:
                        await asyncio.wait_for(future, timeout=max(0.01, deadline - time.monotonic()))
                    except Exception as error:
                        if not refused_by_server(error):
                            raise
                        result.refused.append((row, f"{type(error).__name__}: {error}"))
                        if row.attempts + 1 < self.max_attempts:
                            del queues[row.aggregate]  # its aggregate waits for it
                        continue  # quarantined now: the aggregate's later events go on
                    result.acked.append(row)
            except Exception as error:  # connection trouble: what is not acked waits for the next round
                result.interrupted = (current, f"{type(error).__name__}: {error}")
                return result
            finally:
                for future in futures:
                    if not future.done():
                        future.cancel()
            for aggregate in [key for key, queue in queues.items() if not queue]:
                del queues[aggregate]
        return result

    async def _record(self, session: AsyncSession, result: RoundResult) -> None:
        if result.acked:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.seq.in_([row.seq for row in result.acked]))
                .values(published_at=func.now())
            )
        for row, refusal in result.refused:
            error = scrub(refusal)  # stored in last_error, which admins read: no personal data
            attempts = row.attempts + 1
            quarantine = attempts >= self.max_attempts
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.seq == row.seq)
                .values(
                    attempts=attempts,
                    last_error=error[:2000],
                    next_attempt_at=func.now()
                    + func.make_interval(0, 0, 0, 0, 0, 0, row_backoff_seconds(attempts)),
                    quarantined_at=func.now() if quarantine else None,
                )
            )
            if quarantine:
                log.error("outbox: event %s quarantined after %d refusals: %s", row.event_id, attempts, error)
            else:
                log.warning("outbox: event %s refused (attempt %d): %s", row.event_id, attempts, error)
        if result.interrupted is not None:
            row, interruption = result.interrupted
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.seq == row.seq)
                .values(last_error=scrub(interruption)[:2000])
            )

    async def run(self) -> None:
        """Relay until cancelled. Polls adaptively: right away while rows keep coming, then backing
        off to ``poll_seconds`` when idle (a standby's poll is also its bid for the relay lock).
        This process's own commits wake it at once."""
        backoff = 0.2
        idle_wait = self.min_poll_seconds
        try:
            while True:
                self._wake.clear()
                published = 0
                try:
                    published = len(await self.relay_once())
                    backoff = 0.2
                except Exception as error:
                    log.warning("outbox relay round failed, retrying in %.1fs: %s", backoff, error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if published:
                    idle_wait = self.min_poll_seconds
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_wait)
                idle_wait = min(idle_wait * 2, self.poll_seconds)
        finally:
            self.active = False
            if self.metrics is not None:
                self.metrics.outbox_relay_active.set(0)


class OutboxPublishError(Exception):
    """A row could not be published this round; it stays in the outbox."""
