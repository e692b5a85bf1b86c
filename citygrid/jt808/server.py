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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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


class TerminalHandler(Protocol):
    """What a service does with its terminals' messages. Every method may raise (the database is
    down): a registration or authentication then gets no answer, so the terminal asks again after its
    own timeout; positions get ``FAILURE``, so it sends them again. The connection carries on."""

    async def register(self, header: Header, registration: Registration) -> tuple[int, str | None]:
        """The 0x8100 result and, when it is 0 (registered), the auth code the terminal will send."""
        ...

    async def authenticate(self, header: Header, authentication: Authentication) -> bool: ...

    async def positions(self, header: Header, positions: Sequence[Position], *, blind_area: bool) -> None:
        """Store the positions; return only once they are stored (the reply acknowledges them)."""
        ...


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


@dataclass
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    authenticated_phone: str | None = None
    serial: int = 0
    # A terminal's blind-area upload in sub-packages; bounded per connection.
    assembler: SubpackageAssembler = field(
        default_factory=lambda: SubpackageAssembler(max_messages=4, max_bytes=256 * 1024)
    )

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial


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
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.counters = ListenerCounters(on_frame=on_frame)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The address it listens on (the port the system chose, when asked for port 0)."""
        assert self._server is not None, "the listener is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=READ_CHUNK * 4)

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
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        connection = _Connection(peer=f"{peer[0]}:{peer[1]}" if peer else "?", writer=writer)
        self.counters.connections += 1
        self.counters.connected += 1
        try:
            await self._serve(connection, reader)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("connection of terminal %s ended by an error", connection.peer)
        finally:
            self.counters.connected -= 1
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        frames = FrameReader(max_frame=self.max_frame)
        # A connection that has not authenticated by then is closed: a slot held by a stranger.
        authenticate_by = time.monotonic() + self.auth_timeout
        while True:
            wait = self.idle_timeout
            if connection.authenticated_phone is None:
                wait = min(wait, authenticate_by - time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                log.info("terminal %s silent or not authenticated in time: closed", connection.peer)
                return
            if not data:
                return
            for raw in frames.feed(data):
                if not await self._frame(connection, raw):
                    return
            # A peer that does not read its replies is closed rather than held.
            async with asyncio.timeout(self.idle_timeout):
                await connection.writer.drain()

    async def _frame(self, connection: _Connection, raw: bytes) -> bool:
        """Answer one frame; False when the connection ends (logout)."""
        try:
            frame = decode_frame(raw)
        except FrameError as error:
            self.counters.count("bad")
            header = peek_header(raw)
            log.info("terminal %s sent a bad frame (%s)", connection.peer, error.code)
            if header is not None:
                self._reply(connection, general_reply(header, connection.next_serial(), MESSAGE_ERROR))
            return True
        if frame.header.subpackage is None:
            return await self._message(connection, frame, frame.header)
        # Only an authenticated terminal's parts are held: a stranger's would be memory for nothing.
        if connection.authenticated_phone != frame.header.phone:
            self.counters.count("rejected")
            self._reply(connection, general_reply(frame.header, connection.next_serial(), FAILURE))
            return True
        now = time.monotonic()
        connection.assembler.expire(now)
        try:
            whole = connection.assembler.add(frame, now)
        except FrameError as error:
            self.counters.count("bad")
            log.info("terminal %s sent a bad sub-package (%s)", connection.peer, error.code)
            self._reply(connection, general_reply(frame.header, connection.next_serial(), MESSAGE_ERROR))
            return True
        if whole is None:
            # A part is acknowledged as it comes (the terminal sends the next one on the reply) ...
            self._reply(connection, general_reply(frame.header, connection.next_serial(), OK))
            return True
        # ... but the last one only once the whole message is handled: its answer is the message's.
        return await self._message(connection, whole, frame.header)

    async def _message(self, connection: _Connection, frame: Frame, reply_to: Header) -> bool:
        """Handle one whole message; ``reply_to`` is the frame the answer acknowledges (the last
        part of a sub-packaged one)."""
        header = frame.header
        try:
            message = decode_message(frame)
        except UnsupportedMessage:
            self.counters.count("unsupported")
            self._reply(connection, general_reply(reply_to, connection.next_serial(), UNSUPPORTED))
            return True
        except FrameError as error:
            self.counters.count("bad")
            log.info("terminal %s sent a bad %#06x body (%s)", connection.peer, header.msg_id, error.code)
            self._reply(connection, general_reply(reply_to, connection.next_serial(), MESSAGE_ERROR))
            return True
        if isinstance(message, Registration):
            await self._register(connection, header, message)
        elif isinstance(message, Authentication):
            await self._authenticate(connection, header, message)
        elif isinstance(message, Heartbeat):
            self.counters.count("ok")
            self._reply(connection, general_reply(header, connection.next_serial(), OK))
        elif isinstance(message, Logout):
            self.counters.count("ok")
            self._reply(connection, general_reply(header, connection.next_serial(), OK))
            await connection.writer.drain()
            return False
        elif isinstance(message, Position | PositionBatch):
            await self._positions(connection, header, message, reply_to)
        else:  # a terminal's own general reply (0x0001) to something we sent: nothing to answer
            self.counters.count("ok")
        return True

    async def _register(self, connection: _Connection, header: Header, registration: Registration) -> None:
        try:
            result, auth_code = await self.handler.register(header, registration)
        except Exception as error:
            # No answer: the terminal asks again after its own timeout. Any 0x8100 result would be
            # an answer it may take as final.
            log.warning("registration of terminal %s not answered (%s)", header.phone, error)
            return
        self.counters.count("ok" if result == REGISTERED else "rejected")
        self._reply(
            connection,
            registration_reply(
                header, connection.next_serial(), result, auth_code if result == REGISTERED else None
            ),
        )

    async def _authenticate(
        self, connection: _Connection, header: Header, authentication: Authentication
    ) -> None:
        try:
            accepted = await self.handler.authenticate(header, authentication)
        except Exception as error:
            log.warning("authentication of terminal %s not answered (%s)", header.phone, error)
            return  # as for a registration: it asks again
        if accepted:
            connection.authenticated_phone = header.phone
        self.counters.count("ok" if accepted else "rejected")
        self._reply(connection, general_reply(header, connection.next_serial(), OK if accepted else FAILURE))

    async def _positions(
        self, connection: _Connection, header: Header, message: Position | PositionBatch, reply_to: Header
    ) -> None:
        # A terminal speaks for its own phone number only: another number on this connection is not it.
        if connection.authenticated_phone != header.phone:
            self.counters.count("rejected")
            self._reply(connection, general_reply(reply_to, connection.next_serial(), FAILURE))
            return
        positions = message.positions if isinstance(message, PositionBatch) else (message,)
        blind_area = isinstance(message, PositionBatch) and message.kind == 1
        try:
            await self.handler.positions(header, positions, blind_area=blind_area)
        except Exception as error:
            log.warning(
                "positions of terminal %s not stored (%s): refused, it will send them again",
                header.phone,
                error,
            )
            self.counters.count("rejected")
            self._reply(connection, general_reply(reply_to, connection.next_serial(), FAILURE))
            return
        self.counters.count("ok")
        self.counters.positions += len(positions)
        self._reply(connection, general_reply(reply_to, connection.next_serial(), OK))

    @staticmethod
    def _reply(connection: _Connection, frame: bytes) -> None:
        connection.writer.write(frame)
