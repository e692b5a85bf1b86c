"""The JT/T 808 codec against frames laid out by hand from the standard: framing, headers, bodies, replies."""

from __future__ import annotations

import dataclasses
import functools
import operator
import random
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from citygrid.jt808 import codec as jt808
from citygrid.jt808.codec import (
    Analog,
    AreaAlarm,
    Authentication,
    Frame,
    FrameError,
    FrameReader,
    GeneralReply,
    Header,
    Heartbeat,
    Logout,
    OverspeedAlarm,
    Position,
    PositionBatch,
    Registration,
    RegistrationReply,
    RouteTimeAlarm,
    SubpackageAssembler,
    UnsupportedMessage,
    checksum,
    decode_frame,
    decode_message,
    encode_frame,
    escape,
    general_reply,
    registration_reply,
    reply_frame,
    unescape,
)

BEIJING = timezone(timedelta(hours=8))
PHONE = "013912345678"
PHONE_2019 = "00000000013912345678"


# --- Frames laid out by hand -----------------------------------------------------------------------


def xor(data: bytes) -> int:
    return functools.reduce(operator.xor, data, 0)


def on_wire(content: bytes, check: int | None = None) -> bytes:
    """Header + body as the standard sends them: check byte appended, then escaped, between flags."""
    out = bytearray(b"\x7e")
    for byte in content + bytes([xor(content) if check is None else check]):
        if byte == 0x7E:
            out += b"\x7d\x02"
        elif byte == 0x7D:
            out += b"\x7d\x01"
        else:
            out.append(byte)
    out.append(0x7E)
    return bytes(out)


def header_2013(msg_id: int, body_length: int, serial: int = 1, phone: str = PHONE, flags: int = 0) -> bytes:
    return struct.pack(">HH6sH", msg_id, body_length | flags, bytes.fromhex(phone), serial)


def header_2019(
    msg_id: int, body_length: int, serial: int = 1, phone: str = PHONE_2019, version: int = 1, flags: int = 0
) -> bytes:
    return struct.pack(
        ">HHB10sH", msg_id, body_length | 0x4000 | flags, version, bytes.fromhex(phone), serial
    )


def frame_2013(msg_id: int, body: bytes, serial: int = 1) -> bytes:
    return on_wire(header_2013(msg_id, len(body), serial) + body)


def frame_2019(msg_id: int, body: bytes, serial: int = 1, version: int = 1) -> bytes:
    return on_wire(header_2019(msg_id, len(body), serial, version=version) + body)


def location(
    alarm: int = 0,
    status: int = 0b10,
    lat: int = 31_234_567,
    lon: int = 121_987_654,
    altitude: int = 12,
    speed: int = 456,
    direction: int = 90,
    time: str = "191231235959",
    extras: bytes = b"",
) -> bytes:
    """A 0x0200 body: DWORD alarm, DWORD status, DWORD lat, DWORD lon, WORD alt, WORD speed, WORD dir, BCD[6]."""
    return (
        struct.pack(">IIIIHHH", alarm, status, lat, lon, altitude, speed, direction)
        + bytes.fromhex(time)
        + extras
    )


def tlv(extra_id: int, value: bytes) -> bytes:
    return bytes([extra_id, len(value)]) + value


def position_of(body: bytes) -> Position:
    message = decode_message(decode_frame(frame_2013(0x0200, body)))
    assert isinstance(message, Position)
    return message


def registration_2013(plate: str = "粤A12345") -> bytes:
    return (
        struct.pack(">HH", 44, 300)
        + b"70443"
        + b"XHX00002".ljust(20, b"\x00")
        + b"ID00003"
        + b"\x01"
        + plate.encode("gbk")
    )


# --- Escaping and the check byte -------------------------------------------------------------------


def test_escape_sends_7e_as_7d02_and_7d_as_7d01():
    assert escape(bytes.fromhex("307e087d557e7d")) == bytes.fromhex("307d02087d01557d027d01")


def test_unescape_restores_what_escape_sent():
    raw = bytes(range(256)) * 2
    assert unescape(escape(raw)) == raw
    assert unescape(bytes.fromhex("307d02087d01557d027d01")) == bytes.fromhex("307e087d557e7d")


def test_an_escaped_7d_followed_by_02_data_stays_two_bytes():
    # 7D 02 as data travels as 7D 01 02: it must come back as 7D 02, not as 7E.
    assert unescape(bytes.fromhex("7d0102")) == bytes.fromhex("7d02")
    assert unescape(bytes.fromhex("7d017d02")) == bytes.fromhex("7d7e")


def test_check_byte_0x7e_is_sent_escaped():
    content = header_2013(0x0002, 0, serial=43, phone="040021679287")
    assert xor(content) == 0x7E
    wire = encode_frame(Header(0x0002, "040021679287", 43), b"")
    assert wire == bytes.fromhex("7e00020000040021679287002b7d027e")
    frame = decode_frame(wire)
    assert frame.header.serial == 43
    assert frame.body == b""


def test_an_escaped_body_byte_is_decoded_and_counted_once_in_the_length():
    body = location(lat=0x07203B7E)
    wire = frame_2013(0x0200, body)
    assert b"\x7d\x02" in wire
    assert position_of(body).lat_raw == 0x07203B7E


def test_7d_followed_by_03_is_an_escape_error():
    with pytest.raises(FrameError) as caught:
        decode_frame(bytes.fromhex("7e000200000139123456780001") + b"\x7d\x03" + b"\x7e")
    assert caught.value.code == "escape"
    with pytest.raises(FrameError) as caught:
        unescape(b"\x30\x7d\x03")
    assert caught.value.code == "escape"


