"""The JT/T 808 TCP listener: one asyncio connection per terminal, framing and replies as the standard
says, and what the terminals report handed to a service's ``TerminalHandler``.

Per connection: a terminal registers (0x0100 → 0x8100 with an auth code) or authenticates (0x0102 →
0x8001); until it has authenticated, only those two, heartbeats and logout are answered OK, and a
position is answered ``FAILURE`` so the terminal keeps it (its blind-area store) and sends it again.
A position (0x0200) or a batch (0x0704, one reply for the batch) is acknowledged only once the
handler returns, that is once the service has stored it: a terminal whose report was not stored
gets ``FAILURE`` and sends it again, so nothing acknowledged is lost. A frame whose checksum or
length is wrong is answered ``MESSAGE_ERROR`` when its header can be read, else dropped; a message
id we do not decode is answered ``UNSUPPORTED``. No frame of one terminal can end another's
connection: each connection reads, decodes and answers on its own task, and a handler's error is
this terminal's ``FAILURE``. A connection silent for ``idle_timeout`` is closed (terminals send a
heartbeat every minute or so), as is one not authenticated within ``auth_timeout`` or not reading
its replies; a frame longer than ``max_frame`` is discarded without being buffered, and only an
authenticated terminal's sub-packages are held (a bounded amount), so a hostile peer holds little
memory. The last part of a sub-packaged message is answered with the message's own result, once
it is handled.

The listener runs on asyncio's protocol callbacks, not streams: each chunk received is split into
frames at once, the frames of a chunk are answered with one write, and a connection's timeouts are
timers rescheduled only when they fire, so a report costs no read wake-up, no timeout object and
no drain of its own. A connection handles one message at a time, in order: frames that arrive
while a message waits for its handler are held (reading pauses past a bound) and handled after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from citygrid.jt808.codec import (
    FAILURE,
    MESSAGE_ERROR,
    OK,
    REGISTERED,
    UNSUPPORTED,
    Authentication,
    Frame,
    FrameError,
    FrameReader,
    Header,
    Heartbeat,
    Logout,
    Position,
    PositionBatch,
    Registration,
    SubpackageAssembler,
    UnsupportedMessage,
    decode_frame,
    decode_message,
    general_reply,
    peek_header,
    registration_reply,
)

log = logging.getLogger("citygrid.jt808")

READ_CHUNK = 4096
# Frames received beyond the one being handled, at most this many bytes of them before reading
# pauses: a terminal that sends without waiting for its answers is slowed, not buffered.
HELD_BYTES = READ_CHUNK * 4


class TerminalHandler(Protocol):
    """What a service does with its terminals' messages. Every method may raise (the database is
    down): a registration or authentication then gets no answer, so the terminal asks again after its
    own timeout; positions get ``FAILURE``, so it sends them again. The connection carries on."""

    async def register(self, header: Header, registration: Registration) -> tuple[int, str | None]:
        """The 0x8100 result and, when it is 0 (registered), the auth code the terminal will send."""
        ...

    async def authenticate(self, header: Header, authentication: Authentication) -> bool: ...

    def positions(
        self, header: Header, positions: Sequence[Position], *, blind_area: bool
    ) -> Awaitable[None]:
        """Store the positions; the awaitable completes only once they are stored (the reply
        acknowledges them). An ``async def`` does; so does a plain method returning the future of a
        batch writer, which spares a task per report."""
        ...


@dataclass
class LoginLimiter:
    """Failed registrations and authentications per address: past ``max_failures`` within ``window``
    seconds, an address's further attempts get no answer and their connection is closed until the
    window has moved on. Only failures count, so the many terminals behind one carrier NAT address
    are not held back by their own logins, and a peer guessing phone numbers or codes is slowed to
    ``max_failures`` guesses a window on each replica. Bounded: at most ``max_addresses`` are kept."""

    max_failures: int = 20
    window: float = 600.0
    max_addresses: int = 100_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, address: str, now: float) -> bool:
        failures = self._failures.get(address)
        if failures is None:
            return False
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return False
        return len(failures) >= self.max_failures

    def failed(self, address: str, now: float) -> None:
        failures = self._failures.get(address)
        if failures is None:
            if len(self._failures) >= self.max_addresses:
                self._forget_stale(now)
            failures = self._failures[address] = deque(maxlen=self.max_failures)
        failures.append(now)

    def _forget_stale(self, now: float) -> None:
        stale = [address for address, failures in self._failures.items() if failures[-1] <= now - self.window]
        for address in stale or list(self._failures)[: self.max_addresses // 2]:
            del self._failures[address]


@dataclass
class ListenerCounters:
    """What the listener did, for a service's metrics (read at scrape time)."""

    connections: int = 0
    connected: int = 0
    frames: dict[str, int] = field(default_factory=dict)  # by outcome: ok, rejected, bad, unsupported
    positions: int = 0
    on_frame: Callable[[str], None] | None = None  # a service's counter of frames by outcome

    def count(self, outcome: str) -> None:
        self.frames[outcome] = self.frames.get(outcome, 0) + 1
        if self.on_frame is not None:
            self.on_frame(outcome)


