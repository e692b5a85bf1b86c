"""Idempotent event consumers: durable pull consumers, an inbox table and dead letters.

A handler's effects and the ``(inbox key, event id)`` inbox row commit in one transaction, so a
redelivered event finds its row, is acknowledged and skipped. What the runner does with a message,
in order:

1. **Not a CloudEvent** (or one whose id is too long for the inbox) → dead letter at once.
2. **Forged source** → dead letter at once (``event.forged_source``), never handled: a message on
   ``<domain>.…`` must say ``source: citygrid/<domain>`` and carry a ``type`` under ``<domain>.``.
   NATS permissions let only that domain's service publish on its subjects, so the subject is the
   authenticated producer and the envelope has to agree with it.
3. **Unwanted** (``ConsumerSpec.wants`` says no) → acknowledged and counted ``skipped`` before any
   database work, leaving no inbox row.
4. **Handled**, in one transaction: the inbox row; for a consumer that ``mirrors`` another service's
   aggregate, the aggregate's version (an event whose ``aggregateversion`` is not newer than the one
   already applied is ``stale``: acknowledged, its inbox row kept, the handler not called); then the
   handler.

While a batch is in hand the runner tells the server every ``ack_wait / 3`` that its messages are in
progress, so a slow handler (and the messages queued behind it) is not redelivered elsewhere.

Failures:

- a handler that raises a ``DomainError`` has judged the event itself unprocessable (an unknown
  category, a case that does not exist): redelivery cannot change that verdict, so the event is
  dead-lettered at once, with the error's ``code``;
- a **transient** database error (deadlock, serialization failure, lock or statement timeout, lost
  connection, a failover: ``is_transient``) is nak'ed with backoff and never counts against
  ``max_deliver``: it says nothing about the event;
- any other failure is counted in ``inbox_failures`` and the event redelivered with backoff; at its
  ``max_deliver``-th failure it is kept as a dead letter with the error, acknowledged, counted, and
  can be replayed once the cause is fixed.

``max_deliver`` is enforced here rather than by the server, and on counted failures rather than on
the server's delivery count: if the server gave up while the database was down, the dead letter
could not be written and the event would vanish from view; and neither an outage nor a slow handler
should push an event towards its dead letter.

A consumer's durable name may change (a rename, a new filter); its ``inbox`` key must not. A durable
that does not exist yet is created starting a few minutes before the newest event its inbox key has
handled (or at the start of the stream when the key has handled nothing), so a renamed consumer does
not walk through the stream's whole history again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError
from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.db import KitBase, UnitOfWork, unit_of_work
from citygrid.errors import Conflict, DomainError, NotFound
from citygrid.events import CloudEvent, source_of, stream_name
from citygrid.ids import new_id
from citygrid.logging import scrubbed_logger
from citygrid.metrics import KitMetrics
from citygrid.scrub import scrub, scrub_error

# Every line it logs is scrubbed (citygrid.scrub): a handler's error quotes the rows it wrote.
log = scrubbed_logger("citygrid.inbox")

Handler = Callable[[UnitOfWork, CloudEvent], Awaitable[None]]
Wants = Callable[[CloudEvent], bool]
Outcome = Literal["handled", "duplicate", "stale", "skipped"]

FORGED_SOURCE = "event.forged_source"
FILTER_FAILED = "event.filter_failed"
HANDLER_TIMED_OUT = "event.handler_timed_out"
INVALID_ID = "event.invalid_id"
EVENT_ID_LENGTH = 100  # the inbox's, the failure counts' and the dead letters' event_id column

# A new durable for an inbox key that has handled events starts this long before the newest of
# them: events that were still being retried then (backoff up to minutes) or that the clocks of
# PostgreSQL and NATS disagree about are delivered again, and the inbox drops the ones it holds.
RESUME_OVERLAP = timedelta(minutes=5)

# PostgreSQL errors that say nothing about the event: the same transaction may well succeed later.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout, NOWAIT)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (a server starting or promoting)
        "53300",  # too_many_connections
    }
)
TRANSIENT_SQLSTATE_CLASSES = ("08",)  # connection_exception and all its subclasses


class InboxEntry(KitBase):
    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Indexed for the retention job (citygrid.retention), which deletes the oldest rows first.
    handled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class AggregateVersion(KitBase):
    """The newest version of another service's aggregate that a mirroring consumer has applied."""

    __tablename__ = "aggregate_versions"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class InboxFailure(KitBase):
    """How often an event has failed in its handler (transient errors not counted): ``max_deliver``."""

    __tablename__ = "inbox_failures"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


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

    __table_args__ = (
        # Replayed letters are purged after the retention (citygrid.retention); pending ones stay.
        Index("ix_dead_letters_replayed_at", "replayed_at", postgresql_where="replayed_at IS NOT NULL"),
    )


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable consumer: which events it reads and the plain function that handles them.

    ``name`` is the durable consumer's name on the server (and the consumer of its dead letters and
    metrics); ``inbox`` is the key of its inbox rows and applied versions, ``name`` unless given.
    Keep ``inbox`` when renaming a consumer: the new durable then resumes where the old one was.

    ``wants``: a cheap, pure predicate on the envelope; an event it refuses is acknowledged without
    touching the database. ``mirrors``: the handler keeps a copy of the aggregate the event's
    ``subject`` names, so only an ``aggregateversion`` newer than the one applied reaches it.
    ``handler_timeout``: a handler running longer fails (and counts towards ``max_deliver``); the
    runner keeps its messages in progress until then.
    """

    name: str
    domain: str
    subject: str
    handler: Handler
    max_deliver: int = 5
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    ack_wait: float = 30.0
    batch_size: int = 50
    inbox: str = ""
    mirrors: bool = False
    wants: Wants | None = None
    transient_backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    handler_timeout: float | None = 300.0

    def __post_init__(self) -> None:
        if not self.inbox:
            object.__setattr__(self, "inbox", self.name)
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if self.ack_wait <= 0 or self.batch_size < 1:
            raise ValueError("ack_wait must be positive and batch_size at least 1")
        if not self.backoff or not self.transient_backoff:
            raise ValueError("backoff and transient_backoff need at least one delay")
        if len(self.inbox) > 100 or len(self.name) > 100:
            raise ValueError("a consumer's name and inbox key have at most 100 characters")


class DeadLetterNotFound(NotFound):
    code = "dead_letter.not_found"


class ReplayFailed(Conflict):
    code = "dead_letter.replay_failed"
    title = "Replay failed"


class HandlerTimedOut(Exception):
    """The handler ran past ``handler_timeout``: a failure like any other, not a transient one."""


def is_transient(error: BaseException) -> bool:
    """Whether a failure is the database's momentary state rather than anything about the event.

    Looks through SQLAlchemy's wrapper (``DBAPIError.orig``) and explicit causes to the driver's
    error and its SQLSTATE.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(
            current,
            OSError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | sa_exc.InterfaceError
            | sa_exc.TimeoutError,  # the engine's pool had no connection to give in time
        ):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)
        ):
            return True
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            stack.append(orig)
        stack.append(current.__cause__)
    return False


