"""JT/T 808 frames (2011/2013/2019) and the messages of a position platform, as pure bytes in and out.

Layout (every integer big-endian, strings GBK, phone number and time BCD)::

    7E | header | body | XOR | 7E        7E -> 7D 02 and 7D -> 7D 01 inside the flags

    header 2013: WORD id, WORD properties, BCD[6] phone, WORD serial [, WORD total, WORD index]
    header 2019: WORD id, WORD properties (bit 14 set), BYTE version, BCD[10] phone, WORD serial [...]
    properties:  bits 0-9 body length, 10-12 encryption, 13 sub-package, 14 the 2019 header

Nothing here does I/O: a TCP server feeds :class:`FrameReader`, decodes with :func:`decode_frame` and
:func:`decode_message`, and writes what :func:`general_reply` or :func:`reply_frame` return.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Literal

__all__ = [
    "ACC_ON",
    "ALARM_CONFIRMED",
    "AUTHENTICATE",
    "BEIJING",
    "EXTRA_ALARM_EVENT",
    "EXTRA_ANALOG",
    "EXTRA_AREA_ALARM",
    "EXTRA_CARRIAGE_TEMPERATURE",
    "EXTRA_EXT_SIGNAL",
    "EXTRA_FUEL",
    "EXTRA_IO_STATUS",
    "EXTRA_MILEAGE",
    "EXTRA_OVERSPEED",
    "EXTRA_ROUTE_TIME",
    "EXTRA_SATELLITES",
    "EXTRA_SIGNAL_STRENGTH",
    "EXTRA_TACHO_SPEED",
    "EXTRA_TYRE_PRESSURE",
    "FAILURE",
    "FIXED",
    "HEARTBEAT",
    "LOGOUT",
    "MAX_BODY",
    "MESSAGE_ERROR",
    "OK",
    "PLATFORM_REPLY",
    "POSITION",
    "POSITION_BATCH",
    "REGISTER",
    "REGISTERED",
    "REGISTER_REPLY",
    "SOUTH",
    "TERMINAL_REPLY",
    "TERMINAL_TAKEN",
    "TERMINAL_UNKNOWN",
    "UNSUPPORTED",
    "VEHICLE_TAKEN",
    "VEHICLE_UNKNOWN",
    "WEST",
    "Analog",
    "AreaAlarm",
    "Authentication",
    "Frame",
    "FrameError",
    "FrameErrorCode",
    "FrameReader",
    "GeneralReply",
    "Header",
    "Heartbeat",
    "Logout",
    "Message",
    "OverspeedAlarm",
    "Position",
    "PositionBatch",
    "Registration",
    "RegistrationReply",
    "RouteTimeAlarm",
    "SubpackageAssembler",
    "UnsupportedMessage",
    "checksum",
    "decode_extra",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "escape",
    "general_reply",
    "registration_reply",
    "reply_frame",
    "unescape",
]

# --- Message ids and result codes ------------------------------------------------------------------

TERMINAL_REPLY = 0x0001
HEARTBEAT = 0x0002
LOGOUT = 0x0003
REGISTER = 0x0100
AUTHENTICATE = 0x0102
POSITION = 0x0200
POSITION_BATCH = 0x0704
PLATFORM_REPLY = 0x8001
REGISTER_REPLY = 0x8100

# 0x8001 / 0x0001 results.
OK = 0
FAILURE = 1
MESSAGE_ERROR = 2
UNSUPPORTED = 3
ALARM_CONFIRMED = 4

# 0x8100 results.
REGISTERED = 0
VEHICLE_TAKEN = 1
VEHICLE_UNKNOWN = 2
TERMINAL_TAKEN = 3
TERMINAL_UNKNOWN = 4

# Status bits of a 0x0200 that change how its other fields read.
ACC_ON = 1 << 0
FIXED = 1 << 1
SOUTH = 1 << 2
WEST = 1 << 3

# Standard extra items (附加信息) of a 0x0200.
EXTRA_MILEAGE = 0x01
EXTRA_FUEL = 0x02
EXTRA_TACHO_SPEED = 0x03
EXTRA_ALARM_EVENT = 0x04
EXTRA_TYRE_PRESSURE = 0x05
EXTRA_CARRIAGE_TEMPERATURE = 0x06
EXTRA_OVERSPEED = 0x11
EXTRA_AREA_ALARM = 0x12
EXTRA_ROUTE_TIME = 0x13
EXTRA_EXT_SIGNAL = 0x25
EXTRA_IO_STATUS = 0x2A
EXTRA_ANALOG = 0x2B
EXTRA_SIGNAL_STRENGTH = 0x30
EXTRA_SATELLITES = 0x31

# The standard's clock: every BCD time on the wire is GMT+8.
BEIJING = timezone(timedelta(hours=8))

MAX_BODY = 0x03FF  # ten bits of body length: larger messages must be sent in sub-packages

_LENGTH_MASK = 0x03FF
_ENCRYPTION_SHIFT = 10
_SUBPACKAGE_BIT = 0x2000
_VERSION_2019_BIT = 0x4000

_HEADER_2013 = struct.Struct(">HH6sH")
_HEADER_2019 = struct.Struct(">HHB10sH")
_PACKAGE = struct.Struct(">HH")
_WORD = struct.Struct(">H")
_LOCATION = struct.Struct(">IIIIHHH6s")
_GENERAL_REPLY = struct.Struct(">HHB")
_REGISTRATION_REPLY = struct.Struct(">HB")
_REGISTRATION_HEAD = struct.Struct(">HH")
_BATCH_HEAD = struct.Struct(">HB")
_AREA_ALARM = struct.Struct(">BIB")
_OVERSPEED = struct.Struct(">BI")
_ROUTE_TIME = struct.Struct(">IHB")
_ANALOG = struct.Struct(">HH")

# The value of each byte read as two BCD digits, -1 where a nibble is above 9: one lookup per byte
# instead of string work on the hot path of every position report.
_BCD_VALUE = tuple(
    (b >> 4) * 10 + (b & 0x0F) if (b >> 4) < 10 and (b & 0x0F) < 10 else -1 for b in range(256)
)

# GB 18030 decodes every GBK sequence to the same character and also accepts the few that terminals
# send beyond GBK, so it reads; writing stays GBK, which is what the standard promises terminals.
_READ_TEXT = "gb18030"
_WRITE_TEXT = "gbk"
_PADDING = b"\x00 "

_LOAD = ("empty", "half", "reserved", "full")


# --- Errors ----------------------------------------------------------------------------------------

FrameErrorCode = Literal["escape", "checksum", "length", "bcd", "body", "unsupported"]


class FrameError(ValueError):
    """A frame or body that cannot be decoded; ``code`` tells why, for counting and for the reply."""

    code: FrameErrorCode

    def __init__(self, code: FrameErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class UnsupportedMessage(FrameError):
    """A well-formed frame whose message id (or encrypted body) this codec does not decode."""

    msg_id: int

    def __init__(self, msg_id: int, detail: str | None = None) -> None:
        super().__init__("unsupported", detail or f"message 0x{msg_id:04X} is not decoded here")
        self.msg_id = msg_id


# --- Escaping and checksum -------------------------------------------------------------------------


def escape(raw: bytes) -> bytes:
    """Header, body and check byte as they travel between the flags: 7E -> 7D 02, 7D -> 7D 01."""
    # 7D first: escaping 7E adds 7D bytes that must not be escaped again.
    return raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """The inverse of :func:`escape`; a 7D not followed by 01/02, or a bare 7E, is ``FrameError("escape")``."""
    if b"\x7e" in data:
        raise FrameError("escape", "a 0x7E flag byte inside a frame")
    escapes = data.count(b"\x7d")
    if not escapes:
        return bytes(data)
    # Each 7D must open exactly one 7D 01 or 7D 02 pair; the counts agree only then, and the two
    # replaces are then exact (replacing 7D 02 first cannot create a new 7D 01).
    if escapes != data.count(b"\x7d\x01") + data.count(b"\x7d\x02"):
        raise FrameError("escape", "0x7D not followed by 0x01 or 0x02")
    return data.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")


def checksum(data: bytes) -> int:
    """The XOR of all bytes."""
    # XOR-folding the bytes as one integer takes log2(n) big-integer steps in C where a loop over
    # the bytes takes n rounds of the interpreter, on every frame in and out.
    width = len(data)
    value = int.from_bytes(data, "little")
    while width > 1:
        half = (width + 1) >> 1
        bits = half << 3
        value = (value >> bits) ^ (value & ((1 << bits) - 1))
        width = half
    return value


# --- Header and frame ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """A frame's header, without the body length (which :func:`encode_frame` computes)."""

    msg_id: int
    phone: str  # every BCD digit, leading zeros kept: 12 digits (2013) or 20 (2019)
    serial: int
    version: int = 2013  # 2013 also covers 2011; 2019 when body-properties bit 14 is set
    protocol_version: int = 1  # the 2019 header's version byte
    encryption: int = 0  # body-properties bits 10-12 (bit 10: RSA)
    subpackage: tuple[int, int] | None = None  # (total, index), index from 1

    @property
    def length(self) -> int:
        """Header bytes on the wire (before escaping): 12/16 for 2013, 17/21 for 2019."""
        return (17 if self.version == 2019 else 12) + (4 if self.subpackage is not None else 0)


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    body: bytes