def test_an_unescaped_7d_check_byte_before_the_end_flag_is_refused():
    # go-jt808 tolerates this frame on purpose; a 7D not opening a pair is malformed by the standard.
    with pytest.raises(FrameError) as caught:
        decode_frame(bytes.fromhex("7e0002000000000000067900007d7e"))
    assert caught.value.code == "escape"


def test_a_bare_7e_inside_a_frame_is_an_escape_error():
    with pytest.raises(FrameError) as caught:
        unescape(bytes.fromhex("00027e00"))
    assert caught.value.code == "escape"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 9, 64, 127, 1045])
def test_checksum_is_the_xor_of_every_byte(size):
    data = random.Random(size).randbytes(size)
    assert checksum(data) == xor(data)


def test_a_wrong_check_byte_is_a_checksum_error():
    content = header_2013(0x0002, 0)
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(content, check=xor(content) ^ 0x01))
    assert caught.value.code == "checksum"


def test_frames_decode_with_or_without_their_flags():
    wire = frame_2013(0x0002, b"", serial=9)
    assert decode_frame(wire) == decode_frame(wire[1:-1]) == Frame(Header(0x0002, PHONE, 9), b"")


# --- Lengths ---------------------------------------------------------------------------------------


def test_a_declared_body_length_longer_than_the_body_is_a_length_error():
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(header_2013(0x0200, 29) + location()))
    assert caught.value.code == "length"


def test_a_declared_body_length_shorter_than_the_body_is_a_length_error():
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(header_2013(0x0002, 0) + b"\x00"))
    assert caught.value.code == "length"


@pytest.mark.parametrize("content", [b"", b"\x00\x02", header_2013(0x0002, 0)[:11]])
def test_a_frame_too_short_for_a_header_is_a_length_error(content):
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(content))
    assert caught.value.code == "length"


def test_a_2019_flag_on_a_2013_sized_header_is_a_length_error():
    # The 12-byte 2013 header with bit 14 set: only 12 bytes, so too short for the 2019 header.
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(header_2013(0x0002, 0, flags=0x4000)))
    assert caught.value.code == "length"


def test_a_device_setting_bit_14_on_a_2013_header_is_refused_not_misread():
    # Some terminals send a 2013 header with bit 14 set (SmallChi's JTT2013Force): read as 2019, the
    # body is five bytes short of what the header declares.
    body = b"456121111"
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(header_2013(0x0102, len(body), flags=0x4000) + body))
    assert caught.value.code == "length"


def test_a_sub_package_header_too_short_for_its_package_fields_is_a_length_error():
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(header_2013(0x0200, 0, flags=0x2000) + b"\x00\x02"))
    assert caught.value.code == "length"


# --- Headers ---------------------------------------------------------------------------------------


def test_a_2013_header_reads_id_phone_serial_and_keeps_every_phone_digit():
    frame = decode_frame(on_wire(header_2013(0x0200, 28, serial=0x1234, phone="000123456789") + location()))
    assert frame.header == Header(0x0200, "000123456789", 0x1234, 2013, 1, 0, None)
    assert frame.header.length == 12
    assert len(frame.body) == 28


def test_a_2019_header_reads_the_version_byte_and_a_20_digit_phone():
    frame = decode_frame(on_wire(header_2019(0x0002, 0, serial=0xFFFF, version=3)))
    assert frame.header.version == 2019
    assert frame.header.protocol_version == 3
    assert frame.header.phone == PHONE_2019
    assert frame.header.serial == 0xFFFF
    assert frame.header.length == 17


def test_a_2013_sub_package_header_carries_total_and_index():
    part = location()[:10]
    content = header_2013(0x0704, len(part), serial=8, flags=0x2000) + struct.pack(">HH", 3, 2) + part
    frame = decode_frame(on_wire(content))
    assert frame.header.subpackage == (3, 2)
    assert frame.header.length == 16
    assert frame.body == part


def test_a_2019_sub_package_header_carries_total_and_index():
    content = header_2019(0x0704, 4, flags=0x2000) + struct.pack(">HH", 2, 1) + b"abcd"
    frame = decode_frame(on_wire(content))
    assert frame.header.subpackage == (2, 1)
    assert frame.header.length == 21
    assert frame.body == b"abcd"


def test_encryption_bits_10_to_12_are_read():
    frame = decode_frame(on_wire(header_2013(0x0200, 28, flags=0b001 << 10) + location()))
    assert frame.header.encryption == 1
    frame = decode_frame(on_wire(header_2013(0x0200, 28, flags=0b101 << 10) + location()))
    assert frame.header.encryption == 5


def test_a_phone_that_is_not_bcd_is_a_bcd_error():
    content = struct.pack(">HH6sH", 0x0002, 0, bytes.fromhex("01391234567f"), 1)
    with pytest.raises(FrameError) as caught:
        decode_frame(on_wire(content))
    assert caught.value.code == "bcd"


def test_encode_frame_lays_out_a_2019_sub_package_header_by_the_standard():
    header = Header(0x0704, PHONE_2019, 513, version=2019, protocol_version=1, subpackage=(3, 1))
    expected = on_wire(
        header_2019(0x0704, 4, serial=513, flags=0x2000) + struct.pack(">HH", 3, 1) + b"\x01\x02\x7e\x04"
    )
    assert encode_frame(header, b"\x01\x02\x7e\x04") == expected


