"""The JT/T 808 listener over real TCP: registration and authentication, positions acknowledged only
once stored, bad frames answered or dropped, and one terminal's garbage never ending another's link."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from citygrid.jt808.codec import (
    AUTHENTICATE,
    BEIJING,
    FAILURE,
    HEARTBEAT,
    LOGOUT,
    MESSAGE_ERROR,
    OK,
    PLATFORM_REPLY,
    POSITION,
    POSITION_BATCH,
    REGISTER,
    REGISTER_REPLY,
    REGISTERED,
    TERMINAL_UNKNOWN,
    UNSUPPORTED,
    Authentication,
    Frame,
    FrameReader,
    GeneralReply,
    Header,
    Position,
    PositionBatch,
    Registration,
    RegistrationReply,
    decode_frame,
    encode_frame,
)
from citygrid.jt808.server import Jt808Listener, LoginLimiter


@dataclass
class Recorder:
    """A service's side of the listener, keeping what it was given; ``failing`` phones' positions
    are not stored (the database is down, say)."""

    known: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    stored: list[tuple[str, Position, bool]] = field(default_factory=list)

    async def register(self, header: Header, registration: Registration) -> tuple[int, str | None]:
        if header.phone not in self.known:
            return TERMINAL_UNKNOWN, None
        return REGISTERED, f"code-{header.phone[-4:]}"

    async def authenticate(self, header: Header, authentication: Authentication) -> bool:
        return header.phone in self.known and authentication.auth_code == f"code-{header.phone[-4:]}"

    async def positions(self, header: Header, positions: Sequence[Position], *, blind_area: bool) -> None:
        if header.phone in self.failing:
            raise ConnectionError("the database is unreachable")
        self.stored.extend((header.phone, position, blind_area) for position in positions)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Jt808Listener, Recorder]]:
    recorder = Recorder()
    server = Jt808Listener(recorder, host="127.0.0.1", port=0, idle_timeout=2.0, auth_timeout=1.5)
    await server.start()
    try:
        yield server, recorder
    finally:
        await server.close()


class Terminal:
    """A terminal's end of the connection: sends messages, reads the platform's replies."""

    def __init__(self, phone: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.phone = phone
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader()
        self.pending: list[bytes] = []
        self.serial = 0

    @classmethod
    async def connect(cls, server: Jt808Listener, phone: str) -> Terminal:
        reader, writer = await asyncio.open_connection(*server.address)
        return cls(phone, reader, writer)

    def header(self, msg_id: int, **kw: object) -> Header:
        self.serial += 1
        return Header(msg_id=msg_id, phone=self.phone, serial=self.serial, **kw)  # type: ignore[arg-type]

    async def send(self, msg_id: int, body: bytes = b"", **kw: object) -> Header:
        header = self.header(msg_id, **kw)
        self.writer.write(encode_frame(header, body))
        await self.writer.drain()
        return header

    async def reply(self, timeout: float = 5.0) -> Frame:
        while not self.pending:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(4096)
            if not data:
                raise ConnectionError("the platform closed the connection")
            self.pending.extend(self.frames.feed(data))
        return decode_frame(self.pending.pop(0))

    async def general_reply(self) -> GeneralReply:
        frame = await self.reply()
        assert frame.header.msg_id == PLATFORM_REPLY
        return GeneralReply.decode(frame.body, frame.header)

    async def log_in(self) -> None:
        registration = Registration(44, 100, "CGRID", "MT-1", "T000001", 2, "粤A12345")
        await self.send(REGISTER, registration.encode(2013))
        frame = await self.reply()
        assert frame.header.msg_id == REGISTER_REPLY
        answer = RegistrationReply.decode(frame.body, frame.header)
        assert answer.result == REGISTERED
        assert answer.auth_code
        await self.send(AUTHENTICATE, Authentication(answer.auth_code).encode(2013))
        assert (await self.general_reply()).result == OK

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def position(second: int = 0, speed_raw: int = 320) -> Position:
    return Position(
        alarm=0,
        status=0b11 | (0b11 << 8),  # ACC on, fixed, loaded full
        lat_raw=23_120_000,
        lon_raw=113_320_000 + second,
        altitude=12,
        speed_raw=speed_raw,
        direction=90,
        time=datetime(2026, 12, 2, 21, 0, second, tzinfo=BEIJING),
        extras={0x01: (1234).to_bytes(4, "big")},
    )


async def test_a_registered_terminal_authenticates_and_its_position_is_acknowledged_once_stored(listener):
    server, recorder = listener
    recorder.known.add("013800000001")
    terminal = await Terminal.connect(server, "013800000001")
    await terminal.log_in()
    sent = await terminal.send(POSITION, position().encode(2013))
    answer = await terminal.general_reply()
    assert (answer.ack_serial, answer.ack_msg_id, answer.result) == (sent.serial, POSITION, OK)
    assert [(phone, p.lon_raw, blind) for phone, p, blind in recorder.stored] == [
        ("013800000001", 113_320_000, False)
    ]
    assert recorder.stored[0][1].load == "full"
    await terminal.close()


async def test_a_batch_gets_one_reply_and_a_blind_area_batch_is_marked_so(listener):
    server, recorder = listener
    recorder.known.add("013800000002")
    terminal = await Terminal.connect(server, "013800000002")
    await terminal.log_in()
    batch = PositionBatch(kind=1, positions=tuple(position(s) for s in range(5)))
    sent = await terminal.send(POSITION_BATCH, batch.encode(2013))
    answer = await terminal.general_reply()
    assert (answer.ack_serial, answer.ack_msg_id, answer.result) == (sent.serial, POSITION_BATCH, OK)
    assert len(recorder.stored) == 5
    assert all(blind for _, _, blind in recorder.stored)
    # Nothing else was answered: the next reply is the heartbeat's.
    beat = await terminal.send(HEARTBEAT)
    assert (await terminal.general_reply()).ack_serial == beat.serial
    await terminal.close()


async def test_an_unknown_terminal_is_refused_registration_and_its_positions_are_not_taken(listener):
    server, recorder = listener
    terminal = await Terminal.connect(server, "013899999999")
    await terminal.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, "粤B00000").encode(2013))
    frame = await terminal.reply()
    assert RegistrationReply.decode(frame.body, frame.header).result == TERMINAL_UNKNOWN
    await terminal.send(AUTHENTICATE, Authentication("guess").encode(2013))
    assert (await terminal.general_reply()).result == FAILURE
    await terminal.send(POSITION, position().encode(2013))
    assert (await terminal.general_reply()).result == FAILURE
    assert recorder.stored == []
    await terminal.close()


async def test_a_position_that_was_not_stored_is_answered_failure_and_the_connection_carries_on(listener):
    server, recorder = listener
    recorder.known.add("013800000003")
    terminal = await Terminal.connect(server, "013800000003")
    await terminal.log_in()
    recorder.failing.add("013800000003")
    await terminal.send(POSITION, position().encode(2013))
    assert (await terminal.general_reply()).result == FAILURE
    recorder.failing.clear()
    await terminal.send(POSITION, position().encode(2013))  # the terminal sends it again
    assert (await terminal.general_reply()).result == OK
    assert len(recorder.stored) == 1
    await terminal.close()


async def test_after_authentication_a_frame_for_another_phone_is_refused(listener):
    server, recorder = listener
    recorder.known |= {"013800000004", "013800000005"}
    terminal = await Terminal.connect(server, "013800000004")
    await terminal.log_in()
    terminal.phone = "013800000005"  # speaking for a truck this connection did not authenticate as
    await terminal.send(POSITION, position().encode(2013))
    assert (await terminal.general_reply()).result == FAILURE
    assert recorder.stored == []
    await terminal.close()


async def test_a_bad_checksum_is_answered_message_error_and_an_unknown_id_unsupported(listener):
    server, recorder = listener
    recorder.known.add("013800000006")
    terminal = await Terminal.connect(server, "013800000006")
    await terminal.log_in()
    frame = bytearray(encode_frame(terminal.header(HEARTBEAT), b""))
    frame[-2] ^= 0x01  # the check byte (0x7e/0x7d-free here: a heartbeat of this phone)
    terminal.writer.write(bytes(frame))
    answer = await terminal.general_reply()
    assert (answer.ack_msg_id, answer.result) == (HEARTBEAT, MESSAGE_ERROR)
    await terminal.send(0x0900, b"\x01abc")  # data uplink pass-through: not decoded here
    answer = await terminal.general_reply()
    assert (answer.ack_msg_id, answer.result) == (0x0900, UNSUPPORTED)
    await terminal.send(POSITION, position().encode(2013))
    assert (await terminal.general_reply()).result == OK
    await terminal.close()


async def test_a_2019_terminal_is_answered_with_a_2019_header(listener):
    server, recorder = listener
    phone = "00000000013800000007"
    recorder.known.add(phone)
    terminal = await Terminal.connect(server, phone)
    registration = Registration(44, 100, "CGRID", "MT-2019", "T2019", 2, "粤A2019X")
    await terminal.send(REGISTER, registration.encode(2019), version=2019)
    frame = await terminal.reply()
    assert frame.header.version == 2019
    assert frame.header.phone == phone
    answer = RegistrationReply.decode(frame.body, frame.header)
    await terminal.send(
        AUTHENTICATE,
        Authentication(answer.auth_code or "", "860000000000001", "1.0").encode(2019),
        version=2019,
    )
    assert (await terminal.general_reply()).result == OK
    await terminal.send(POSITION, position().encode(2019), version=2019)
    reply = await terminal.reply()
    assert reply.header.version == 2019
    assert GeneralReply.decode(reply.body, reply.header).result == OK
    await terminal.close()


async def test_a_position_batch_in_two_sub_packages_is_stored_once_whole(listener):
    server, recorder = listener
    recorder.known.add("013800000008")
    terminal = await Terminal.connect(server, "013800000008")
    await terminal.log_in()
    body = PositionBatch(kind=0, positions=tuple(position(s) for s in range(40))).encode(2013)
    half = len(body) // 2
    await terminal.send(POSITION_BATCH, body[:half], subpackage=(2, 1))
    assert (await terminal.general_reply()).result == OK  # the first part, to send the next
    last = await terminal.send(POSITION_BATCH, body[half:], subpackage=(2, 2))
    answer = await terminal.general_reply()
    # The last part is answered once the whole batch is stored, with its result.
    assert (answer.ack_serial, answer.ack_msg_id, answer.result) == (last.serial, POSITION_BATCH, OK)
    assert len(recorder.stored) == 40
    await terminal.close()


async def test_the_last_sub_package_is_answered_failure_when_the_whole_was_not_stored(listener):
    server, recorder = listener
    recorder.known.add("013800000011")
    terminal = await Terminal.connect(server, "013800000011")
    await terminal.log_in()
    recorder.failing.add("013800000011")
    body = PositionBatch(kind=1, positions=tuple(position(s) for s in range(40))).encode(2013)
    half = len(body) // 2
    await terminal.send(POSITION_BATCH, body[:half], subpackage=(2, 1))
    assert (await terminal.general_reply()).result == OK
    last = await terminal.send(POSITION_BATCH, body[half:], subpackage=(2, 2))
    answer = await terminal.general_reply()
    assert (answer.ack_serial, answer.result) == (last.serial, FAILURE)  # it keeps the data
    assert recorder.stored == []
    await terminal.close()


async def test_a_strangers_sub_packages_are_refused_not_held(listener):
    server, _ = listener
    terminal = await Terminal.connect(server, "013800000012")
    await terminal.send(POSITION_BATCH, b"\x00" * 500, subpackage=(100, 1))
    assert (await terminal.general_reply()).result == FAILURE
    await terminal.close()


async def test_logout_is_answered_then_the_connection_ends(listener):
    server, recorder = listener
    recorder.known.add("013800000009")
    terminal = await Terminal.connect(server, "013800000009")
    await terminal.log_in()
    await terminal.send(LOGOUT)
    assert (await terminal.general_reply()).result == OK
    assert await terminal.reader.read(1) == b""
    await terminal.close()


async def test_a_silent_connection_is_closed_after_the_idle_timeout(listener):
    server, recorder = listener
    recorder.known.add("013800000010")
    terminal = await Terminal.connect(server, "013800000010")
    await terminal.log_in()
    async with asyncio.timeout(10):
        assert await terminal.reader.read(1) == b""
    assert server.counters.connected == 0


async def test_a_connection_that_never_authenticates_is_closed(listener):
    server, _ = listener
    terminal = await Terminal.connect(server, "013800000013")
    for _ in range(3):  # heartbeats keep it from being idle, not from having to authenticate
        await terminal.send(HEARTBEAT)
        assert (await terminal.general_reply()).result == OK
    async with asyncio.timeout(10):
        assert await terminal.reader.read(1) == b""
    assert server.counters.connected == 0


async def test_many_terminals_keep_reporting_while_one_sends_garbage(listener):
    server, recorder = listener
    phones = [f"0139{n:08d}" for n in range(200)]
    recorder.known |= set(phones)
    terminals = await asyncio.gather(*(Terminal.connect(server, phone) for phone in phones))
    await asyncio.gather(*(terminal.log_in() for terminal in terminals))
    hostile = await Terminal.connect(server, "013700000000")

    async def garbage() -> None:
        # The listener may close it before it is done (it never authenticates): that is its business.
        with contextlib.suppress(ConnectionError):
            await _garbage()

    async def _garbage() -> None:
        for _ in range(50):
            hostile.writer.write(os.urandom(512) + b"\x7e" + os.urandom(64) + b"\x7e")
            hostile.writer.write(b"\x7e" + b"\x55" * 20_000)  # an endless frame, never buffered whole
            await hostile.writer.drain()
            await asyncio.sleep(0)

    async def report(terminal: Terminal) -> list[int]:
        results = []
        for second in range(10):
            await terminal.send(POSITION, position(second).encode(2013))
            results.append((await terminal.general_reply()).result)
        return results

    results, _ = await asyncio.gather(asyncio.gather(*(report(t) for t in terminals)), garbage())
    assert all(result == [OK] * 10 for result in results)
    assert len(recorder.stored) == 200 * 10
    assert server.counters.frames.get("bad", 0) > 0
    await asyncio.gather(*(terminal.close() for terminal in terminals), hostile.close())


async def test_frames_sent_without_waiting_are_answered_in_order_each_after_the_one_before(listener):
    server, recorder = listener
    recorder.known.add("013800000014")
    terminal = await Terminal.connect(server, "013800000014")
    await terminal.log_in()
    frames = [
        encode_frame(terminal.header(POSITION), position(1).encode(2013)),
        encode_frame(terminal.header(HEARTBEAT), b""),
        encode_frame(terminal.header(POSITION), position(2).encode(2013)),
    ]
    terminal.writer.write(b"".join(frames))  # one chunk: the second waits for the first's store
    answers = [await terminal.general_reply() for _ in frames]
    assert [answer.ack_msg_id for answer in answers] == [POSITION, HEARTBEAT, POSITION]
    assert [answer.result for answer in answers] == [OK, OK, OK]
    assert len(recorder.stored) == 2
    await terminal.close()


async def test_a_handler_may_answer_positions_with_a_batch_writers_future():
    class FutureHandler(Recorder):
        def positions(  # type: ignore[override]
            self, header: Header, positions: Sequence[Position], *, blind_area: bool
        ) -> asyncio.Future[None]:
            stored = asyncio.get_running_loop().create_future()
            # Committed a moment later, with the rest of its batch.
            asyncio.get_running_loop().call_later(0.05, stored.set_result, None)
            self.stored.extend((header.phone, position, blind_area) for position in positions)
            return stored

    handler = FutureHandler(known={"013800000015"})
    server = Jt808Listener(handler, host="127.0.0.1", port=0)
    await server.start()
    try:
        terminal = await Terminal.connect(server, "013800000015")
        await terminal.log_in()
        await terminal.send(POSITION, position().encode(2013))
        assert (await terminal.general_reply()).result == OK
        assert server.counters.positions == 1
        await terminal.close()
    finally:
        await server.close()


async def test_an_address_that_fails_to_log_in_too_often_is_answered_no_more_and_closed():
    recorder = Recorder(known={"013800000020"})
    server = Jt808Listener(
        recorder, host="127.0.0.1", port=0, logins=LoginLimiter(max_failures=3, window=60.0)
    )
    await server.start()
    try:
        guesser = await Terminal.connect(server, "013800000020")
        for guess in range(3):
            await guesser.send(AUTHENTICATE, Authentication(f"guess-{guess}").encode(2013))
            assert (await guesser.general_reply()).result == FAILURE
        # The fourth attempt, even with the right code, gets no answer: the connection is closed.
        await guesser.send(AUTHENTICATE, Authentication("code-0020").encode(2013))
        async with asyncio.timeout(5):
            assert await guesser.reader.read(1) == b""
        assert server.counters.frames["limited"] == 1
        # From the same address a registration is held back too, on a new connection.
        again = await Terminal.connect(server, "013800000020")
        await again.send(REGISTER, Registration(44, 100, "X", "Y", "Z", 2, "粤A12345").encode(2013))
        async with asyncio.timeout(5):
            assert await again.reader.read(1) == b""
    finally:
        await server.close()


def test_the_login_limiter_counts_failures_in_its_window_and_forgets_them_after():
    limiter = LoginLimiter(max_failures=2, window=10.0, max_addresses=3)
    limiter.failed("10.0.0.1", now=0.0)
    assert not limiter.blocked("10.0.0.1", now=1.0)
    limiter.failed("10.0.0.1", now=2.0)
    assert limiter.blocked("10.0.0.1", now=3.0)
    assert not limiter.blocked("10.0.0.2", now=3.0)  # another address is not held back
    assert not limiter.blocked("10.0.0.1", now=10.5)  # the first failure left the window
    assert not limiter.blocked("10.0.0.1", now=12.5)
    # Bounded: a flood of addresses never holds more than max_addresses.
    for n in range(50):
        limiter.failed(f"10.1.0.{n}", now=20.0 + n)
    assert len(limiter._failures) <= 3


async def test_disconnect_closes_the_connections_of_one_phone_only(listener):
    server, recorder = listener
    recorder.known |= {"013800000021", "013800000022"}
    released = await Terminal.connect(server, "013800000021")
    await released.log_in()
    kept = await Terminal.connect(server, "013800000022")
    await kept.log_in()
    assert server.authenticated_phones() == {"013800000021", "013800000022"}
    assert server.disconnect("013800000021") == 1
    async with asyncio.timeout(5):
        assert await released.reader.read(1) == b""
    await kept.send(HEARTBEAT)
    assert (await kept.general_reply()).result == OK
    assert server.authenticated_phones() == {"013800000022"}
    await kept.close()