def _bcd_digits(raw: bytes, what: str) -> str:
    digits = raw.hex()
    if not digits.isdigit():
        raise FrameError("bcd", f"{what} {digits!r} is not BCD")
    return digits


def _read_header(content: bytes) -> tuple[Header, int, int]:
    """The header at the start of un-escaped ``content``, where its body starts, and the body length
    it declares."""
    properties = (content[2] << 8) | content[3]
    if properties & _VERSION_2019_BIT:
        if len(content) < _HEADER_2019.size:
            raise FrameError("length", f"{len(content)} bytes are too short for a 2019 header")
        msg_id, _, protocol_version, phone_raw, serial = _HEADER_2019.unpack_from(content)
        version = 2019
        offset = _HEADER_2019.size
    else:
        msg_id, _, phone_raw, serial = _HEADER_2013.unpack_from(content)
        protocol_version = 1
        version = 2013
        offset = _HEADER_2013.size
    subpackage: tuple[int, int] | None = None
    if properties & _SUBPACKAGE_BIT:
        if len(content) < offset + _PACKAGE.size:
            raise FrameError("length", "too short for the sub-package fields of its header")
        subpackage = _PACKAGE.unpack_from(content, offset)
        offset += _PACKAGE.size
    header = Header(
        msg_id,
        _bcd_digits(phone_raw, "phone"),
        serial,
        version,
        protocol_version,
        (properties >> _ENCRYPTION_SHIFT) & 0x07,
        subpackage,
    )
    return header, offset, properties & _LENGTH_MASK