def test_encode_frame_lays_out_a_2013_header_with_encryption_bits():
    header = Header(0x0200, PHONE, 7, encryption=1)
    assert encode_frame(header, location()) == on_wire(header_2013(0x0200, 28, 7, flags=1 << 10) + location())


def test_encode_frame_left_pads_a_short_phone_with_zeros():
    assert encode_frame(Header(0x0002, "13912345678", 1), b"") == frame_2013(0x0002, b"")
    assert encode_frame(Header(0x0002, "13912345678", 1, version=2019), b"") == frame_2019(0x0002, b"")


@pytest.mark.parametrize(
    ("header", "body"),
    [
        (Header(0x0200, PHONE, 1), bytes(1024)),
        (Header(0x0200, "0139123456789", 1), b""),
        (Header(0x0200, "01391234567x", 1), b""),
        (Header(0x0200, PHONE, 1, version=2011), b""),
    ],
    ids=["body-over-1023", "phone-too-long", "phone-not-digits", "unknown-version"],
)
def test_encode_frame_refuses_what_the_header_cannot_carry(header, body):
    with pytest.raises(ValueError, match=r"."):
        encode_frame(header, body)


def test_the_largest_body_round_trips():
    body = bytes(range(256)) * 3 + bytes(255)
    assert len(body) == 1023
    assert decode_frame(encode_frame(Header(0x0900, PHONE, 1), body)).body == body


# --- Dispatch --------------------------------------------------------------------------------------


def test_an_unknown_message_id_is_unsupported():
    frame = decode_frame(frame_2013(0x0900, b"\x01\x02"))
    with pytest.raises(UnsupportedMessage) as caught:
        decode_message(frame)
    assert caught.value.code == "unsupported"
    assert caught.value.msg_id == 0x0900
    assert isinstance(caught.value, FrameError)


def test_an_encrypted_body_is_unsupported():
    frame = decode_frame(on_wire(header_2013(0x0200, 28, flags=1 << 10) + location()))
    with pytest.raises(UnsupportedMessage):
        decode_message(frame)


def test_a_single_sub_package_is_not_decoded_as_a_whole_message():
    content = header_2013(0x0200, 28, flags=0x2000) + struct.pack(">HH", 2, 1) + location()
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(on_wire(content)))
    assert caught.value.code == "body"


@pytest.mark.parametrize("msg_id", [0x0002, 0x0003])
def test_heartbeat_and_logout_have_empty_bodies(msg_id):
    message = decode_message(decode_frame(frame_2013(msg_id, b"")))
    assert message == (Heartbeat() if msg_id == 0x0002 else Logout())
    assert message.encode(2013) == b""
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(msg_id, b"\x00")))
    assert caught.value.code == "body"


# --- 0x0200 position -------------------------------------------------------------------------------


def test_position_fixed_fields_follow_the_layout():
    position = position_of(
        location(alarm=0x401, status=0x800, lat=116307629, lon=40058359, altitude=312, speed=3, direction=99)
    )
    assert (position.alarm, position.status) == (0x401, 0x800)
    assert (position.lat_raw, position.lon_raw) == (116307629, 40058359)
    assert (position.altitude, position.speed_raw, position.direction) == (312, 3, 99)
    assert position.speed_kmh == pytest.approx(0.3)
    assert position.extras == {}


def test_bcd_time_is_read_at_utc_plus_8():
    position = position_of(location(time="191231235959"))
    assert position.time == datetime(2019, 12, 31, 23, 59, 59, tzinfo=BEIJING)
    assert position.time.utcoffset() == timedelta(hours=8)
    assert position.time.astimezone(UTC) == datetime(2019, 12, 31, 15, 59, 59, tzinfo=UTC)


def test_a_position_time_is_written_back_in_utc_plus_8():
    position = position_of(location(time="191231235959"))
    same_instant = datetime(2019, 12, 31, 15, 59, 59, tzinfo=UTC)
    rewritten = dataclasses.replace(position, time=same_instant)
    assert rewritten.encode(2013)[22:28] == bytes.fromhex("191231235959")


