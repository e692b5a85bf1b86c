"""Idempotent event consumers: durable pull consumers, an inbox table and dead letters.

A handler's effects and the ``(consumer, event id)`` inbox row commit in one transaction, so a
redelivered event finds its row, is acknowledged and skipped. A failing event is redelivered with
backoff; on its ``max_deliver``-th failure it is kept as a dead letter with the error, acknowledged,
counted, and can be replayed once the cause is fixed.

A handler that raises a ``DomainError`` has judged the event itself unprocessable (an unknown
category, a case that does not exist): redelivery cannot change that verdict, so the event is
dead-lettered at once, with the error's ``code``.

``max_deliver`` is enforced here rather than by the server: if the server gave up while the
database was down, the dead letter could not be written and the event would vanish from view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import DateTime, Integer, LargeBinary, String, Text, func, select, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.db import KitBase, UnitOfWork, unit_of_work
from citygrid.errors import Conflict, DomainError, NotFound
from citygrid.events import CloudEvent, stream_name
from citygrid.ids import new_id
from citygrid.metrics import KitMetrics

log = logging.getLogger("citygrid.inbox")

Handler = Callable[[UnitOfWork, CloudEvent], Awaitable[None]]


class InboxEntry(KitBase):
    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetter(KitBase):
    __tablename__ = "dead_letters"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    consumer: Mapped[str] = mapped_column(String(100), index=True)
    event_id: Mapped[str | None] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(255))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable consumer: which events it reads and the plain function that handles them."""

    name: str
    domain: str
    subject: str
    handler: Handler
    max_deliver: int = 5
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    ack_wait: float = 30.0
    batch_size: int = 50


class DeadLetterNotFound(NotFound):
    code = "dead_letter.not_found"


class ReplayFailed(Conflict):
    code = "dead_letter.replay_failed"
    title = "Replay failed"


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        sessions: async_sessionmaker[AsyncSession],
        source: str,
        metrics: KitMetrics | None = None,
    ) -> None:
        self.spec = spec
        self.sessions = sessions
        self.source = source
        self.metrics = metrics

    async def process(self, event: CloudEvent) -> bool:
        """Handle one event exactly once; False when it had already been handled."""
        async with unit_of_work(self.sessions, source=self.source, traceparent=event.traceparent) as uow:
            claimed = await uow.session.execute(
                insert(InboxEntry)
                .values(consumer=self.spec.name, event_id=event.id)
                .on_conflict_do_nothing()
                .returning(InboxEntry.event_id)
            )
            if claimed.first() is None:
                return False
            await self.spec.handler(uow, event)
        return True

    async def handle_message(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        try:
            event = CloudEvent.model_validate_json(msg.data)
        except ValidationError as error:
            await self._dead_letter(msg, None, f"not a CloudEvent: {error}", deliveries)
            return
        try:
            handled = await self.process(event)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, DomainError):
                reason = f"{error.code}: {error}"
            if deliveries >= self.spec.max_deliver or isinstance(error, DomainError):
                await self._dead_letter(msg, event.id, reason, deliveries)
                return
            delay = self.spec.backoff[min(deliveries - 1, len(self.spec.backoff) - 1)]
            log.warning(
                "consumer %s: event %s failed (delivery %d), retry in %.1fs: %s",
                self.spec.name,
                event.id,
                deliveries,
                delay,
                reason,
            )
            self._count("retried")
            await msg.nak(delay=delay)
            return
        self._count("handled" if handled else "duplicate")
        await msg.ack()

    async def _dead_letter(self, msg: Msg, event_id: str | None, error: str, deliveries: int) -> None:
        try:
            async with self.sessions() as session, session.begin():
                session.add(
                    DeadLetter(
                        consumer=self.spec.name,
                        event_id=event_id,
                        subject=msg.subject,
                        payload=msg.data,
                        error=error[:4000],
                        deliveries=deliveries,
                    )
                )
        except Exception as store_error:
            # Not stored, so not acknowledged: the event comes back and we try again.
            log.error("consumer %s: could not store dead letter: %s", self.spec.name, store_error)
            await msg.nak(delay=self.spec.backoff[-1])
            return
        log.error(
            "consumer %s: event %s dead-lettered after %d deliveries: %s",
            self.spec.name,
            event_id,
            deliveries,
            error,
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(consumer=self.spec.name).inc()
        self._count("dead_lettered")
        await msg.ack()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.consumer_handled.labels(consumer=self.spec.name, outcome=outcome).inc()

    async def run(self, jetstream: JetStreamContext) -> None:
        stream = stream_name(self.spec.domain)
        config = ConsumerConfig(
            durable_name=self.spec.name,
            filter_subject=self.spec.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.spec.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, self.spec.batch_size * 4),
        )
        await jetstream.add_consumer(stream, config)
        subscription = await jetstream.pull_subscribe_bind(durable=self.spec.name, stream=stream)
        last_info = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                messages = await subscription.fetch(batch=self.spec.batch_size, timeout=1.0)
            except TimeoutError:
                messages = []
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("consumer %s: fetch failed: %s", self.spec.name, error)
                await asyncio.sleep(1.0)
                continue
            for msg in messages:
                await self.handle_message(msg)
            if self.metrics is not None and loop.time() - last_info > 5.0:
                last_info = loop.time()
                with contextlib.suppress(Exception):
                    info = await subscription.consumer_info()
                    self.metrics.consumer_pending.labels(consumer=self.spec.name).set(info.num_pending or 0)

    async def replay(self, dead_letter_id: uuid.UUID) -> bool:
        """Hand a dead letter to the handler again; True if it was handled now."""
        async with self.sessions() as session:
            letter = await session.get(DeadLetter, dead_letter_id)
        if letter is None or letter.consumer != self.spec.name:
            raise DeadLetterNotFound(f"no dead letter {dead_letter_id} for consumer {self.spec.name}")
        try:
            event = CloudEvent.model_validate_json(letter.payload)
            handled = await self.process(event)
        except Exception as error:
            raise ReplayFailed(f"the handler failed again: {type(error).__name__}: {error}") from None
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(DeadLetter).where(DeadLetter.id == dead_letter_id).values(replayed_at=func.now())
            )
        return handled


async def find_dead_letter(
    sessions: async_sessionmaker[AsyncSession], dead_letter_id: uuid.UUID
) -> DeadLetter:
    async with sessions() as session:
        letter = await session.scalar(select(DeadLetter).where(DeadLetter.id == dead_letter_id))
    if letter is None:
        raise DeadLetterNotFound(f"no dead letter {dead_letter_id}")
    return letter