def peek_header(data: bytes) -> Header | None:
    """The header of a frame that failed :func:`decode_frame` (bad checksum or length), if one can
    be read at all: a listener answers such a frame "message error" to the terminal that sent it."""
    data = data.strip(b"\x7e")
    try:
        raw = unescape(data)
    except FrameError:
        return None
    if len(raw) < _HEADER_2013.size:
        return None
    try:
        return _read_header(raw)[0]
    except FrameError:
        return None


def decode_frame(data: bytes) -> Frame:
    """One frame as received (escaped, with or without its two 0x7E flags): checksum, header and body.

    Raises :class:`FrameError` with code ``escape``, ``checksum``, ``length`` or ``bcd``.
    """
    if data[:1] == b"\x7e":
        data = data[1:]
    if data[-1:] == b"\x7e":
        data = data[:-1]
    raw = unescape(data)
    if len(raw) < _HEADER_2013.size + 1:
        raise FrameError("length", f"{len(raw)} bytes cannot hold a header and a check byte")
    content = raw[:-1]
    expected = checksum(content)
    if expected != raw[-1]:
        raise FrameError("checksum", f"check byte 0x{raw[-1]:02X}, computed 0x{expected:02X}")
    header, offset, declared = _read_header(content)
    if len(content) - offset != declared:
        raise FrameError("length", f"header declares a {declared}-byte body, {len(content) - offset} follow")
    return Frame(header, content[offset:])


def encode_frame(header: Header, body: bytes) -> bytes:
    """The complete wire frame: flags, header (body length filled in), body, XOR, escaping.

    A phone shorter than the header's width is left-padded with zeros; a body over 1023 bytes, a
    phone that does not fit or an unknown version is a ``ValueError`` of the caller.
    """
    return _encode(
        header.msg_id,
        header.phone,
        header.serial,
        header.version,
        header.protocol_version,
        header.encryption,
        header.subpackage,
        body,
    )


def _encode(
    msg_id: int,
    phone: str,
    serial: int,
    version: int,
    protocol_version: int,
    encryption: int,
    subpackage: tuple[int, int] | None,
    body: bytes,
) -> bytes:
    # Without a Header to build: a platform's every reply goes through here.
    if len(body) > MAX_BODY:
        raise ValueError(f"a {len(body)}-byte body needs sub-packages (at most {MAX_BODY} per frame)")
    if version not in (2013, 2019):
        raise ValueError(f"header version {version} is neither 2013 nor 2019")
    if not 0 <= encryption <= 0x07:
        raise ValueError(f"encryption {encryption} does not fit bits 10-12")
    width = 20 if version == 2019 else 12
    if not (phone.isascii() and phone.isdigit()) or len(phone) > width:
        raise ValueError(f"phone {phone!r} is not at most {width} digits")
    phone_bcd = bytes.fromhex(phone.rjust(width, "0"))
    properties = len(body) | (encryption << _ENCRYPTION_SHIFT)
    if subpackage is not None:
        properties |= _SUBPACKAGE_BIT
    if version == 2019:
        properties |= _VERSION_2019_BIT
        head = _HEADER_2019.pack(msg_id, properties, protocol_version, phone_bcd, serial)
    else:
        head = _HEADER_2013.pack(msg_id, properties, phone_bcd, serial)
    if subpackage is not None:
        head += _PACKAGE.pack(*subpackage)
    content = head + body
    return b"\x7e" + escape(content + bytes((checksum(content),))) + b"\x7e"


# --- Stream framing --------------------------------------------------------------------------------


