"""Live feeds for frontends: one ordered JetStream consumer per replica, fanned out as server-sent events.

A ``LiveFeed`` follows one stream (and subject filter) from the moment the service connects to NATS;
every connected client has a bounded queue of the events its filter selects. A client too slow to
empty its queue is dropped (its stream ends and the browser reconnects), so it never holds up the
others. The SSE ``id`` is the JetStream stream sequence: a client that reconnects with
``Last-Event-ID: n`` gets the events after ``n`` read back from the stream, then the live ones, in
order and each event id once. A resume is bounded (so many sequences, so many seconds): beyond the
bound, or when the stream no longer holds what the client missed, the client gets a ``gap`` event
(reload over REST) and follows live from the feed's position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from citygrid.errors import DomainError
from citygrid.events import CloudEvent, stream_name
from citygrid.metrics import KitMetrics
from citygrid.settings import ServiceSettings

log = logging.getLogger("citygrid.live")

EVENT_STREAM = "text/event-stream"
# Headers that keep proxies from buffering or caching an event stream.
EVENT_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_EVENT_ID_DIGITS = 20
REPLAY_WAIT_SECONDS = 10.0
# Event ids the feed remembers, to send an event stored twice (a relay re-publishing after the
# stream's duplicate window) to each client once.
RECENT_EVENT_IDS = 4096
# Why a resume was answered with a ``gap`` (the ``reason`` label of ``citygrid_live_gaps_total``).
GAP_REASONS = ("too_many_events", "too_old", "expired", "unknown_id")


class ReplayIncomplete(Exception):
    """The stream stopped delivering a client's missed events (NATS went away meanwhile)."""


class NatsClientIncompatible(RuntimeError):
    """The installed nats-py no longer keeps an ordered consumer's resume point where this module sets it."""


def resume_ordered_consumer_after(subscription: Any, sequence: int) -> None:
    """Make nats-py recreate this ordered consumer after ``sequence`` when NATS loses it.

    nats-py recreates an ordered consumer (after a NATS restart, say) from the last stream sequence
    it delivered, kept in the private ``_jsi._sseq`` of the connection-level subscription that the
    ``PushSubscription`` wraps (``_sub``), and 0 until a first message arrives: on a quiet stream a
    restart would replay all of it (up to 14 days) into every replica at once. No public API sets
    it, so a nats-py that keeps it elsewhere is refused here, loudly, instead of left unpatched.
    """
    state = getattr(getattr(subscription, "_sub", None), "_jsi", None)
    resume = getattr(state, "_sseq", None)
    if (
        state is None
        or not isinstance(resume, int)
        or isinstance(resume, bool)
        or not callable(getattr(state, "reset_ordered_consumer", None))
    ):
        raise NatsClientIncompatible(
            f"nats-py {version('nats-py')} no longer keeps an ordered consumer's resume sequence in "
            "subscription._sub._jsi._sseq; citygrid.live must be adapted to it before it is deployed"
        )
    if resume < sequence:
        state._sseq = sequence


@dataclass(frozen=True)
class ResumeCounters:
    """Resume and dedup counters of the live feeds, one set per metrics registry."""

    replays: Counter
    gaps: Counter
    duplicates: Counter


_RESUME_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, ResumeCounters] = weakref.WeakKeyDictionary()


def resume_counters(registry: CollectorRegistry) -> ResumeCounters:
    """Created on first use, so every feed of a process shares them (a registry refuses a name twice)."""
    counters = _RESUME_COUNTERS.get(registry)
    if counters is None:
        counters = ResumeCounters(
            replays=Counter(
                "citygrid_live_replays",
                "Live-feed resumes served by reading the missed events back from the stream.",
                ["feed"],
                registry=registry,
            ),
            gaps=Counter(
                "citygrid_live_gaps",
                "Live-feed resumes answered with a gap event (the client reloads over REST).",
                ["feed", "reason"],
                registry=registry,
            ),
            duplicates=Counter(
                "citygrid_live_duplicate_events",
                "Stream messages a live feed skipped: their event id was stored before.",
                ["feed"],
                registry=registry,
            ),
        )
        _RESUME_COUNTERS[registry] = counters
    return counters


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LiveUnavailable(DomainError):
    code = "live.unavailable"
    status = 503
    title = "Live feed unavailable"