def test_a_naive_position_time_is_not_written():
    position = position_of(location())
    naive = dataclasses.replace(position, time=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.encode(2013)


@pytest.mark.parametrize(
    "time", ["19123123595a", "1912312359f9", "191331235959", "000000000000", "190230120000"]
)
def test_a_time_that_is_not_bcd_or_not_a_date_is_a_bcd_error(time):
    with pytest.raises(FrameError) as caught:
        position_of(location(time=time))
    assert caught.value.code == "bcd"


@pytest.mark.parametrize(
    ("status", "latitude", "longitude"),
    [
        (0b0000, 31.234567, 121.987654),
        (0b0100, -31.234567, 121.987654),
        (0b1000, 31.234567, -121.987654),
        (0b1100, -31.234567, -121.987654),
    ],
    ids=["north-east", "south", "west", "south-west"],
)
def test_status_bits_2_and_3_make_latitude_south_and_longitude_west(status, latitude, longitude):
    position = position_of(location(status=status))
    assert position.latitude == pytest.approx(latitude, abs=1e-9)
    assert position.longitude == pytest.approx(longitude, abs=1e-9)


@pytest.mark.parametrize(
    ("bits", "load"), [(0b00, "empty"), (0b01, "half"), (0b10, "reserved"), (0b11, "full")]
)
def test_status_bits_8_and_9_give_the_load(bits, load):
    assert position_of(location(status=bits << 8 | 0b11)).load == load


def test_status_bits_0_and_1_are_acc_and_fix():
    assert (position_of(location(status=0b01)).acc_on, position_of(location(status=0b01)).fixed) == (
        True,
        False,
    )
    assert (position_of(location(status=0b10)).acc_on, position_of(location(status=0b10)).fixed) == (
        False,
        True,
    )


def test_alarm_and_status_bits_list_the_set_bit_numbers():
    position = position_of(location(alarm=111, status=1 << 31 | 0b10110))
    assert position.alarm_bits == (0, 1, 2, 3, 5, 6)
    assert position.status_bits == (1, 2, 4, 31)
    assert position_of(location(alarm=0)).alarm_bits == ()


def test_extras_are_kept_raw_in_the_order_received_vendor_ids_included():
    extras = (
        tlv(0x02, b"\x00\x64")
        + tlv(0xEB, b"\x00\x0c\x00\xb2\x89\x86")
        + tlv(0x01, b"\x00\x00\x00\x0c")
        + tlv(0x64, bytes(47))
    )
    position = position_of(location(extras=extras))
    assert list(position.extras) == [0x02, 0xEB, 0x01, 0x64]
    assert position.extras[0xEB] == b"\x00\x0c\x00\xb2\x89\x86"
    assert position.extras[0x64] == bytes(47)
    assert position.encode(2013) == location(extras=extras)


def test_an_empty_extra_item_is_kept():
    assert position_of(location(extras=tlv(0xE1, b""))).extras == {0xE1: b""}


def test_a_repeated_extra_id_keeps_its_first_value():
    assert position_of(location(extras=tlv(0x30, b"\x05") + tlv(0x30, b"\x09"))).extras == {0x30: b"\x05"}


def test_an_extra_item_running_past_the_body_is_a_body_error():
    with pytest.raises(FrameError) as caught:
        position_of(location(extras=b"\x01\x04\x00\x00\x00"))
    assert caught.value.code == "body"


def test_a_lone_byte_after_the_extra_items_is_a_body_error():
    with pytest.raises(FrameError) as caught:
        position_of(location(extras=tlv(0x30, b"\x05") + b"\x31"))
    assert caught.value.code == "body"


def test_standard_extras_decode_into_typed_values_in_the_standards_units():
    extras = (
        tlv(0x01, struct.pack(">I", 9602))
        + tlv(0x02, struct.pack(">H", 468))
        + tlv(0x03, struct.pack(">H", 56))
        + tlv(0x04, struct.pack(">H", 44))
        + tlv(0x05, bytes([55] * 30))
        + tlv(0x06, struct.pack(">H", 0x8005))
        + tlv(0x11, struct.pack(">BI", 1, 66))
        + tlv(0x12, struct.pack(">BIB", 2, 77, 1))
        + tlv(0x13, struct.pack(">IHB", 88, 34, 1))
        + tlv(0x25, struct.pack(">I", 99))
        + tlv(0x2A, struct.pack(">H", 244))
        + tlv(0x2B, struct.pack(">HH", 7, 242))
        + tlv(0x30, b"\x1e")
        + tlv(0x31, b"\x0e")
    )
    position = position_of(location(extras=extras))
    assert position.extra_values() == {
        0x01: 9602,
        0x02: 468,
        0x03: 56,
        0x04: 44,
        0x05: tuple([55] * 30),
        0x06: -5,
        0x11: OverspeedAlarm(1, 66),
        0x12: AreaAlarm(2, 77, 1),
        0x13: RouteTimeAlarm(88, 34, 1),
        0x25: 99,
        0x2A: 244,
        0x2B: Analog(ad0=242, ad1=7),
        0x30: 30,
        0x31: 14,
    }
    assert position.mileage_km == pytest.approx(960.2)
    assert position.fuel_l == pytest.approx(46.8)
    assert position.tacho_speed_kmh == pytest.approx(5.6)
    assert position.carriage_temperature_c == -5
    assert position.signal_strength == 30
    assert position.satellites == 14
    assert Analog(ad0=242, ad1=7).raw == 7 << 16 | 242


def test_carriage_temperature_is_sign_and_magnitude_not_twos_complement():
    assert jt808.decode_extra(0x06, b"\x00\x05") == 5
    assert jt808.decode_extra(0x06, b"\x80\x05") == -5
    assert jt808.decode_extra(0x06, b"\xff\xff") == -32767


def test_an_overspeed_item_without_a_location_has_no_area_id():
    assert jt808.decode_extra(0x11, b"\x00") == OverspeedAlarm(0, None)


def test_a_standard_extra_of_the_wrong_length_stays_raw():
    assert jt808.decode_extra(0x01, b"\x00\x64") == b"\x00\x64"
    assert position_of(location(extras=tlv(0x01, b"\x00\x64"))).mileage_km is None


def test_a_position_without_extras_has_no_mileage():
    position = position_of(location())
    assert position.mileage_km is None
    assert position.satellites is None


def test_a_2019_position_decodes_like_a_2013_one():
    frame = decode_frame(frame_2019(0x0200, location(extras=tlv(0x31, b"\x09"))))
    position = decode_message(frame)
    assert isinstance(position, Position)
    assert position.satellites == 9


# --- 0x0704 position batch -------------------------------------------------------------------------


def test_a_blind_area_batch_is_type_1_with_each_item_length_prefixed():
    first = location(time="200707192359", extras=tlv(0x01, b"\x00\x00\x00\x0b"))
    second = location(time="200707192400", speed=0)
    body = (
        struct.pack(">HB", 2, 1)
        + struct.pack(">H", len(first))
        + first
        + struct.pack(">H", len(second))
        + second
    )
    batch = decode_message(decode_frame(frame_2019(0x0704, body)))
    assert isinstance(batch, PositionBatch)
    assert batch.kind == 1
    assert [p.time for p in batch.positions] == [
        datetime(2020, 7, 7, 19, 23, 59, tzinfo=BEIJING),
        datetime(2020, 7, 7, 19, 24, tzinfo=BEIJING),
    ]
    assert batch.positions[0].mileage_km == pytest.approx(1.1)
    assert batch.encode(2019) == body


def test_a_batch_with_fewer_items_than_its_count_is_a_body_error():
    item = location()
    body = struct.pack(">HB", 3, 0) + (struct.pack(">H", len(item)) + item) * 2
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(0x0704, body)))
    assert caught.value.code == "body"