class FrameReader:
    """Splits a TCP byte stream into frames (escaped bytes between 0x7E flags, flags stripped).

    Every 0x7E both ends the frame in progress and may start the next, so "7E a 7E 7E b 7E" and the
    shared-flag "7E a 7E b 7E" both give a and b; an empty "7E 7E" gives nothing. Bytes before the
    first flag are dropped. A frame growing past ``max_frame`` bytes is dropped (counted in
    ``discarded``) and the reader skips to the next flag, so a terminal cannot make it hold more.
    """

    def __init__(self, max_frame: int = 4096) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.discarded = 0
        self._pending = bytearray()
        self._open = False  # a flag was seen and the bytes after it are a frame in progress

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished frame, its start flag included; 0 when only a flag was seen."""
        return len(self._pending) + 1 if self._pending else 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        position = 0
        if not self._open:
            start = data.find(b"\x7e")
            if start < 0:
                return frames
            self._open = True
            position = start + 1
        while True:
            end = data.find(b"\x7e", position)
            if end < 0:
                if len(self._pending) + len(data) - position > self.max_frame:
                    # Dropped before it is copied; the reader then skips to the next flag.
                    self._pending.clear()
                    self._open = False
                    self.discarded += 1
                else:
                    self._pending += data[position:]
                return frames
            if self._pending:
                self._pending += data[position:end]
                frame = bytes(self._pending)
                self._pending.clear()
            else:
                frame = data[position:end]
            if len(frame) > self.max_frame:
                self.discarded += 1
            elif frame:
                frames.append(bytes(frame))
            position = end + 1


# --- Text fields -----------------------------------------------------------------------------------


def _read_text(raw: bytes, what: str) -> str:
    try:
        return raw.strip(_PADDING).decode(_READ_TEXT)
    except UnicodeDecodeError:
        raise FrameError("body", f"{what} is not GBK text") from None


def _write_text(text: str) -> bytes:
    return text.encode(_WRITE_TEXT)


def _write_fixed(text: str, width: int, what: str) -> bytes:
    raw = _write_text(text)
    if len(raw) > width:
        raise ValueError(f"{what} {text!r} takes {len(raw)} bytes, the field has {width}")
    return raw.ljust(width, b"\x00")


def _require(body: bytes, size: int, what: str) -> None:
    if len(body) != size:
        raise FrameError("body", f"{what} body has {len(body)} bytes, the layout has {size}")


# --- Messages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """0x0002: an empty body that keeps the connection."""

    @classmethod
    def decode(cls, body: bytes, header: Header) -> Heartbeat:
        _require(body, 0, "heartbeat")
        return cls()

    def encode(self, header_version: int) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Logout:
    """0x0003: the terminal cancels its registration (empty body)."""

    @classmethod
    def decode(cls, body: bytes, header: Header) -> Logout:
        _require(body, 0, "logout")
        return cls()

    def encode(self, header_version: int) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class GeneralReply:
    """0x8001 (platform) and 0x0001 (terminal): WORD ack serial, WORD ack id, BYTE result."""

    ack_serial: int
    ack_msg_id: int
    result: int = OK

    @classmethod
    def decode(cls, body: bytes, header: Header) -> GeneralReply:
        _require(body, _GENERAL_REPLY.size, "general reply")
        return cls(*_GENERAL_REPLY.unpack(body))

    def encode(self, header_version: int) -> bytes:
        return _GENERAL_REPLY.pack(self.ack_serial, self.ack_msg_id, self.result)


@dataclass(frozen=True, slots=True)
class Registration:
    """0x0100 terminal registration.

    The fixed text fields are 5/20/7 bytes (maker/model/terminal id) in 2013, 5/8/7 in 2011 (the
    same header: told apart by body length) and 11/30/30 in 2019. Padding NULs and spaces are
    stripped; anything else (some terminals pad with ASCII '0') is kept as text.
    """

    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_colour: int
    plate: str  # the VIN when the vehicle has no plate yet (colour 0)

    _LAYOUT_2019: ClassVar[tuple[int, int, int]] = (11, 30, 30)
    _LAYOUT_2013: ClassVar[tuple[int, int, int]] = (5, 20, 7)
    _LAYOUT_2011: ClassVar[tuple[int, int, int]] = (5, 8, 7)

    @classmethod
    def decode(cls, body: bytes, header: Header) -> Registration:
        if header.version == 2019:
            layout = cls._LAYOUT_2019
        elif len(body) >= _REGISTRATION_HEAD.size + sum(cls._LAYOUT_2013) + 1:
            layout = cls._LAYOUT_2013
        else:
            layout = cls._LAYOUT_2011
        maker_size, model_size, id_size = layout
        colour_at = _REGISTRATION_HEAD.size + maker_size + model_size + id_size
        if len(body) <= colour_at:
            raise FrameError("body", f"registration body of {len(body)} bytes ends before the plate colour")
        province, city = _REGISTRATION_HEAD.unpack_from(body)
        model_at = _REGISTRATION_HEAD.size + maker_size
        id_at = model_at + model_size
        return cls(
            province,
            city,
            _read_text(body[_REGISTRATION_HEAD.size : model_at], "maker"),
            _read_text(body[model_at:id_at], "model"),
            _read_text(body[id_at:colour_at], "terminal id"),
            body[colour_at],
            _read_text(body[colour_at + 1 :], "plate"),
        )

    def encode(self, header_version: int) -> bytes:
        maker_size, model_size, id_size = self._LAYOUT_2019 if header_version == 2019 else self._LAYOUT_2013
        return b"".join(
            (
                _REGISTRATION_HEAD.pack(self.province, self.city),
                _write_fixed(self.maker, maker_size, "maker"),
                _write_fixed(self.model, model_size, "model"),
                _write_fixed(self.terminal_id, id_size, "terminal id"),
                bytes((self.plate_colour,)),
                _write_text(self.plate),
            )
        )


@dataclass(frozen=True, slots=True)
class RegistrationReply:
    """0x8100: WORD ack serial, BYTE result, and the auth code STRING only when the result is 0."""

    ack_serial: int
    result: int
    auth_code: str | None = None

    @classmethod
    def decode(cls, body: bytes, header: Header) -> RegistrationReply:
        if len(body) < _REGISTRATION_REPLY.size:
            raise FrameError("body", f"registration reply body of {len(body)} bytes, at least 3 needed")
        ack_serial, result = _REGISTRATION_REPLY.unpack_from(body)
        if result != REGISTERED:
            _require(body, _REGISTRATION_REPLY.size, "refused registration reply")
            return cls(ack_serial, result, None)
        return cls(ack_serial, result, _read_text(body[_REGISTRATION_REPLY.size :], "auth code"))

    def encode(self, header_version: int) -> bytes:
        head = _REGISTRATION_REPLY.pack(self.ack_serial, self.result)
        if self.result != REGISTERED:
            return head  # a refusal carries no code, whatever the object holds
        return head + _write_text(self.auth_code or "")


@dataclass(frozen=True, slots=True)
class Authentication:
    """0x0102: the auth code (2013: the whole body; 2019: BYTE length, code, IMEI[15], version[20])."""

    auth_code: str
    imei: str | None = None
    software_version: str | None = None

    _IMEI_SIZE: ClassVar[int] = 15
    _VERSION_SIZE: ClassVar[int] = 20

    @classmethod
    def decode(cls, body: bytes, header: Header) -> Authentication:
        if header.version != 2019:
            return cls(_read_text(body, "auth code"))
        if not body:
            raise FrameError("body", "empty 2019 authentication body")
        code_end = 1 + body[0]
        _require(body, code_end + cls._IMEI_SIZE + cls._VERSION_SIZE, "2019 authentication")
        imei_end = code_end + cls._IMEI_SIZE
        return cls(
            _read_text(body[1:code_end], "auth code"),
            _read_text(body[code_end:imei_end], "IMEI"),
            _read_text(body[imei_end:], "software version"),
        )

    def encode(self, header_version: int) -> bytes:
        code = _write_text(self.auth_code)
        if header_version != 2019:
            return code
        if len(code) > 0xFF:
            raise ValueError("a 2019 auth code has at most 255 bytes")
        return b"".join(
            (
                bytes((len(code),)),
                code,
                _write_fixed(self.imei or "", self._IMEI_SIZE, "IMEI"),
                _write_fixed(self.software_version or "", self._VERSION_SIZE, "software version"),
            )
        )


# --- Position extras -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverspeedAlarm:
    """Extra 0x11: where the overspeed happened (0 none, 1 circle, 2 rectangle, 3 polygon, 4 route)."""

    location_type: int
    area_id: int | None  # absent when location_type is 0


@dataclass(frozen=True, slots=True)
class AreaAlarm:
    """Extra 0x12: entering (direction 0) or leaving (1) an area or route."""

    location_type: int
    area_id: int
    direction: int


@dataclass(frozen=True, slots=True)
class RouteTimeAlarm:
    """Extra 0x13: driving time on a route section too short (result 0) or too long (1)."""

    route_id: int
    drive_time_s: int
    result: int


@dataclass(frozen=True, slots=True)
class Analog:
    """Extra 0x2B: analog inputs AD0 (bits 0-15) and AD1 (bits 16-31)."""

    ad0: int
    ad1: int

    @property
    def raw(self) -> int:
        return self.ad1 << 16 | self.ad0


def _extra_uint(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _extra_temperature(value: bytes) -> int:
    # Sign and magnitude, not two's complement: 0x8001 is -1 °C.
    word = (value[0] << 8) | value[1]
    return -(word & 0x7FFF) if word & 0x8000 else word


def _extra_overspeed(value: bytes) -> OverspeedAlarm:
    if len(value) == 1:
        return OverspeedAlarm(value[0], None)
    return OverspeedAlarm(*_OVERSPEED.unpack(value))


def _extra_analog(value: bytes) -> Analog:
    ad1, ad0 = _ANALOG.unpack(value)
    return Analog(ad0, ad1)


# id -> (the lengths the standard allows, the decoder). Values are in the standard's units:
# 0x01 1/10 km, 0x02 1/10 L, 0x03 1/10 km/h, 0x05 one pressure byte per tyre, 0x06 °C.
_EXTRA_DECODERS: dict[int, tuple[frozenset[int], Callable[[bytes], object]]] = {
    EXTRA_MILEAGE: (frozenset({4}), _extra_uint),
    EXTRA_FUEL: (frozenset({2}), _extra_uint),
    EXTRA_TACHO_SPEED: (frozenset({2}), _extra_uint),
    EXTRA_ALARM_EVENT: (frozenset({2}), _extra_uint),
    EXTRA_TYRE_PRESSURE: (frozenset({30}), tuple),
    EXTRA_CARRIAGE_TEMPERATURE: (frozenset({2}), _extra_temperature),
    EXTRA_OVERSPEED: (frozenset({1, 5}), _extra_overspeed),
    EXTRA_AREA_ALARM: (frozenset({6}), lambda value: AreaAlarm(*_AREA_ALARM.unpack(value))),
    EXTRA_ROUTE_TIME: (frozenset({7}), lambda value: RouteTimeAlarm(*_ROUTE_TIME.unpack(value))),
    EXTRA_EXT_SIGNAL: (frozenset({4}), _extra_uint),
    EXTRA_IO_STATUS: (frozenset({2}), _extra_uint),
    EXTRA_ANALOG: (frozenset({4}), _extra_analog),
    EXTRA_SIGNAL_STRENGTH: (frozenset({1}), _extra_uint),
    EXTRA_SATELLITES: (frozenset({1}), _extra_uint),
}


def decode_extra(extra_id: int, value: bytes) -> object:
    """A standard extra item as a typed value (see ``_EXTRA_DECODERS`` for the units); the raw bytes
    for vendor ids and for a standard id whose length does not fit its layout."""
    known = _EXTRA_DECODERS.get(extra_id)
    if known is None or len(value) not in known[0]:
        return value
    return known[1](value)


# --- Position --------------------------------------------------------------------------------------


def _read_time(raw: bytes) -> datetime:
    year, month, day, hour, minute, second = (_BCD_VALUE[b] for b in raw)
    if min(year, month, day, hour, minute, second) < 0:
        raise FrameError("bcd", f"time {raw.hex()} is not BCD")
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=BEIJING)
    except ValueError:
        raise FrameError("bcd", f"time {raw.hex()} is not a date") from None


def _write_time(moment: datetime) -> bytes:
    if moment.tzinfo is None:
        raise ValueError("a position time must be timezone-aware")
    local = moment.astimezone(BEIJING)
    if not 2000 <= local.year <= 2099:
        raise ValueError(f"{local.year} does not fit a two-digit BCD year")
    return bytes.fromhex(local.strftime("%y%m%d%H%M%S"))


def _set_bits(value: int) -> tuple[int, ...]:
    return tuple(bit for bit in range(value.bit_length()) if value >> bit & 1)


@dataclass(frozen=True, slots=True)
class Position:
    """0x0200 position report: 28 fixed bytes, then extra items (BYTE id, BYTE length, value).

    ``extras`` keeps every item raw in the order received (vendor ids too; a repeated id keeps its
    first value); :meth:`extra_values` and the properties read the standard ones.
    """

    alarm: int
    status: int
    lat_raw: int  # degrees x 10^6, unsigned: status bit 2 says south
    lon_raw: int  # degrees x 10^6, unsigned: status bit 3 says west
    altitude: int  # m
    speed_raw: int  # 1/10 km/h
    direction: int  # 0-359, clockwise from north
    time: datetime  # aware, read as GMT+8
    extras: Mapping[int, bytes]

    @classmethod
    def decode(cls, body: bytes, header: Header) -> Position:
        size = len(body)
        if size < _LOCATION.size:
            raise FrameError("body", f"position body of {size} bytes, at least {_LOCATION.size} needed")
        alarm, status, lat, lon, altitude, speed, direction, when = _LOCATION.unpack_from(body)
        extras: dict[int, bytes] = {}
        offset = _LOCATION.size
        while offset < size:
            if offset + 2 > size:
                raise FrameError("body", f"a lone byte after the extra items at offset {offset}")
            extra_id = body[offset]
            end = offset + 2 + body[offset + 1]
            if end > size:
                raise FrameError("body", f"extra 0x{extra_id:02X} runs {end - size} bytes past the body")
            if extra_id not in extras:
                extras[extra_id] = body[offset + 2 : end]
            offset = end
        return cls(alarm, status, lat, lon, altitude, speed, direction, _read_time(when), extras)

    def encode(self, header_version: int) -> bytes:
        parts = [
            _LOCATION.pack(
                self.alarm,
                self.status,
                self.lat_raw,
                self.lon_raw,
                self.altitude,
                self.speed_raw,
                self.direction,
                _write_time(self.time),
            )
        ]
        for extra_id, value in self.extras.items():
            if len(value) > 0xFF:
                raise ValueError(f"extra 0x{extra_id:02X} has {len(value)} bytes, at most 255 fit")
            parts.append(bytes((extra_id, len(value))))
            parts.append(value)
        return b"".join(parts)

    @property
    def latitude(self) -> float:
        degrees = self.lat_raw / 1e6
        return -degrees if self.status & SOUTH else degrees

    @property
    def longitude(self) -> float:
        degrees = self.lon_raw / 1e6
        return -degrees if self.status & WEST else degrees

    @property
    def speed_kmh(self) -> float:
        return self.speed_raw / 10

    @property
    def acc_on(self) -> bool:
        return bool(self.status & ACC_ON)

    @property
    def fixed(self) -> bool:
        return bool(self.status & FIXED)

    @property
    def load(self) -> str:
        """Status bits 8-9: "empty", "half", "reserved" or "full"."""
        return _LOAD[(self.status >> 8) & 0x03]

    @property
    def alarm_bits(self) -> tuple[int, ...]:
        return _set_bits(self.alarm)

    @property
    def status_bits(self) -> tuple[int, ...]:
        return _set_bits(self.status)

    def extra_values(self) -> dict[int, object]:
        """Every extra item by id, decoded by :func:`decode_extra`."""
        return {extra_id: decode_extra(extra_id, value) for extra_id, value in self.extras.items()}

    def _extra_number(self, extra_id: int) -> int | None:
        value = decode_extra(extra_id, self.extras.get(extra_id, b""))
        return value if isinstance(value, int) else None

    @property
    def mileage_km(self) -> float | None:
        raw = self._extra_number(EXTRA_MILEAGE)
        return None if raw is None else raw / 10

    @property
    def fuel_l(self) -> float | None:
        raw = self._extra_number(EXTRA_FUEL)
        return None if raw is None else raw / 10

    @property
    def tacho_speed_kmh(self) -> float | None:
        raw = self._extra_number(EXTRA_TACHO_SPEED)
        return None if raw is None else raw / 10

    @property
    def carriage_temperature_c(self) -> int | None:
        return self._extra_number(EXTRA_CARRIAGE_TEMPERATURE)

    @property
    def satellites(self) -> int | None:
        return self._extra_number(EXTRA_SATELLITES)

    @property
    def signal_strength(self) -> int | None:
        return self._extra_number(EXTRA_SIGNAL_STRENGTH)


@dataclass(frozen=True, slots=True)
class PositionBatch:
    """0x0704: WORD count, BYTE kind, then per item a WORD length and a 0x0200 body.

    ``kind`` 1 is a blind-area re-upload: old points to be stored by their own GPS time.
    """

    kind: int
    positions: tuple[Position, ...]

    @classmethod
    def decode(cls, body: bytes, header: Header) -> PositionBatch:
        size = len(body)
        if size < _BATCH_HEAD.size:
            raise FrameError("body", f"position batch body of {size} bytes, at least 3 needed")
        count, kind = _BATCH_HEAD.unpack_from(body)
        positions: list[Position] = []
        offset = _BATCH_HEAD.size
        for _ in range(count):
            if offset + 2 > size:
                raise FrameError("body", f"the batch declares {count} items, the body holds {len(positions)}")
            end = offset + 2 + ((body[offset] << 8) | body[offset + 1])
            if end > size:
                raise FrameError("body", f"batch item {len(positions) + 1} runs past the body")
            positions.append(Position.decode(body[offset + 2 : end], header))
            offset = end
        if offset != size:
            raise FrameError("body", f"{size - offset} bytes follow the {count} declared batch items")
        return cls(kind, tuple(positions))

    def encode(self, header_version: int) -> bytes:
        parts = [_BATCH_HEAD.pack(len(self.positions), self.kind)]
        for position in self.positions:
            item = position.encode(header_version)
            parts.append(_WORD.pack(len(item)))
            parts.append(item)
        return b"".join(parts)


Message = (
    Heartbeat
    | Logout
    | GeneralReply
    | Registration
    | RegistrationReply
    | Authentication
    | Position
    | PositionBatch
)

_DECODERS: dict[int, Callable[[bytes, Header], Message]] = {
    TERMINAL_REPLY: GeneralReply.decode,
    HEARTBEAT: Heartbeat.decode,
    LOGOUT: Logout.decode,
    REGISTER: Registration.decode,
    AUTHENTICATE: Authentication.decode,
    POSITION: Position.decode,
    POSITION_BATCH: PositionBatch.decode,
    PLATFORM_REPLY: GeneralReply.decode,
    REGISTER_REPLY: RegistrationReply.decode,
}


def decode_message(frame: Frame) -> Message:
    """The frame's body as its message.

    :class:`UnsupportedMessage` for an id not decoded here or an encrypted body; ``FrameError("body")``
    for a body that does not fit its layout or a single sub-package (reassemble it first).
    """
    header = frame.header
    decoder = _DECODERS.get(header.msg_id)
    if decoder is None:
        raise UnsupportedMessage(header.msg_id)
    if header.encryption:
        raise UnsupportedMessage(
            header.msg_id, f"0x{header.msg_id:04X} body is encrypted ({header.encryption})"
        )
    if header.subpackage is not None:
        total, index = header.subpackage
        raise FrameError("body", f"0x{header.msg_id:04X} sub-package {index}/{total}: reassemble it first")
    try:
        return decoder(frame.body, header)
    except (struct.error, IndexError, UnicodeError) as error:
        # The decoders check their lengths; this only keeps a slip from reaching the server as
        # anything but a malformed body.
        raise FrameError("body", f"0x{header.msg_id:04X} body does not fit its layout: {error}") from None


# --- Platform replies ------------------------------------------------------------------------------


def reply_frame(request: Header, msg_id: int, body: bytes, serial: int) -> bytes:
    """A platform frame to the terminal of ``request``: its phone digit for digit, its header version
    (and 2019 protocol version byte), and the platform's own ``serial``."""
    return _encode(msg_id, request.phone, serial, request.version, request.protocol_version, 0, None, body)


