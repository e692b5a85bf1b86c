"""Live feeds for frontends: one ordered JetStream consumer per replica, fanned out as server-sent events.

A ``LiveFeed`` follows one stream (and subject filter) from the moment the service connects to NATS;
every connected client has a bounded queue of the events its filter selects. A client too slow to
empty its queue is dropped (its stream ends and the browser reconnects), so it never holds up the
others. The SSE ``id`` is the JetStream stream sequence: a client that reconnects with
``Last-Event-ID: n`` gets the events after ``n`` read back from the stream, then the live ones,
each exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
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


class ReplayIncomplete(Exception):
    """The stream stopped delivering a client's missed events (NATS went away meanwhile)."""


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


Matches = Callable[[LiveEvent], bool]
# The SSE ``data`` of an event for clients (JSON text): what they may see of it, nothing more.
Render = Callable[[LiveEvent], str]


def sse_frame(data: str, *, event_id: int | None = None, event: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def gap_frame(detail: str, *, requested_after: int, resumed_after: int) -> str:
    """A named ``gap`` event: the client missed events the stream no longer holds, or sent an unknown id."""
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
    # Resumes missing more than this many sequences are streamed, not fetched one by one.
    replay_direct_limit: int = 64
    position: int | None = None
    listeners: set[Listener] = field(default_factory=set)
    _jetstream: JetStreamContext | None = None

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
        # nats-py restarts an ordered consumer after the last stream sequence it delivered, which is
        # 0 until a first message arrives: a NATS restart on a quiet stream would replay all of it.
        state = getattr(subscription, "_jsi", None)
        if state is not None and getattr(state, "_sseq", 0) < start - 1:
            state._sseq = start - 1
        if self.position is None:
            self.position = start - 1
        log.info("live feed %s follows %s from sequence %d", self.name, self.subject, start)
        try:
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
        for listener in list(self.listeners):
            if not listener.offer(item):
                self.metrics.live_dropped.labels(feed=self.name).inc()
                log.info("live feed %s dropped a client that fell behind", self.name)

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
            return sse_frame(render(item), event_id=item.sequence)
        except Exception:
            # An event the renderer does not know (a newer type, say) must not end every stream.
            log.exception("live feed %s cannot render event %d; skipped", self.name, item.sequence)
            return None

    async def _replay(self, listener: Listener, render: Render) -> AsyncIterator[str]:
        """Events after the client's ``Last-Event-ID`` up to where the feed stood when it connected."""
        jetstream = self._jetstream
        assert jetstream is not None
        assert listener.resume_after is not None
        after = listener.resume_after
        info = await jetstream.stream_info(self.stream)
        first, last = info.state.first_seq or 0, info.state.last_seq or 0
        if after > last:
            listener.last_sent = listener.replay_to
            yield gap_frame(
                f"event {after} is not one this feed has sent; following from now on",
                requested_after=after,
                resumed_after=listener.replay_to,
            )
            return
        if after + 1 < first:
            yield gap_frame(
                f"events after {after} are no longer kept; resuming from the oldest kept, {first}",
                requested_after=after,
                resumed_after=first - 1,
            )
        async for item in self._missed(jetstream, after + 1, listener.replay_to):
            if listener.wants(item) and item.sequence > listener.last_sent:
                listener.last_sent = item.sequence
                frame = self._frame(item, render)
                if frame is not None:
                    yield frame
        listener.last_sent = max(listener.last_sent, listener.replay_to)

    async def _missed(self, jetstream: JetStreamContext, start: int, up_to: int) -> AsyncIterator[LiveEvent]:
        """The feed's events with sequences in ``start … up_to``, in order.

        A few are fetched one by one (a reconnect after a deploy misses a handful); a long absence is
        streamed through a short-lived ordered consumer instead of one request per event.
        """
        sequence = start
        while sequence <= up_to:
            try:
                message = await jetstream.get_msg(self.stream, seq=sequence, subject=self.subject, next=True)
            except NotFoundError:
                return
            if message.seq is None or message.seq > up_to:
                return
            if up_to - message.seq >= self.replay_direct_limit:
                async for streamed in self._stream_range(jetstream, message.seq, up_to):
                    yield streamed
                return
            sequence = message.seq + 1
            item = self._parse(message.seq, message.subject or "", message.data)
            if item is not None:
                yield item

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