class TooManyStreams(DomainError):
    code = "live.too_many_streams"
    status = 503
    title = "Too many live streams"


class InvalidLastEventId(DomainError):
    code = "live.invalid_last_event_id"
    status = 400
    title = "Invalid Last-Event-ID"


class NotAnEventStreamClient(DomainError):
    code = "http.not_acceptable"
    status = 406
    title = "Not acceptable"


def require_event_stream(accept: str | None) -> None:
    """A live route answers only clients that ask for ``text/event-stream`` (as ``EventSource`` does).

    Saying so also tells the gateway to forward the request as a stream, without a read timeout.
    """
    if EVENT_STREAM not in (accept or "").lower():
        raise NotAnEventStreamClient(f"this is an event stream: send 'Accept: {EVENT_STREAM}'")


def parse_last_event_id(value: str | None) -> int | None:
    """The stream sequence a client saw last, from the ``Last-Event-ID`` it sent back."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_EVENT_ID_DIGITS):
        raise InvalidLastEventId("Last-Event-ID must be the id of an event this feed sent (a number)")
    return int(text)


@dataclass(frozen=True)
class LiveEvent:
    """One event of the feed: its stream sequence (the SSE id), NATS subject and envelope."""

    sequence: int
    subject: str
    event: CloudEvent
    # Its frame per renderer: a replica's thousand clients of one route share one rendering.
    _frames: dict[Render, str] = field(default_factory=dict, compare=False, repr=False)

    def frame(self, render: Render) -> str:
        """The event's SSE frame as ``render`` shows it, rendered once however many clients it goes to."""
        known = self._frames.get(render)
        if known is None:
            known = self._frames[render] = sse_frame(render(self), event_id=self.sequence)
        return known


Matches = Callable[[LiveEvent], bool]
# The SSE ``data`` of an event for clients (JSON text): what they may see of it, nothing more.
Render = Callable[["LiveEvent"], str]