def general_reply(request: Header, serial: int, result: int = OK) -> bytes:
    """The 0x8001 acknowledging ``request`` (its serial and message id) with ``result``."""
    body = _GENERAL_REPLY.pack(request.serial, request.msg_id, result)  # GeneralReply's layout
    return _encode(
        PLATFORM_REPLY, request.phone, serial, request.version, request.protocol_version, 0, None, body
    )


def registration_reply(request: Header, serial: int, result: int, auth_code: str | None = None) -> bytes:
    """The 0x8100 answering the 0x0100 of ``request``; the auth code goes out only when result is 0."""
    body = RegistrationReply(request.serial, result, auth_code).encode(request.version)
    return reply_frame(request, REGISTER_REPLY, body, serial)


# --- Sub-packages ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Partial:
    header: Header  # the first packet's, with the message's first serial
    started: float
    parts: dict[int, bytes]
    size: int


class SubpackageAssembler:
    """Collects the packets of sub-packaged messages and hands back each message once complete.

    A message is identified by phone, message id, total and its first packet's serial (packets are
    numbered consecutively, so that is ``serial - index + 1``). At most ``max_messages`` incomplete
    messages and ``max_bytes`` of their bodies are held; past either bound the oldest is dropped
    (counted in ``dropped``), as is any message still incomplete ``timeout`` seconds after its first
    packet when :meth:`expire` runs.
    """

    def __init__(self, timeout: float = 60.0, max_messages: int = 64, max_bytes: int = 1 << 20) -> None:
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dropped = 0
        self._partials: dict[tuple[str, int, int, int], _Partial] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._partials)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def add(self, frame: Frame, now: float) -> Frame | None:
        """The reassembled frame when ``frame`` completes its message, else None. A frame that is not
        a sub-package is returned as it is; an index outside 1..total is ``FrameError("body")``."""
        header = frame.header
        if header.subpackage is None:
            return frame
        total, index = header.subpackage
        if not 1 <= index <= total:
            raise FrameError("body", f"sub-package index {index} outside 1..{total}")
        first_serial = (header.serial - index + 1) & 0xFFFF
        key = (header.phone, header.msg_id, total, first_serial)
        partial = self._partials.get(key)
        if partial is None:
            if total == 1:
                return Frame(replace(header, subpackage=None), frame.body)
            partial = _Partial(replace(header, serial=first_serial, subpackage=None), now, {}, 0)
            self._partials[key] = partial
        if index in partial.parts:
            return None  # a retransmission: the first copy stands
        partial.parts[index] = frame.body
        partial.size += len(frame.body)
        self._bytes += len(frame.body)
        if len(partial.parts) == total:
            del self._partials[key]
            self._bytes -= partial.size
            body = b"".join(partial.parts[i] for i in range(1, total + 1))
            return Frame(partial.header, body)
        self._enforce_bounds()
        return None

    def expire(self, now: float) -> int:
        """Drops the messages whose first packet is older than the timeout; returns how many."""
        stale = [key for key, partial in self._partials.items() if now - partial.started > self.timeout]
        self._drop(stale)
        return len(stale)

    def _enforce_bounds(self) -> None:
        # Insertion order is arrival order of each message's first packet: the oldest go first.
        while self._partials and (len(self._partials) > self.max_messages or self._bytes > self.max_bytes):
            self._drop([next(iter(self._partials))])

    def _drop(self, keys: Iterable[tuple[str, int, int, int]]) -> None:
        for key in keys:
            partial = self._partials.pop(key)
            self._bytes -= partial.size
            self.dropped += 1