def test_a_batch_with_bytes_after_its_items_is_a_body_error():
    item = location()
    body = struct.pack(">HB", 1, 0) + struct.pack(">H", len(item)) + item + b"\x00"
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(0x0704, body)))
    assert caught.value.code == "body"


def test_a_batch_item_longer_than_the_body_is_a_body_error():
    item = location()
    body = struct.pack(">HB", 1, 0) + struct.pack(">H", len(item) + 1) + item
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(0x0704, body)))
    assert caught.value.code == "body"


# --- 0x0100 registration ---------------------------------------------------------------------------


def test_a_2013_registration_has_maker_5_model_20_id_7_and_a_gbk_plate():
    message = decode_message(decode_frame(frame_2013(0x0100, registration_2013())))
    assert message == Registration(44, 300, "70443", "XHX00002", "ID00003", 1, "粤A12345")
    assert message.encode(2013) == registration_2013()


def test_a_2011_registration_with_an_8_byte_model_is_told_apart_by_its_length():
    body = (
        struct.pack(">HH", 31, 115)
        + b"cd\x00\x00\x00"
        + b"www.808\x00"
        + b"7654321"
        + b"\x01"
        + "测A1234".encode("gbk")
    )
    assert len(body) == 32
    message = decode_message(decode_frame(frame_2013(0x0100, body)))
    assert message == Registration(31, 115, "cd", "www.808", "7654321", 1, "测A1234")


def test_a_2019_registration_has_maker_11_model_30_id_30():
    body = (
        struct.pack(">HH", 31, 115)
        + b"cd".ljust(11, b"\x00")
        + b"www.808.com".ljust(30, b"\x00")
        + b"7654321".ljust(30, b"\x00")
        + b"\x01"
        + "测A1234".encode("gbk")
    )
    message = decode_message(decode_frame(frame_2019(0x0100, body)))
    assert message == Registration(31, 115, "cd", "www.808.com", "7654321", 1, "测A1234")
    assert message.encode(2019) == body


def test_registration_text_padded_with_ascii_zeros_is_kept_as_sent():
    body = (
        struct.pack(">HH", 31, 115)
        + b"cd000000000"
        + b"www.808.com".ljust(30, b"0")
        + b"7654321".ljust(30, b" ")
        + b"\x01"
        + b"A1234\x00"
    )
    message = decode_message(decode_frame(frame_2019(0x0100, body)))
    assert isinstance(message, Registration)
    assert message.maker == "cd000000000"
    assert message.model == "www.808.com" + "0" * 19
    assert message.terminal_id == "7654321"
    assert message.plate == "A1234"


def test_a_registration_plate_that_is_not_gbk_is_a_body_error():
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(0x0100, registration_2013()[:-8] + b"\xff\xff")))
    assert caught.value.code == "body"


def test_a_registration_field_too_long_for_its_layout_is_not_encoded():
    with pytest.raises(ValueError, match="maker"):
        Registration(1, 2, "123456", "m", "id", 1, "p").encode(2013)


# --- 0x0102 authentication, 0x8001/0x0001 and 0x8100 replies -----------------------------------------


def test_a_2013_authentication_body_is_the_code():
    message = decode_message(decode_frame(frame_2013(0x0102, b"456121111")))
    assert message == Authentication("456121111")
    assert message.encode(2013) == b"456121111"


def test_a_2019_authentication_has_length_code_imei_and_software_version():
    body = b"\x0b" + b"17299841738" + b"123456789012345" + b"3.7.15".ljust(20, b"\x00")
    message = decode_message(decode_frame(frame_2019(0x0102, body)))
    assert message == Authentication("17299841738", "123456789012345", "3.7.15")
    assert message.encode(2019) == body


def test_a_2019_authentication_whose_length_byte_overruns_is_a_body_error():
    body = b"\x0c" + b"17299841738" + b"123456789012345" + bytes(20)
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2019(0x0102, body)))
    assert caught.value.code == "body"


@pytest.mark.parametrize("msg_id", [0x8001, 0x0001])
def test_general_replies_are_ack_serial_then_ack_id_then_result(msg_id):
    message = decode_message(decode_frame(frame_2013(msg_id, bytes.fromhex("0064020004"))))
    assert message == GeneralReply(ack_serial=100, ack_msg_id=0x0200, result=jt808.ALARM_CONFIRMED)
    assert message.encode(2013) == bytes.fromhex("0064020004")


def test_a_registration_reply_carries_the_code_only_on_success():
    ok = decode_message(decode_frame(frame_2013(0x8100, bytes.fromhex("006400") + b"123456")))
    assert ok == RegistrationReply(100, jt808.REGISTERED, "123456")
    refused = decode_message(decode_frame(frame_2013(0x8100, bytes.fromhex("006404"))))
    assert refused == RegistrationReply(100, jt808.TERMINAL_UNKNOWN, None)
    assert RegistrationReply(100, jt808.TERMINAL_UNKNOWN, "123456").encode(2013) == bytes.fromhex("006404")


