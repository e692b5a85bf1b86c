"""Transactional outbox and its relay to JetStream.

An event row commits in the same transaction as the state change it describes. The relay claims
unpublished rows with ``FOR UPDATE SKIP LOCKED`` (so replicas never publish the same row at the
same time), publishes each with ``Nats-Msg-Id`` = event id, waits for the PubAck and only then marks
the row published. A crash between PubAck and the mark re-publishes the row, and JetStream drops the
copy inside its duplicate window. NATS down: rows wait; HTTP requests are never blocked by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Insert,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.db import OUTBOX_CHANNEL, KitBase, transaction_time
from citygrid.events import CloudEvent
from citygrid.metrics import KitMetrics

log = logging.getLogger("citygrid.outbox")


class OutboxMessage(KitBase):
    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    subject: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # Only unpublished rows are in this index, so the relay's claim query stays small forever.
        Index("ix_outbox_unpublished", "seq", postgresql_where="published_at IS NULL"),
        Index("ix_outbox_published_at", "published_at", postgresql_where="published_at IS NOT NULL"),
    )


def outbox_rows(events: Sequence[CloudEvent]) -> Insert:
    return insert(OutboxMessage).values(
        [
            {
                "event_id": uuid.UUID(event.id),
                "subject": event.nats_subject,
                "payload": event.model_dump(mode="json", exclude_none=True),
            }
            for event in events
        ]
    )


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class OutboxRelay:
    """Moves committed events from the outbox table to JetStream; one per service process."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        jetstream: JetStreamContext,
        listen_dsn: str | None,
        metrics: KitMetrics | None = None,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self.sessions = sessions
        self.jetstream = jetstream
        self.listen_dsn = listen_dsn
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.publish_timeout = publish_timeout
        self.retention = retention
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> list[uuid.UUID]:
        """Publish one batch of the oldest unpublished rows; return the ids JetStream acknowledged."""
        async with self.sessions() as session, session.begin():
            claim = (
                select(
                    OutboxMessage.seq, OutboxMessage.event_id, OutboxMessage.subject, OutboxMessage.payload
                )
                .where(OutboxMessage.published_at.is_(None))
                .order_by(OutboxMessage.seq)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(claim)).all()
            if not rows:
                return []
            acked, failure = await self._publish(rows)
            if acked:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.seq.in_([row.seq for row in rows[: len(acked)]]))
                    .values(published_at=func.now())
                )
            if failure is not None:
                failed = rows[len(acked)]
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.seq == failed.seq)
                    .values(attempts=OutboxMessage.attempts + 1, last_error=failure[:2000])
                )
        if self.metrics is not None:
            self.metrics.outbox_published.inc(len(acked))
        if failure is not None:
            raise OutboxPublishError(failure)
        return acked

    async def _publish(self, rows: Sequence[Any]) -> tuple[list[uuid.UUID], str | None]:
        """Publish in order, pipelined; stop at the first row without a PubAck."""
        futures: list[asyncio.Future[Any]] = []
        acked: list[uuid.UUID] = []
        try:
            for row in rows:
                futures.append(
                    await self.jetstream.publish_async(
                        row.subject, encode_payload(row.payload), headers={"Nats-Msg-Id": str(row.event_id)}
                    )
                )
            deadline = time.monotonic() + self.publish_timeout
            for row, future in zip(rows, futures, strict=False):
                await asyncio.wait_for(future, timeout=max(0.01, deadline - time.monotonic()))
                acked.append(row.event_id)
        except Exception as error:  # any failure leaves the rest for the next round
            return acked, f"{type(error).__name__}: {error}"
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        return acked, None

    async def refresh_metrics(self) -> None:
        if self.metrics is None:
            return
        async with self.sessions() as session:
            backlog, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxMessage.created_at)).where(
                        OutboxMessage.published_at.is_(None)
                    )
                )
            ).one()
            now = await transaction_time(session)
        self.metrics.outbox_backlog.set(backlog)
        self.metrics.outbox_oldest_age.set((now - oldest).total_seconds() if oldest else 0.0)

    async def purge_published(self) -> int:
        """Delete published rows past the retention, in bounded batches."""
        async with self.sessions() as session, session.begin():
            old = (
                select(OutboxMessage.seq)
                .where(OutboxMessage.published_at < func.now() - self.retention)
                .limit(10_000)
                .scalar_subquery()
            )
            result = await session.execute(delete(OutboxMessage).where(OutboxMessage.seq.in_(old)))
            return int(getattr(result, "rowcount", 0) or 0)

    async def run(self) -> None:
        """Relay until cancelled: woken by NOTIFY, with a poll as the fallback."""
        listener = asyncio.create_task(self._listen(), name="outbox-listen")
        backoff = 0.2
        last_housekeeping = 0.0
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
                if time.monotonic() - last_housekeeping > 5.0:
                    last_housekeeping = time.monotonic()
                    with contextlib.suppress(Exception):
                        await self.refresh_metrics()
                        await self.purge_published()
                if published >= self.batch_size:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        if self.listen_dsn is None:
            return
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self.listen_dsn)
                await connection.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
                self._wake.set()  # rows committed while we were not listening
                while not connection.is_closed():
                    await asyncio.sleep(5.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.info("outbox LISTEN connection lost (%s); polling until it is back", error)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(2.0)


class OutboxPublishError(Exception):
    """A row could not be published this round; it stays in the outbox."""