def sse_frame(data: str, *, event_id: int | None = None, event: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def gap_frame(detail: str, *, requested_after: int, resumed_after: int) -> str:
    """A named ``gap`` event: the client cannot be given what it missed; it reloads over REST.

    ``requested_after`` is the ``Last-Event-ID`` it sent, ``resumed_after`` the sequence after which
    the events that follow come; no ``id`` line, so ``EventSource`` keeps its last event id.
    """
    data = json.dumps(
        {"detail": detail, "requested_after": requested_after, "resumed_after": resumed_after},
        separators=(",", ":"),
    )
    return sse_frame(data, event="gap")


@dataclass(eq=False)
class Listener:
    """One connected client: its filter, its bounded queue and the last sequence it was sent."""

    matches: Matches
    queue: asyncio.Queue[LiveEvent | None]
    last_sent: int
    replay_to: int
    resume_after: int | None
    dropped: bool = False

    def wants(self, item: LiveEvent) -> bool:
        """The client's filter; one that fails on an odd event skips it rather than stop the feed."""
        try:
            return self.matches(item)
        except Exception:
            log.exception("live filter failed on event %d; skipped", item.sequence)
            return False

    def offer(self, item: LiveEvent) -> bool:
        """Queue the event if the client wants it; False when the client fell behind and is dropped."""
        if self.dropped or not self.wants(item):
            return True
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return False


@dataclass(eq=False)
class LiveFeed:
    """Follows ``subject`` on the stream of ``domain`` for as long as the process runs."""

    name: str
    domain: str
    subject: str
    metrics: KitMetrics
    max_streams: int = 1000
    queue_size: int = 256
    heartbeat_seconds: float = 15.0
    retry_ms: int = 2000
    # A resume replays at most this many stream sequences behind the feed's position, and no event
    # older than this many seconds; beyond, the client gets a ``gap`` and follows live.
    max_replay_events: int = 1000
    max_replay_seconds: float = 900.0
    # Resumes missing more than this many sequences are streamed, not fetched one by one.
    replay_direct_limit: int = 64
    recent_ids: int = RECENT_EVENT_IDS
    # The replica's clock, against which a stored message's timestamp is aged.
    clock: Callable[[], datetime] = _utc_now
    position: int | None = None
    listeners: set[Listener] = field(default_factory=set)
    _jetstream: JetStreamContext | None = None
    # Event id -> the first stream sequence the feed saw it at, oldest first, at most ``recent_ids``.
    _recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _counters: ResumeCounters = field(init=False)

    def __post_init__(self) -> None:
        self._counters = resume_counters(self.metrics.registry)
        self._counters.replays.labels(feed=self.name)
        self._counters.duplicates.labels(feed=self.name)
        for reason in GAP_REASONS:
            self._counters.gaps.labels(feed=self.name, reason=reason)

    @classmethod
    def from_settings(
        cls, name: str, domain: str, *, settings: ServiceSettings, metrics: KitMetrics, subject: str = ""
    ) -> LiveFeed:
        return cls(
            name=name,
            domain=domain,
            subject=subject or f"{domain}.>",
            metrics=metrics,
            max_streams=settings.live_max_streams,
            queue_size=settings.live_client_queue,
            heartbeat_seconds=settings.live_heartbeat_seconds,
            max_replay_events=settings.live_max_replay_events,
            max_replay_seconds=settings.live_max_replay_seconds,
        )

    @property
    def stream(self) -> str:
        return stream_name(self.domain)

    @property
    def ready(self) -> bool:
        return self._jetstream is not None and self.position is not None

    # -- following the stream ------------------------------------------------------------------

    async def run(self, jetstream: JetStreamContext) -> None:
        """Follow the stream until cancelled; after an error, pick up where the feed left off."""
        self._jetstream = jetstream
        while True:
            try:
                await self._follow(jetstream)
            except asyncio.CancelledError:
                raise
            except NatsClientIncompatible as error:
                # Not retried: every attempt would fail the same way. The feed stays unavailable (503).
                self._jetstream = None
                log.error("live feed %s cannot run: %s", self.name, error)
                raise
            except Exception as error:
                log.warning("live feed %s stopped (%s); restarting", self.name, error)
            await asyncio.sleep(1.0)

    async def _follow(self, jetstream: JetStreamContext) -> None:
        if self.position is None:
            info = await jetstream.stream_info(self.stream)
            start = (info.state.last_seq or 0) + 1
        else:
            start = self.position + 1
        subscription = await jetstream.subscribe(
            self.subject,
            stream=self.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
        )
        try:
            resume_ordered_consumer_after(subscription, start - 1)
            if self.position is None:
                self.position = start - 1
            log.info("live feed %s follows %s from sequence %d", self.name, self.subject, start)
            async for message in subscription.messages:
                self._dispatch(message)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _dispatch(self, message: Msg) -> None:
        sequence = message.metadata.sequence.stream
        if self.position is not None and sequence <= self.position:
            return  # a restarted consumer re-delivering what clients already have
        self.position = sequence
        item = self._parse(sequence, message.subject, message.data)
        if item is None:
            return
        first = self._recent.get(item.event.id)
        if first is not None:
            self._skip_duplicate(item, first)
            return
        self._recent[item.event.id] = sequence
        if len(self._recent) > self.recent_ids:
            self._recent.popitem(last=False)
        for listener in list(self.listeners):
            if not listener.offer(item):
                self.metrics.live_dropped.labels(feed=self.name).inc()
                log.info("live feed %s dropped a client that fell behind", self.name)

    def _skip_duplicate(self, item: LiveEvent, first: int) -> None:
        self._counters.duplicates.labels(feed=self.name).inc()
        log.info(
            "live feed %s skips event %s at sequence %d: stored before at %d",
            self.name,
            item.event.id,
            item.sequence,
            first,
        )

    def _parse(self, sequence: int, subject: str, data: bytes | None) -> LiveEvent | None:
        try:
            return LiveEvent(sequence, subject, CloudEvent.model_validate_json(data or b""))
        except ValidationError:
            log.warning("live feed %s skips message %d: not a CloudEvent", self.name, sequence)
            return None

    # -- clients -------------------------------------------------------------------------------

    def open(self, matches: Matches, *, last_event_id: int | None = None) -> Listener:
        """Register a client; from this moment every event past ``replay_to`` reaches its queue."""
        if not self.ready or self.position is None:
            raise LiveUnavailable("the live feed is not connected to the event stream yet; retry shortly")
        if len(self.listeners) >= self.max_streams:
            raise TooManyStreams(
                f"this replica already serves {self.max_streams} live streams; retry shortly",
                headers={"Retry-After": "5"},
            )
        listener = Listener(
            matches=matches,
            queue=asyncio.Queue(self.queue_size),
            last_sent=self.position if last_event_id is None else last_event_id,
            replay_to=self.position,
            resume_after=last_event_id,
        )
        self.listeners.add(listener)
        self.metrics.live_streams.labels(feed=self.name).set(len(self.listeners))
        return listener

    def close(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        self.metrics.live_streams.labels(feed=self.name).set(len(self.listeners))

    async def frames(self, listener: Listener, render: Render) -> AsyncIterator[str]:
        """The client's SSE stream: what it missed, then live events and heartbeats until it leaves."""
        try:
            yield f"retry: {self.retry_ms}\n\n"
            if listener.resume_after is not None:
                try:
                    async for missed in self._replay(listener, render):
                        yield missed
                except (ReplayIncomplete, nats.errors.Error) as error:
                    # Ending the stream is honest: the client reconnects from its last id and retries.
                    log.warning(
                        "live feed %s could not replay a client's missed events: %s", self.name, error
                    )
                    return
            while True:
                try:
                    item = await asyncio.wait_for(listener.queue.get(), timeout=self.heartbeat_seconds)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if item is None:
                    return  # fell behind: the client reconnects with Last-Event-ID and catches up
                if item.sequence <= listener.last_sent:
                    continue
                listener.last_sent = item.sequence
                live = self._frame(item, render)
                if live is not None:
                    yield live
        finally:
            self.close(listener)

    def _frame(self, item: LiveEvent, render: Render) -> str | None:
        try:
            return item.frame(render)
        except Exception:
            # An event the renderer does not know (a newer type, say) must not end every stream.
            log.exception("live feed %s cannot render event %d; skipped", self.name, item.sequence)
            return None

    def _gap(self, listener: Listener, reason: str, detail: str) -> str:
        """Give up on the client's missed events: it reloads, and follows live after ``replay_to``."""
        assert listener.resume_after is not None
        listener.last_sent = listener.replay_to
        self._counters.gaps.labels(feed=self.name, reason=reason).inc()
        log.info(
            "live feed %s answers a resume after %d with a gap (%s); live after %d",
            self.name,
            listener.resume_after,
            reason,
            listener.replay_to,
        )
        return gap_frame(detail, requested_after=listener.resume_after, resumed_after=listener.replay_to)

    async def _replay(self, listener: Listener, render: Render) -> AsyncIterator[str]:
        """Events after the client's ``Last-Event-ID`` up to where the feed stood when it connected.

        Bounded: a client further behind than ``max_replay_events`` sequences is told so at no cost
        to the stream; one whose first missed event is older than ``max_replay_seconds``, or whose
        missed events the stream no longer holds, after two small requests. Either way it gets one
        ``gap`` and follows live. Each event id is sent once (see ``_recent``).
        """
        jetstream = self._jetstream
        if jetstream is None:
            raise ReplayIncomplete("the feed no longer follows the stream")
        assert listener.resume_after is not None
        after, up_to = listener.resume_after, listener.replay_to
        if after >= up_to:
            if after > up_to:
                info = await jetstream.stream_info(self.stream)
                if after > (info.state.last_seq or 0):
                    yield self._gap(
                        listener, "unknown_id", f"event {after} is not one this feed has sent; reload"
                    )
            # Otherwise another replica was ahead of this one: the client's high-water mark drops
            # the events it already has as they arrive here.
            return
        if up_to - after > self.max_replay_events:
            yield self._gap(
                listener,
                "too_many_events",
                f"{up_to - after} events were stored since event {after}, more than the "
                f"{self.max_replay_events} a resume replays; reload",
            )
            return
        info = await jetstream.stream_info(self.stream)
        first_kept = info.state.first_seq or 0
        if after + 1 < first_kept:
            yield self._gap(
                listener,
                "expired",
                f"events after {after} are no longer kept (the oldest is {first_kept}); reload",
            )
            return
        candidate = await self._next_stored(jetstream, after + 1, up_to)
        if candidate is None:
            listener.last_sent = up_to  # nothing of this feed was stored meanwhile
            return
        stored_at = candidate.time
        if stored_at is not None:
            if stored_at.tzinfo is None:
                stored_at = stored_at.replace(tzinfo=UTC)
            age = (self.clock() - stored_at).total_seconds()
            if age > self.max_replay_seconds:
                yield self._gap(
                    listener,
                    "too_old",
                    f"the events after {after} began {age:.0f}s ago, longer than the "
                    f"{self.max_replay_seconds:.0f}s a resume replays; reload",
                )
                return
        self._counters.replays.labels(feed=self.name).inc()
        # Event id -> sequence of what this replay has read: a repeat within it is skipped too.
        replayed: dict[str, int] = {}
        async for item in self._missed(jetstream, candidate, up_to):
            event_id = item.event.id
            first = replayed.get(event_id, self._recent.get(event_id))
            if first is not None and first < item.sequence:
                self._skip_duplicate(item, first)
                continue
            replayed[event_id] = item.sequence
            if listener.wants(item) and item.sequence > listener.last_sent:
                listener.last_sent = item.sequence
                frame = self._frame(item, render)
                if frame is not None:
                    yield frame
        listener.last_sent = max(listener.last_sent, up_to)

    async def _next_stored(self, jetstream: JetStreamContext, start: int, up_to: int) -> RawStreamMsg | None:
        """The feed's first stored message at ``start`` or later, if there is one up to ``up_to``."""
        try:
            message = await jetstream.get_msg(self.stream, seq=start, subject=self.subject, next=True)
        except NotFoundError:
            return None
        if message.seq is None or message.seq > up_to:
            return None
        return message

    async def _missed(
        self, jetstream: JetStreamContext, message: RawStreamMsg, up_to: int
    ) -> AsyncIterator[LiveEvent]:
        """The feed's events from the stored ``message`` up to ``up_to``, in order.

        A few are fetched one by one (a reconnect after a deploy misses a handful); a longer absence
        is streamed through a short-lived ordered consumer instead of one request per event.
        """
        current: RawStreamMsg | None = message
        while current is not None and current.seq is not None:
            if up_to - current.seq >= self.replay_direct_limit:
                async for streamed in self._stream_range(jetstream, current.seq, up_to):
                    yield streamed
                return
            item = self._parse(current.seq, current.subject or "", current.data)
            if item is not None:
                yield item
            current = await self._next_stored(jetstream, current.seq + 1, up_to)

    async def _stream_range(
        self, jetstream: JetStreamContext, start: int, up_to: int
    ) -> AsyncIterator[LiveEvent]:
        """``start`` holds a message of the feed, so the consumer has at least that one to deliver."""
        subscription = await jetstream.subscribe(
            self.subject,
            stream=self.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
        )
        try:
            # A NATS restart before its first message must not make it read the stream from 1.
            resume_ordered_consumer_after(subscription, start - 1)
            while True:
                try:
                    message = await subscription.next_msg(timeout=REPLAY_WAIT_SECONDS)
                except nats.errors.TimeoutError as error:
                    raise ReplayIncomplete(f"no event after {start} within {REPLAY_WAIT_SECONDS}s") from error
                metadata = message.metadata
                sequence = metadata.sequence.stream
                if sequence > up_to:
                    return
                start = sequence
                item = self._parse(sequence, message.subject, message.data)
                if item is not None:
                    yield item
                if sequence == up_to or metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