def test_a_refused_registration_reply_with_a_code_is_a_body_error():
    with pytest.raises(FrameError) as caught:
        decode_message(decode_frame(frame_2013(0x8100, bytes.fromhex("006401") + b"123456")))
    assert caught.value.code == "body"


def test_general_reply_echoes_serial_and_id_with_the_platforms_serial():
    request = decode_frame(frame_2013(0x0200, location(), serial=0x1234)).header
    expected = on_wire(header_2013(0x8001, 5, serial=77) + struct.pack(">HHB", 0x1234, 0x0200, 0))
    assert general_reply(request, serial=77) == expected


def test_a_2019_request_gets_a_2019_reply_with_its_protocol_version():
    request = decode_frame(frame_2019(0x0002, b"", serial=5, version=2)).header
    expected = on_wire(header_2019(0x8001, 5, serial=0, version=2) + struct.pack(">HHB", 5, 0x0002, 1))
    assert general_reply(request, serial=0, result=jt808.FAILURE) == expected


def test_registration_reply_sends_the_code_only_when_registered():
    request = decode_frame(frame_2013(0x0100, registration_2013(), serial=3)).header
    assert registration_reply(request, 9, jt808.REGISTERED, "ok..ok") == on_wire(
        header_2013(0x8100, 9, serial=9) + struct.pack(">HB", 3, 0) + b"ok..ok"
    )
    assert registration_reply(request, 10, jt808.VEHICLE_TAKEN, "ok..ok") == on_wire(
        header_2013(0x8100, 3, serial=10) + struct.pack(">HB", 3, 1)
    )


def test_reply_frame_copies_the_phone_digit_for_digit():
    request = Header(0x0002, "00000866496077582164", 1, version=2019)
    reply = decode_frame(reply_frame(request, 0x8003, b"\x01", serial=2))
    assert reply.header == Header(0x8003, "00000866496077582164", 2, version=2019)
    assert reply.body == b"\x01"


def test_result_codes_are_the_standards():
    assert (jt808.OK, jt808.FAILURE, jt808.MESSAGE_ERROR, jt808.UNSUPPORTED, jt808.ALARM_CONFIRMED) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert (
        jt808.REGISTERED,
        jt808.VEHICLE_TAKEN,
        jt808.VEHICLE_UNKNOWN,
        jt808.TERMINAL_TAKEN,
        jt808.TERMINAL_UNKNOWN,
    ) == (0, 1, 2, 3, 4)


# --- Malformed input only ever raises FrameError ---------------------------------------------------

VALID_BODIES = [
    (0x0001, 2013, bytes.fromhex("0064020000")),
    (0x0002, 2013, b""),
    (0x0003, 2019, b""),
    (0x0100, 2013, registration_2013()),
    (0x0100, 2019, struct.pack(">HH", 1, 2) + bytes(71) + b"\x01" + "粤A1".encode("gbk")),
    (0x0102, 2013, b"456121111"),
    (0x0102, 2019, b"\x03abc" + b"1" * 15 + b"v1".ljust(20, b"\x00")),
    (
        0x0200,
        2013,
        location(extras=tlv(0x01, b"\x00\x00\x00\x64") + tlv(0x11, b"\x00") + tlv(0x2B, bytes(4))),
    ),
    (
        0x0704,
        2013,
        struct.pack(">HB", 2, 1) + (struct.pack(">H", 31) + location(extras=tlv(0x31, b"\x05"))) * 2,
    ),
    (0x8001, 2019, bytes.fromhex("ffff070400")),
    (0x8100, 2013, bytes.fromhex("000a00") + "鉴权码".encode("gbk")),
    (0x8100, 2013, bytes.fromhex("000a02")),
]


BODY_IDS = [f"0x{msg_id:04X}-{version}-{len(body)}B" for msg_id, version, body in VALID_BODIES]


def outcome(frame: Frame | bytes) -> str:
    """ "decoded", or the code of the FrameError raised; any other exception fails the test. Bytes
    are a frame as received, decoded with decode_frame first."""
    try:
        decode_message(frame if isinstance(frame, Frame) else decode_frame(frame))
    except FrameError as error:
        return error.code
    return "decoded"


@pytest.mark.parametrize(("msg_id", "version", "body"), VALID_BODIES, ids=BODY_IDS)
def test_every_prefix_of_a_valid_body_decodes_or_is_a_body_error(msg_id, version, body):
    header = Header(msg_id, PHONE_2019 if version == 2019 else PHONE, 1, version=version)
    assert outcome(Frame(header, body)) == "decoded"
    for size in range(len(body)):
        assert outcome(Frame(header, body[:size])) in {"decoded", "body"}


@pytest.mark.parametrize(("msg_id", "version", "body"), VALID_BODIES, ids=BODY_IDS)
def test_every_prefix_of_a_valid_wire_frame_decodes_or_raises_frame_error(msg_id, version, body):
    wire = encode_frame(Header(msg_id, PHONE, 1, version=version), body)
    results = {outcome(wire[:size]) for size in range(len(wire))}
    assert results <= {"decoded", "length", "checksum", "body"}


def test_random_bytes_only_ever_raise_frame_error():
    rng = random.Random(808)
    results: Counter[str] = Counter()
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 80))
        if rng.random() < 0.5:
            data = b"\x7e" + data + b"\x7e"
        results[outcome(data)] += 1
    assert set(results) <= {"decoded", "escape", "checksum", "length", "bcd", "body", "unsupported"}