class _Session(asyncio.Protocol):
    """One terminal's connection: frames in as they arrive, one message handled at a time."""

    def __init__(self, listener: Jt808Listener) -> None:
        self.listener = listener
        self.handler = listener.handler
        self.counters = listener.counters
        self.peer = "?"
        self.address = "?"
        self.authenticated_phone: str | None = None
        self.serial = 0
        self.frames = FrameReader(max_frame=listener.max_frame)
        # A terminal's blind-area upload in sub-packages; bounded per connection.
        self.assembler = SubpackageAssembler(max_messages=4, max_bytes=256 * 1024)
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._counted = False
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._busy: asyncio.Future[Any] | None = None
        self._out: list[bytes] = []
        self._reading_paused = False
        self._writing_paused = False
        self._last = 0.0
        self._timers: list[asyncio.TimerHandle] = []
        self._write_timer: asyncio.TimerHandle | None = None

    # --- asyncio's callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, asyncio's or uvloop's (which does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        listener = self.listener
        if len(listener._sessions) >= listener.max_connections:
            self.closing = True
            self.transport.close()
            return
        listener._sessions.add(self)
        self._counted = True
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.address = str(peer[0]) if peer else "?"
        self.counters.connections += 1
        self.counters.connected += 1
        loop = listener._loop()
        self._last = loop.time()
        # One timer each, moved on only when it fires: nothing to reschedule per frame.
        self._timers = [
            loop.call_at(self._last + listener.idle_timeout, self._idle_check),
            loop.call_at(self._last + listener.auth_timeout, self._auth_check),
        ]

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._last = self.listener._loop().time()
        for raw in self.frames.feed(data):
            self._queue.append(raw)
            self._queued_bytes += len(raw)
        self._pump()

    def pause_writing(self) -> None:
        # A peer that does not read its replies: read no more of it, and close it if it stays so.
        self._writing_paused = True
        self._pause_reading()
        self._write_timer = self.listener._loop().call_later(self.listener.idle_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._queued_bytes <= HELD_BYTES:
            self._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for timer in self._timers:
            timer.cancel()
        if self._write_timer is not None:
            self._write_timer.cancel()
        self._queue.clear()
        if self._counted:
            self._counted = False
            self.counters.connected -= 1
            self.listener._sessions.discard(self)
            self.listener._session_ended()

    # --- Timers ----------------------------------------------------------------------------------

    def _idle_check(self) -> None:
        loop = self.listener._loop()
        due = self._last + self.listener.idle_timeout
        if self._busy is None and loop.time() >= due:
            log.info("terminal %s silent for %.0f s: closed", self.peer, self.listener.idle_timeout)
            self.close()
            return
        # A message being handled is not silence: look again once it could be.
        self._timers[0] = loop.call_at(max(due, loop.time() + 0.1), self._idle_check)

    def _auth_check(self) -> None:
        if self.authenticated_phone is not None or self.closing:
            return
        if self._busy is not None:  # an authentication may be on its way: look again shortly
            self._timers[1] = self.listener._loop().call_later(0.1, self._auth_check)
            return
        log.info("terminal %s not authenticated in time: closed", self.peer)
        self.close()

    def _write_stalled(self) -> None:
        log.info("terminal %s does not read its replies: closed", self.peer)
        self.abort()

    # --- Reading and answering -------------------------------------------------------------------

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._writing_paused and self.transport is not None:
            self._reading_paused = False
            if not self.closing:
                self.transport.resume_reading()

    def _pump(self) -> None:
        """Handle the frames held, in order, until one waits for its handler; then write the
        answers of them all at once."""
        try:
            while self._queue and self._busy is None and not self.closing:
                raw = self._queue.popleft()
                self._queued_bytes -= len(raw)
                self._frame(raw)
        except Exception:
            log.exception("connection of terminal %s ended by an error", self.peer)
            self._flush()
            self.abort()
            return
        self._flush()
        if self._queued_bytes > HELD_BYTES:
            self._pause_reading()
        elif self._reading_paused:
            self._resume_reading()

    def _flush(self) -> None:
        if self._out:
            out = self._out
            self._out = []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _reply(self, frame: bytes) -> None:
        self._out.append(frame)

    def _next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _wait(self, awaitable: Awaitable[Any], then: Callable[[asyncio.Future[Any]], None]) -> None:
        """Hold this connection's next frames until ``awaitable`` completes, then call ``then``."""
        future = asyncio.ensure_future(awaitable)
        self._busy = future

        def done(future: asyncio.Future[Any]) -> None:
            self._busy = None
            if future.cancelled() or self.closing:
                if not future.cancelled():
                    future.exception()  # read, so that nothing is reported as never retrieved
                return
            try:
                then(future)
            except Exception:
                log.exception("connection of terminal %s ended by an error", self.peer)
                self.abort()
                return
            self._pump()

        future.add_done_callback(done)

    def _frame(self, raw: bytes) -> None:
        try:
            frame = decode_frame(raw)
        except FrameError as error:
            self.counters.count("bad")
            header = peek_header(raw)
            log.info("terminal %s sent a bad frame (%s)", self.peer, error.code)
            if header is not None:
                self._reply(general_reply(header, self._next_serial(), MESSAGE_ERROR))
            return
        if frame.header.subpackage is None:
            self._message(frame, frame.header)
            return
        # Only an authenticated terminal's parts are held: a stranger's would be memory for nothing.
        if self.authenticated_phone != frame.header.phone:
            self.counters.count("rejected")
            self._reply(general_reply(frame.header, self._next_serial(), FAILURE))
            return
        now = time.monotonic()
        self.assembler.expire(now)
        try:
            whole = self.assembler.add(frame, now)
        except FrameError as error:
            self.counters.count("bad")
            log.info("terminal %s sent a bad sub-package (%s)", self.peer, error.code)
            self._reply(general_reply(frame.header, self._next_serial(), MESSAGE_ERROR))
            return
        if whole is None:
            # A part is acknowledged as it comes (the terminal sends the next one on the reply) ...
            self._reply(general_reply(frame.header, self._next_serial(), OK))
            return
        # ... but the last one only once the whole message is handled: its answer is the message's.
        self._message(whole, frame.header)

    def _message(self, frame: Frame, reply_to: Header) -> None:
        """Handle one whole message; ``reply_to`` is the frame the answer acknowledges (the last
        part of a sub-packaged one)."""
        header = frame.header
        try:
            message = decode_message(frame)
        except UnsupportedMessage:
            self.counters.count("unsupported")
            self._reply(general_reply(reply_to, self._next_serial(), UNSUPPORTED))
            return
        except FrameError as error:
            self.counters.count("bad")
            log.info("terminal %s sent a bad %#06x body (%s)", self.peer, header.msg_id, error.code)
            self._reply(general_reply(reply_to, self._next_serial(), MESSAGE_ERROR))
            return
        if isinstance(message, Position | PositionBatch):
            self._positions(header, message, reply_to)
        elif isinstance(message, Registration):
            self._register(header, message)
        elif isinstance(message, Authentication):
            self._authenticate(header, message)
        elif isinstance(message, Heartbeat):
            self.counters.count("ok")
            self._reply(general_reply(header, self._next_serial(), OK))
        elif isinstance(message, Logout):
            self.counters.count("ok")
            self._reply(general_reply(header, self._next_serial(), OK))
            self._flush()
            self.close()  # once the answer is written
        else:  # a terminal's own general reply (0x0001) to something we sent: nothing to answer
            self.counters.count("ok")

    def _limited(self, header: Header) -> bool:
        """Whether this address has failed to log in too often: then no answer (the terminal asks
        again after its own timeout, as when the database is down) and the connection is closed."""
        if not self.listener.logins.blocked(self.address, self.listener._loop().time()):
            return False
        self.counters.count("limited")
        log.info("terminal %s: too many failed logins from its address; closed", header.phone)
        self.close()
        return True

    def _login_failed(self) -> None:
        self.listener.logins.failed(self.address, self.listener._loop().time())

    def _register(self, header: Header, registration: Registration) -> None:
        if self._limited(header):
            return

        def answered(future: asyncio.Future[Any]) -> None:
            error = future.exception()
            if error is not None:
                # No answer: the terminal asks again after its own timeout. Any 0x8100 result would
                # be an answer it may take as final.
                log.warning("registration of terminal %s not answered (%s)", header.phone, error)
                return
            result, auth_code = future.result()
            self.counters.count("ok" if result == REGISTERED else "rejected")
            if result != REGISTERED:
                self._login_failed()
            self._reply(
                registration_reply(
                    header, self._next_serial(), result, auth_code if result == REGISTERED else None
                )
            )

        self._wait(self.handler.register(header, registration), answered)

    def _authenticate(self, header: Header, authentication: Authentication) -> None:
        if self._limited(header):
            return

        def answered(future: asyncio.Future[Any]) -> None:
            error = future.exception()
            if error is not None:
                log.warning("authentication of terminal %s not answered (%s)", header.phone, error)
                return  # as for a registration: it asks again
            accepted = bool(future.result())
            if accepted:
                self.authenticated_phone = header.phone
            else:
                self._login_failed()
            self.counters.count("ok" if accepted else "rejected")
            self._reply(general_reply(header, self._next_serial(), OK if accepted else FAILURE))

        self._wait(self.handler.authenticate(header, authentication), answered)

    def _positions(self, header: Header, message: Position | PositionBatch, reply_to: Header) -> None:
        # A terminal speaks for its own phone number only: another number on this connection is not it.
        if self.authenticated_phone != header.phone:
            self.counters.count("rejected")
            self._reply(general_reply(reply_to, self._next_serial(), FAILURE))
            return
        positions = message.positions if isinstance(message, PositionBatch) else (message,)
        blind_area = isinstance(message, PositionBatch) and message.kind == 1

        def stored(future: asyncio.Future[Any]) -> None:
            self._stored(header, reply_to, len(positions), future.exception())

        try:
            pending = self.handler.positions(header, positions, blind_area=blind_area)
        except Exception as error:
            self._stored(header, reply_to, len(positions), error)
            return
        self._wait(pending, stored)

    def _stored(self, header: Header, reply_to: Header, count: int, error: BaseException | None) -> None:
        if error is not None:
            log.warning(
                "positions of terminal %s not stored (%s): refused, it will send them again",
                header.phone,
                error,
            )
            self.counters.count("rejected")
            self._reply(general_reply(reply_to, self._next_serial(), FAILURE))
            return
        self.counters.count("ok")
        self.counters.positions += count
        self._reply(general_reply(reply_to, self._next_serial(), OK))

    def cancel(self) -> None:
        """The listener closes: what this connection waits for is abandoned, the connection closed."""
        if self._busy is not None:
            self._busy.cancel()
        self.close()


class Jt808Listener:
    """An asyncio TCP server speaking JT/T 808 to terminals on behalf of one ``TerminalHandler``."""

    def __init__(
        self,
        handler: TerminalHandler,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        idle_timeout: float = 300.0,
        auth_timeout: float = 60.0,
        max_frame: int = 4096,
        max_connections: int = 20_000,
        on_frame: Callable[[str], None] | None = None,
        logins: LoginLimiter | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.counters = ListenerCounters(on_frame=on_frame)
        self.logins = logins or LoginLimiter()
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._all_ended: asyncio.Event | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address it listens on (the port the system chose, when asked for port 0)."""
        assert self._server is not None, "the listener is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._event_loop is not None
        return self._event_loop

    def _session_ended(self) -> None:
        if not self._sessions and self._all_ended is not None:
            self._all_ended.set()

    def authenticated_phones(self) -> set[str]:
        """The phone numbers (as their headers carry them) authenticated on this listener's connections."""
        return {s.authenticated_phone for s in self._sessions if s.authenticated_phone is not None}

    def disconnect(self, phone: str) -> int:
        """Close the connections authenticated as ``phone`` (a terminal the register released or gave
        to another vehicle); how many. The terminal must log in again, and is then judged afresh."""
        closing = [session for session in self._sessions if session.authenticated_phone == phone]
        for session in closing:
            session.cancel()
        return len(closing)

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._server = await self._event_loop.create_server(lambda: _Session(self), self.host, self.port)

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close the listener and every connection."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sessions:
            self._all_ended = asyncio.Event()
            for session in list(self._sessions):
                session.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._all_ended.wait()
            self._all_ended = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