def forgery(nats_subject: str, event: CloudEvent) -> str | None:
    """Why ``event`` cannot have come from the producer of ``nats_subject``; None when it can."""
    domain = nats_subject.split(".", 1)[0]
    expected = source_of(domain)
    if event.source == expected and event.type.startswith(f"{domain}."):
        return None
    return (
        f"{FORGED_SOURCE}: an event on {nats_subject!r} must come from {expected!r} with a type "
        f"under {domain!r}; it says source {event.source!r}, type {event.type!r}"
    )


def cancelling() -> bool:
    """This task is being cancelled (whatever error the library raised instead)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        sessions: async_sessionmaker[AsyncSession],
        source: str,
        metrics: KitMetrics | None = None,
        on_events_committed: Callable[[], None] | None = None,
        fetch_wait: float = 1.0,
    ) -> None:
        self.spec = spec
        self.fetch_wait = fetch_wait
        self.sessions = sessions
        self.source = source
        self.metrics = metrics
        self.on_events_committed = on_events_committed  # a handler's events: wake the relay
        self._draining = False
        self._running = False
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._progress_every = spec.ack_wait / 3

    @property
    def running(self) -> bool:
        """True while the run loop fetches and handles messages (not before binding, not after drain)."""
        return self._running

    @property
    def draining(self) -> bool:
        return self._draining

    # -- handling one event ---------------------------------------------------------------------

    async def process(self, event: CloudEvent) -> bool:
        """Handle one event exactly once; False when it had already been handled (or was stale)."""
        return await self.apply(event) == "handled"

    async def apply(self, event: CloudEvent, *, redelivered: bool = False) -> Outcome:
        """Run the event through the inbox (and the version guard) and the handler, in one transaction."""
        if self.spec.handler_timeout is None:
            return await self._apply(event, redelivered)
        try:
            async with asyncio.timeout(self.spec.handler_timeout) as deadline:
                return await self._apply(event, redelivered)
        except TimeoutError:
            if deadline.expired():
                raise HandlerTimedOut(
                    f"{HANDLER_TIMED_OUT}: not done after {self.spec.handler_timeout:g}s"
                ) from None
            raise

    async def _apply(self, event: CloudEvent, redelivered: bool) -> Outcome:
        key = self.spec.inbox
        async with unit_of_work(
            self.sessions,
            source=self.source,
            traceparent=event.traceparent,
            on_events_committed=self.on_events_committed,
        ) as uow:
            claimed = await uow.session.execute(
                insert(InboxEntry)
                .values(consumer=key, event_id=event.id)
                .on_conflict_do_nothing()
                .returning(InboxEntry.event_id)
            )
            if claimed.first() is None:
                return "duplicate"
            if redelivered:  # an earlier failure's count goes with the success (or comes back with it)
                await uow.session.execute(
                    delete(InboxFailure).where(
                        InboxFailure.consumer == key, InboxFailure.event_id == event.id
                    )
                )
            if self.spec.mirrors and event.aggregateversion is not None and event.subject is not None:
                # The row lock taken here also serialises two replicas handling the same aggregate.
                upsert = insert(AggregateVersion).values(
                    consumer=key, aggregate_id=event.subject, version=event.aggregateversion
                )
                newer = await uow.session.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[AggregateVersion.consumer, AggregateVersion.aggregate_id],
                        set_={"version": upsert.excluded.version, "updated_at": func.now()},
                        where=AggregateVersion.version < upsert.excluded.version,
                    ).returning(AggregateVersion.version)
                )
                if newer.first() is None:
                    return "stale"  # the inbox row commits: a redelivery is a plain duplicate
            await self.spec.handler(uow, event)
        return "handled"

    def _wanted(self, event: CloudEvent) -> bool:
        return self.spec.wants is None or bool(self.spec.wants(event))

    async def handle_message(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        try:
            event = CloudEvent.model_validate_json(msg.data)
        except ValidationError as error:
            await self._dead_letter(msg, None, f"not a CloudEvent: {error}", deliveries)
            return
        if len(event.id) > EVENT_ID_LENGTH:  # no inbox row (nor failure count) could hold it
            await self._dead_letter(
                msg, None, f"{INVALID_ID}: an event id has at most {EVENT_ID_LENGTH} characters", deliveries
            )
            return
        forged = forgery(msg.subject, event)
        if forged is not None:
            await self._dead_letter(msg, event.id, forged, deliveries)
            return
        try:
            wanted = self._wanted(event)
        except Exception as error:  # a pure predicate fails the same way every time
            await self._dead_letter(
                msg, event.id, f"{FILTER_FAILED}: {type(error).__name__}: {error}", deliveries
            )
            return
        if not wanted:
            self._count("skipped")
            await msg.ack()
            return
        try:
            outcome = await self.apply(event, redelivered=deliveries > 1)
        except Exception as error:
            await self._failed(msg, event, error, deliveries)
            return
        self._count(outcome)
        await msg.ack()

    async def _failed(self, msg: Msg, event: CloudEvent, error: Exception, deliveries: int) -> None:
        if isinstance(error, DomainError):
            await self._dead_letter(msg, event.id, f"{error.code}: {error}", deliveries)
            return
        reason = scrub_error(error)  # stored and logged: no row, parameter or phone number in it
        if is_transient(error):
            await self._retry_transient(msg, event.id, deliveries, reason)
            return
        failures = await self._count_failure(event.id, reason)
        if failures is None:  # the database cannot even take the count: that is transient too
            await self._retry_transient(msg, event.id, deliveries, reason)
            return
        if failures >= self.spec.max_deliver:
            await self._dead_letter(msg, event.id, reason, deliveries, failures=failures)
            return
        delay = self.spec.backoff[min(failures - 1, len(self.spec.backoff) - 1)]
        log.warning(
            "consumer %s: event %s failed (failure %d of %d), retry in %.1fs: %s",
            self.spec.name,
            event.id,
            failures,
            self.spec.max_deliver,
            delay,
            reason,
        )
        self._count("retried")
        await msg.nak(delay=delay)

    async def _retry_transient(self, msg: Msg, event_id: str, deliveries: int, reason: str) -> None:
        backoff = self.spec.transient_backoff
        # Jittered, so replicas that all hit the same failover do not come back in step.
        delay = backoff[min(deliveries - 1, len(backoff) - 1)] * random.uniform(0.75, 1.25)
        log.warning(
            "consumer %s: event %s hit a transient error (delivery %d), retry in %.1fs: %s",
            self.spec.name,
            event_id,
            deliveries,
            delay,
            reason,
        )
        self._count("retried_transient")
        await msg.nak(delay=delay)

    async def _count_failure(self, event_id: str, reason: str) -> int | None:
        try:
            async with self.sessions() as session, session.begin():
                upsert = insert(InboxFailure).values(
                    consumer=self.spec.inbox, event_id=event_id, failures=1, last_error=scrub(reason)[:4000]
                )
                failures = await session.scalar(
                    upsert.on_conflict_do_update(
                        index_elements=[InboxFailure.consumer, InboxFailure.event_id],
                        set_={
                            "failures": InboxFailure.failures + 1,
                            "last_error": upsert.excluded.last_error,
                            "updated_at": func.now(),
                        },
                    ).returning(InboxFailure.failures)
                )
        except Exception as store_error:
            log.error("consumer %s: could not count a failure: %s", self.spec.name, store_error)
            return None
        return int(failures or 1)

    async def _dead_letter(
        self, msg: Msg, event_id: str | None, error: str, deliveries: int, *, failures: int | None = None
    ) -> None:
        error = scrub(error)  # before it is truncated, so no number is cut in half and missed
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
                if event_id is not None:
                    await session.execute(
                        delete(InboxFailure).where(
                            InboxFailure.consumer == self.spec.inbox, InboxFailure.event_id == event_id
                        )
                    )
        except Exception as store_error:
            # Not stored, so not acknowledged: the event comes back and we try again.
            log.error("consumer %s: could not store dead letter: %s", self.spec.name, store_error)
            await msg.nak(delay=self.spec.backoff[-1])
            return
        log.error(
            "consumer %s: event %s dead-lettered after %d deliveries (%s counted failures): %s",
            self.spec.name,
            event_id,
            deliveries,
            failures if failures is not None else "no",
            error,
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(consumer=self.spec.name).inc()
        self._count("dead_lettered")
        await msg.ack()

    def _count(self, outcome: str, amount: int = 1) -> None:
        if self.metrics is not None and amount:
            self.metrics.consumer_handled.labels(consumer=self.spec.name, outcome=outcome).inc(amount)

    # -- the durable consumer and the run loop ----------------------------------------------------

    async def resume_point(self) -> datetime | None:
        """Where a new durable for this inbox key starts: None for the whole stream."""
        async with self.sessions() as session:
            newest = await session.scalar(
                select(func.max(InboxEntry.handled_at)).where(InboxEntry.consumer == self.spec.inbox)
            )
        return None if newest is None else newest - RESUME_OVERLAP

    async def ensure_durable(self, jetstream: JetStreamContext) -> ConsumerInfo:
        """Bind the durable consumer as it is, or create it where this inbox key left off."""
        stream = stream_name(self.spec.domain)
        info: ConsumerInfo
        try:
            info = await jetstream.consumer_info(stream, self.spec.name)
        except NotFoundError:
            pass
        else:
            if info.config.filter_subject != self.spec.subject:
                log.warning(
                    "consumer %s exists with filter %r, not %r; bound as it is (rename the consumer, "
                    "keeping its inbox key, to change it)",
                    self.spec.name,
                    info.config.filter_subject,
                    self.spec.subject,
                )
            return info
        start = await self.resume_point()
        config = ConsumerConfig(
            durable_name=self.spec.name,
            filter_subject=self.spec.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_wait=self.spec.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, self.spec.batch_size * 4),
        )
        try:
            info = await jetstream.add_consumer(stream, config)
        except APIError:
            # Another replica created it a moment ago (its start may differ by a handled event).
            info = await jetstream.consumer_info(stream, self.spec.name)
            return info
        log.info(
            "consumer %s created on %s from %s",
            self.spec.name,
            stream,
            "the start of the stream" if start is None else start.isoformat(),
        )
        return info

    async def run(self, jetstream: JetStreamContext) -> None:
        """Fetch and handle until drained (or cancelled).

        After ``drain`` this coroutine does not return but waits to be cancelled: a supervisor that
        restarts a returning ``run`` would otherwise spin.
        """
        if not self._draining:
            info = await self.ensure_durable(jetstream)
            ack_wait = info.config.ack_wait or self.spec.ack_wait  # the server's, if it was made earlier
            self._progress_every = max(0.05, min(ack_wait, self.spec.ack_wait) / 3)
            stream = stream_name(self.spec.domain)
            subscription = await jetstream.pull_subscribe_bind(durable=self.spec.name, stream=stream)
            self._stopped.clear()
            self._running = True
            try:
                await self._loop(subscription)
            finally:
                self._running = False
                self._stopped.set()
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        await asyncio.get_running_loop().create_future()

    async def _loop(self, subscription: JetStreamContext.PullSubscription) -> None:
        last_info = 0.0
        loop = asyncio.get_running_loop()
        while not self._draining:
            try:
                messages = await subscription.fetch(batch=self.spec.batch_size, timeout=self.fetch_wait)
            except TimeoutError:
                messages = []
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if cancelling():
                    raise asyncio.CancelledError from error  # nats-py's stand-in for our cancellation
                log.warning("consumer %s: fetch failed: %s", self.spec.name, error)
                await asyncio.sleep(1.0)
                continue
            if messages:
                await self._handle_batch(messages)
            if self.metrics is not None and loop.time() - last_info > 5.0:
                last_info = loop.time()
                with contextlib.suppress(Exception):
                    info = await subscription.consumer_info()
                    self.metrics.consumer_pending.labels(consumer=self.spec.name).set(info.num_pending or 0)

    async def _handle_batch(self, messages: list[Msg]) -> None:
        """Handle a fetched batch in stream order, keeping every message in it alive meanwhile."""
        in_hand = deque(messages)
        keep_alive = asyncio.create_task(self._keep_alive(in_hand), name=f"progress-{self.spec.name}")
        try:
            while in_hand:
                if self._draining:
                    break
                await self.handle_message(in_hand[0])
                in_hand.popleft()
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
            # Drained (or cancelled mid-handler, its transaction rolled back): what we still hold goes
            # back at once, for this or another replica, instead of waiting out ack_wait.
            await self._give_back(in_hand)

    async def _keep_alive(self, in_hand: deque[Msg]) -> None:
        while True:
            await asyncio.sleep(self._progress_every)
            for msg in list(in_hand):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _give_back(self, in_hand: deque[Msg]) -> None:
        given = 0
        while in_hand:
            msg = in_hand.popleft()
            with contextlib.suppress(Exception):
                await msg.nak()
                given += 1
        if given:
            log.info("consumer %s: gave back %d unhandled message(s)", self.spec.name, given)
        self._count("given_back", given)

    async def drain(self, timeout: float) -> None:
        """Stop fetching, finish the message in hand, give back the rest; wait for the loop to stop.

        Returns when the run loop has stopped or ``timeout`` has passed, whichever comes first.
        """
        self._draining = True
        if not self._running:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._stopped.wait()

    # -- dead letters -----------------------------------------------------------------------------

    async def replay(self, dead_letter_id: uuid.UUID) -> bool:
        """Hand a dead letter to the handler again; True if it was handled now."""
        async with self.sessions() as session:
            letter = await session.get(DeadLetter, dead_letter_id)
        # A renamed consumer keeps its inbox key, which is the old name by default: the letters
        # kept under that name are still its own.
        if letter is None or letter.consumer not in (self.spec.name, self.spec.inbox):
            raise DeadLetterNotFound(f"no dead letter {dead_letter_id} for consumer {self.spec.name}")
        try:
            event = CloudEvent.model_validate_json(letter.payload)
        except ValidationError as error:
            raise ReplayFailed(scrub(f"not a CloudEvent: {error}")) from None
        forged = forgery(letter.subject, event)
        if forged is not None:
            raise ReplayFailed(forged)
        try:
            outcome: Outcome = await self.apply(event) if self._wanted(event) else "skipped"
        except Exception as error:
            raise ReplayFailed(f"the handler failed again: {scrub_error(error)}") from None
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(DeadLetter).where(DeadLetter.id == dead_letter_id).values(replayed_at=func.now())
            )
        return outcome == "handled"


async def find_dead_letter(
    sessions: async_sessionmaker[AsyncSession], dead_letter_id: uuid.UUID
) -> DeadLetter:
    async with sessions() as session:
        letter = await session.scalar(select(DeadLetter).where(DeadLetter.id == dead_letter_id))
    if letter is None:
        raise DeadLetterNotFound(f"no dead letter {dead_letter_id}")
    return letter