def test_random_bodies_in_well_formed_frames_only_ever_raise_frame_error():
    # Random bytes rarely pass the checksum, so these are framed correctly to reach the body decoders.
    rng = random.Random(2013)
    ids = [0x0001, 0x0002, 0x0003, 0x0100, 0x0102, 0x0200, 0x0704, 0x8001, 0x8100]
    results: Counter[str] = Counter()
    for _ in range(3000):
        msg_id = rng.choice(ids)
        version = rng.choice((2013, 2019))
        if msg_id == 0x0200 and rng.random() < 0.7:
            items = (
                tlv(rng.randrange(256), rng.randbytes(rng.randrange(8))) for _ in range(rng.randrange(4))
            )
            tail = b"".join(items) if rng.random() < 0.7 else rng.randbytes(rng.randrange(40))
            body = location(time="240229120000") + tail
        else:
            body = rng.randbytes(rng.randrange(0, 120))
        wire = encode_frame(Header(msg_id, PHONE, rng.randrange(0x10000), version=version), body)
        results[outcome(wire)] += 1
    assert set(results) <= {"decoded", "bcd", "body"}
    assert results["decoded"] > 100  # the loop reached real decodes, not only early refusals


# --- FrameReader -----------------------------------------------------------------------------------

GJ_HEARTBEAT = "7e000200000123456789017fff0a7e"
GJ_REGISTRATION = "7e0100002d0144199999990001000b0065373034343358485830303030320000000000000000000000006964303030303301d4c1413138383838927e"


def test_two_frames_in_one_chunk_are_split_at_the_double_flag():
    # go-jt808 frame_reader_test: a heartbeat and a registration back to back ("7e7e" between them).
    reader = FrameReader()
    frames = reader.feed(bytes.fromhex(GJ_HEARTBEAT + GJ_REGISTRATION))
    assert frames == [bytes.fromhex(GJ_HEARTBEAT)[1:-1], bytes.fromhex(GJ_REGISTRATION)[1:-1]]
    assert reader.pending == 0
    registration = decode_message(decode_frame(frames[1]))
    assert registration == Registration(11, 101, "70443", "XHX00002", "id00003", 1, "粤A18888")


def test_a_17_byte_prefix_stays_pending_until_the_rest_arrives():
    # go-jt808 frame_reader_test: the prefix as Go's hex decoder reads the odd-length string.
    reader = FrameReader()
    prefix = bytes.fromhex("7e0100002d0144199999990001000b0065")
    assert len(prefix) == 17
    assert reader.feed(prefix) == []
    assert reader.pending == 17
    rest = bytes.fromhex(GJ_REGISTRATION)[17:]
    assert rest.hex().startswith("373034343358485830303030")
    assert reader.feed(rest) == [bytes.fromhex(GJ_REGISTRATION)[1:-1]]
    assert reader.pending == 0


def test_bytes_before_the_first_flag_are_dropped():
    reader = FrameReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") == []
    assert reader.pending == 0
    assert reader.feed(b"junk" + bytes.fromhex(GJ_HEARTBEAT)) == [bytes.fromhex(GJ_HEARTBEAT)[1:-1]]


def test_an_empty_double_flag_yields_nothing():
    reader = FrameReader()
    assert reader.feed(b"\x7e\x7e\x7e\x7e") == []
    assert reader.feed(bytes.fromhex(GJ_HEARTBEAT)[1:]) == [bytes.fromhex(GJ_HEARTBEAT)[1:-1]]


def test_frames_sharing_one_flag_are_both_read():
    heartbeat = bytes.fromhex(GJ_HEARTBEAT)
    reader = FrameReader()
    assert reader.feed(heartbeat + heartbeat[1:]) == [heartbeat[1:-1], heartbeat[1:-1]]


def test_a_stream_fed_byte_by_byte_gives_the_same_frames():
    stream = bytes.fromhex(GJ_HEARTBEAT + GJ_REGISTRATION + GJ_HEARTBEAT)
    reader = FrameReader()
    frames = [frame for byte in stream for frame in reader.feed(bytes([byte]))]
    assert frames == FrameReader().feed(stream)
    assert len(frames) == 3


def test_a_frame_growing_past_max_frame_is_discarded_and_the_next_one_read():
    reader = FrameReader(max_frame=64)
    assert reader.feed(b"\x7e" + bytes(50)) == []
    assert reader.feed(bytes(50)) == []
    assert reader.discarded == 1
    assert reader.pending == 0
    assert reader.feed(bytes(30) + b"\x7e" + bytes.fromhex(GJ_HEARTBEAT)) == [
        bytes.fromhex(GJ_HEARTBEAT)[1:-1]
    ]
    assert reader.discarded == 1


def test_a_frame_over_max_frame_within_one_chunk_is_discarded():
    reader = FrameReader(max_frame=16)
    heartbeat = bytes.fromhex(GJ_HEARTBEAT)
    assert reader.feed(b"\x7e" + bytes(17) + heartbeat) == [heartbeat[1:-1]]
    assert reader.discarded == 1


def test_a_terminal_sending_no_flags_cannot_grow_the_reader():
    reader = FrameReader(max_frame=1000)
    reader.feed(b"\x7e")
    for _ in range(200):
        reader.feed(bytes(997))
        assert reader.pending <= 1001
    assert reader.discarded > 0


# --- Sub-packages ----------------------------------------------------------------------------------


def packets(msg_id: int, body: bytes, first_serial: int, size: int, version: int = 2013) -> list[Frame]:
    """``body`` cut into sub-packages of ``size`` bytes as a terminal sends them, decoded from the wire."""
    parts = [body[at : at + size] for at in range(0, len(body), size)]
    phone = PHONE_2019 if version == 2019 else PHONE
    return [
        decode_frame(
            encode_frame(
                Header(
                    msg_id,
                    phone,
                    (first_serial + i) & 0xFFFF,
                    version=version,
                    subpackage=(len(parts), i + 1),
                ),
                part,
            )
        )
        for i, part in enumerate(parts)
    ]


def batch_body(count: int) -> bytes:
    item = location(extras=tlv(0x01, b"\x00\x00\x00\x64"))
    return struct.pack(">HB", count, 1) + (struct.pack(">H", len(item)) + item) * count


def test_sub_packages_arriving_out_of_order_are_reassembled():
    body = batch_body(4)
    parts = packets(0x0704, body, first_serial=100, size=40)
    assert len(parts) == 4
    assembler = SubpackageAssembler()
    assert assembler.add(parts[2], now=0) is None
    assert assembler.add(parts[0], now=1) is None
    assert assembler.add(parts[3], now=2) is None
    whole = assembler.add(parts[1], now=3)
    assert whole is not None
    assert whole.body == body
    assert whole.header == Header(0x0704, PHONE, 100)
    batch = decode_message(whole)
    assert isinstance(batch, PositionBatch)
    assert len(batch.positions) == 4
    assert len(assembler) == 0
    assert assembler.held_bytes == 0


def test_a_duplicate_sub_package_is_ignored():
    parts = packets(0x0704, batch_body(2), first_serial=7, size=30)
    assembler = SubpackageAssembler()
    assert assembler.add(parts[0], now=0) is None
    assert assembler.add(parts[0], now=0) is None
    for part in parts[1:-1]:
        assert assembler.add(part, now=0) is None
    whole = assembler.add(parts[-1], now=0)
    assert whole is not None
    assert whole.body == batch_body(2)


def test_two_messages_of_the_same_terminal_are_kept_apart_by_their_first_serial():
    first = packets(0x0704, batch_body(2), first_serial=10, size=40)
    second = packets(0x0704, batch_body(3)[: len(batch_body(2))], first_serial=20, size=40)
    assert len(first) == len(second)
    assembler = SubpackageAssembler()
    for a, b in zip(first[:-1], second[:-1], strict=True):
        assert assembler.add(a, now=0) is None
        assert assembler.add(b, now=0) is None
    assert len(assembler) == 2
    done = assembler.add(second[-1], now=0)
    assert done is not None
    assert done.header.serial == 20
    done = assembler.add(first[-1], now=0)
    assert done is not None
    assert done.header.serial == 10
    assert done.body == batch_body(2)


def test_serials_wrapping_past_65535_still_identify_one_message():
    parts = packets(0x0704, batch_body(2), first_serial=0xFFFF, size=40, version=2019)
    assert [p.header.serial for p in parts] == [0xFFFF, 0, 1][: len(parts)]
    assembler = SubpackageAssembler()
    results = [assembler.add(part, now=0) for part in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    whole = results[-1]
    assert whole is not None
    assert whole.header.serial == 0xFFFF
    assert whole.header.version == 2019


def test_incomplete_messages_expire_after_the_timeout():
    parts = packets(0x0704, batch_body(2), first_serial=1, size=40)
    assembler = SubpackageAssembler(timeout=30)
    assembler.add(parts[0], now=100)
    assert assembler.expire(now=129) == 0
    assert len(assembler) == 1
    assert assembler.expire(now=131) == 1
    assert len(assembler) == 0
    assert assembler.held_bytes == 0
    assert assembler.dropped == 1
    # The rest arriving later no longer completes anything.
    assert all(assembler.add(part, now=132) is None for part in parts[1:])


def test_past_max_messages_the_oldest_incomplete_message_is_dropped():
    assembler = SubpackageAssembler(max_messages=2)
    for serial in (1, 11, 21):
        assembler.add(packets(0x0704, batch_body(2), first_serial=serial, size=40)[0], now=serial)
    assert len(assembler) == 2
    assert assembler.dropped == 1
    oldest_rest = packets(0x0704, batch_body(2), first_serial=1, size=40)[1:]
    assert all(assembler.add(part, now=30) is None for part in oldest_rest)


def test_past_max_bytes_the_oldest_incomplete_messages_are_dropped():
    assembler = SubpackageAssembler(max_bytes=100)
    assembler.add(packets(0x0704, batch_body(4), first_serial=1, size=60)[0], now=0)
    assembler.add(packets(0x0704, batch_body(4), first_serial=50, size=60)[0], now=1)
    assert assembler.held_bytes <= 100
    assert len(assembler) == 1
    assert assembler.dropped == 1


def test_a_frame_that_is_no_sub_package_passes_through():
    frame = decode_frame(frame_2013(0x0200, location()))
    assert SubpackageAssembler().add(frame, now=0) is frame


def test_a_single_packet_message_is_returned_at_once():
    (only,) = packets(0x0200, location(), first_serial=5, size=100)
    whole = SubpackageAssembler().add(only, now=0)
    assert whole is not None
    assert whole.header.subpackage is None
    assert whole.body == location()


@pytest.mark.parametrize("subpackage", [(3, 0), (3, 4), (0, 0)])
def test_a_sub_package_index_outside_its_total_is_a_body_error(subpackage):
    frame = Frame(Header(0x0704, PHONE, 1, subpackage=subpackage), b"x")
    with pytest.raises(FrameError) as caught:
        SubpackageAssembler().add(frame, now=0)
    assert caught.value.code == "body"
