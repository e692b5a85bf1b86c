"""The JT/T 808 conformance corpus (``../shared/conformance/jt808``) replayed through our codec: every
published frame decodes to the values its source asserts, our replies echo what the sources expect,
and frames the sources serialise come out of our encoder byte for byte.

The corpus is third-party test data and stays out of the repository: it is read where it lies, and
these tests skip in a checkout without it.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from citygrid.jt808.codec import (
    REGISTER,
    Analog,
    AreaAlarm,
    Authentication,
    Frame,
    GeneralReply,
    Heartbeat,
    Logout,
    Message,
    OverspeedAlarm,
    Position,
    PositionBatch,
    Registration,
    RegistrationReply,
    RouteTimeAlarm,
    decode_frame,
    decode_message,
    encode_frame,
    general_reply,
    registration_reply,
)
from citygrid.testing import conformance_dir


def corpus_or_skip() -> Path:
    found = conformance_dir("jt808")
    if found is None:
        pytest.skip(
            "the JT/T 808 conformance corpus (../shared/conformance/jt808) is absent: this checkout has no "
            "shared/ corpora beside it and CITYGRID_CONFORMANCE_DIR names none",
            allow_module_level=True,
        )
    return found


CORPUS = corpus_or_skip()
VECTORS: list[dict[str, Any]] = json.loads((CORPUS / "vectors.json").read_text(encoding="utf-8"))
WITH_REPLY = [vector for vector in VECTORS if vector.get("expected_reply")]
WITH_RELATED = [vector for vector in VECTORS if vector.get("related_frames")]
# The sources whose test serialises an object and compares it with the published hex (SmallChi's
# "Serialize == hex", yezhihao's decode -> encode round trip).
SERIALISED = [
    vector for vector in VECTORS if re.search(r"(?<!de)seriali[sz]e|round[- ]trip", vector["assertion"], re.I)
]
# Values check_vectors.py derives that are no reading of the standard, only flags of its own.
NOT_STANDARD = {"lat_in_range", "lon_in_range"}


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [vector["id"] for vector in vectors]


def decoded(hex_frame: str) -> tuple[Frame, Message]:
    frame = decode_frame(bytes.fromhex(hex_frame))
    return frame, decode_message(frame)


# --- Our decode in the corpus's terms --------------------------------------------------------------


def header_view(frame: Frame) -> dict[str, Any]:
    header = frame.header
    view: dict[str, Any] = {
        "msg_id": f"0x{header.msg_id:04X}",
        "phone_bcd": header.phone,
        # Sources that report the phone drop its leading zeros; the digits are compared as BCD.
        "phone": header.phone.lstrip("0"),
        "serial": header.serial,
        "version_flag": header.version == 2019,
        "header_len": header.length,
        # decode_frame refuses a body whose length differs from the declared one.
        "body_len": len(frame.body),
        "body_len_actual": len(frame.body),
        "subpackage": header.subpackage is not None,
        "encryption": header.encryption,
    }
    if header.version == 2019:
        view["protocol_version"] = header.protocol_version
    return view


def extra_view(extra_id: int, raw: bytes, value: object) -> dict[str, Any]:
    view: dict[str, Any] = {"hex": raw.hex()}
    if isinstance(value, int):
        names = {
            0x01: "mileage_raw",
            0x02: "fuel_raw",
            0x03: "tacho_speed_raw",
            0x04: "alarm_event_id",
            0x06: "carriage_temp",
            0x25: "ext_signal",
            0x2A: "io_status",
            0x30: "signal_strength",
            0x31: "gnss_satellites",
        }
        view[names[extra_id]] = value
    elif isinstance(value, tuple):
        view["tire_pressure"] = list(value)
    elif isinstance(value, OverspeedAlarm):
        view["type"] = value.location_type
        if value.area_id is not None:
            view["area_id"] = value.area_id
    elif isinstance(value, AreaAlarm):
        view.update(type=value.location_type, area_id=value.area_id, direction=value.direction)
    elif isinstance(value, RouteTimeAlarm):
        view.update(route_id=value.route_id, drive_time_s=value.drive_time_s, result=value.result)
    elif isinstance(value, Analog):
        view.update(analog=value.raw, ad0=value.ad0, ad1=value.ad1)
    return view


def position_view(position: Position, version: int) -> dict[str, Any]:
    assert position.time.utcoffset() == timedelta(hours=8)
    values = position.extra_values()
    return {
        "alarm": position.alarm,
        "status": position.status,
        "lat_raw": position.lat_raw,
        "lon_raw": position.lon_raw,
        "altitude": position.altitude,
        "speed_raw": position.speed_raw,
        "direction": position.direction,
        "time": position.time.strftime("%Y-%m-%d %H:%M:%S"),
        "len": len(position.encode(version)),
        "extras": {
            f"0x{extra_id:02X}": extra_view(extra_id, raw, values[extra_id])
            for extra_id, raw in position.extras.items()
        },
    }


def derived_view(position: Position) -> dict[str, Any]:
    """What the standard makes of the raw fields: signed degrees by status bits 2/3, km/h, bit lists."""
    return {
        "lat_deg": position.latitude,
        "lon_deg": position.longitude,
        "speed_kmh": position.speed_kmh,
        "alarm_bits": list(position.alarm_bits),
        "status_bits": list(position.status_bits),
    }


def body_view(frame: Frame, message: Message) -> dict[str, Any]:
    version = frame.header.version
    if isinstance(message, Heartbeat | Logout):
        return {"empty": frame.body == b""}
    if isinstance(message, Registration):
        return {
            "province": message.province,
            "city": message.city,
            "maker_id": message.maker,
            "model": message.model,
            "terminal_id": message.terminal_id,
            "plate_color": message.plate_colour,
            "plate": message.plate,
        }
    if isinstance(message, Authentication):
        view: dict[str, Any] = {"auth_code": message.auth_code}
        if version == 2019:
            view.update(
                auth_code_len=len(message.auth_code.encode("gbk")),
                imei=message.imei,
                software_version=message.software_version,
            )
        return view
    if isinstance(message, GeneralReply):
        return {
            "ack_serial": message.ack_serial,
            "ack_msg_id": f"0x{message.ack_msg_id:04X}",
            "result": message.result,
        }
    if isinstance(message, RegistrationReply):
        return {"ack_serial": message.ack_serial, "result": message.result, "auth_code": message.auth_code}
    if isinstance(message, Position):
        return position_view(message, version)
    assert isinstance(message, PositionBatch)
    return {
        "count": len(message.positions),
        "type": message.kind,
        "items": [position_view(position, version) for position in message.positions],
    }


def view(frame: Frame, message: Message) -> dict[str, Any]:
    return {"header": header_view(frame), "body": body_view(frame, message)}


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every value the corpus asserts, compared with ours; keys starting with "_" are asserted by the
    source but outside this codec (ADAS 0x64, traccar's plausibility). An empty object asserts that
    there is nothing there (no extras)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: asserted an object, we have {actual!r}"]
        if not expected and actual:
            return [f"{path}: asserted empty, we have {sorted(actual)}"]
        found: list[str] = []
        for key, value in expected.items():
            if key.startswith("_"):
                continue
            if key not in actual:
                found.append(f"{path}.{key}: asserted {value!r}, not in our decode")
            else:
                found += mismatches(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {len(expected)} items asserted, we have {actual!r}"]
        return [
            m
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for m in mismatches(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: asserted {expected!r}, we decode {actual!r}"]


# --- The corpus itself -----------------------------------------------------------------------------


def test_the_corpus_names_each_vector_once():
    assert VECTORS
    assert len(set(ids(VECTORS))) == len(VECTORS)


# --- Every frame decodes to what its source asserts ------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_the_frame_decodes_to_the_values_its_source_asserts(vector):
    frame, message = decoded(vector["hex"])
    assert frame.header.msg_id == int(vector["msg_id"], 16)
    assert frame.header.version == int(vector["version"])
    assert mismatches(vector.get("decoded") or {}, view(frame, message)) == []


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_the_standard_values_derived_from_the_frame_agree(vector):
    derived = vector.get("derived_here") or {}
    frame, message = decoded(vector["hex"])
    ours: dict[str, Any] = {"header": header_view(frame)}
    if isinstance(message, Position):
        ours["location"] = derived_view(message)
        ours["extras_order"] = [f"0x{extra_id:02X}" for extra_id in message.extras]
    if isinstance(message, PositionBatch):
        ours["items"] = [derived_view(position) for position in message.positions]
    standard = {
        part: (
            [{k: v for k, v in item.items() if k not in NOT_STANDARD} for item in values]
            if isinstance(values, list) and values and isinstance(values[0], dict)
            else {k: v for k, v in values.items() if k not in NOT_STANDARD}
            if isinstance(values, dict)
            else values
        )
        for part, values in derived.items()
    }
    assert mismatches(standard, ours) == []


@pytest.mark.parametrize("vector", WITH_RELATED, ids=ids(WITH_RELATED))
def test_the_published_twin_frames_decode_too(vector):
    _, message = decoded(vector["hex"])
    for related in vector["related_frames"]:
        twin_frame, twin = decoded(related["hex"])
        assert twin_frame.header.msg_id == int(vector["msg_id"], 16)
        assert type(twin) is type(message)
        if isinstance(message, Position) and isinstance(twin, Position):
            assert (twin.alarm, twin.status, twin.lat_raw, twin.lon_raw, twin.time) == (
                message.alarm,
                message.status,
                message.lat_raw,
                message.lon_raw,
                message.time,
            )
            temperature = re.search(r"0x06 carriage temperature = (-?\d+)", related.get("notes", ""))
            if temperature:
                assert twin.carriage_temperature_c == int(temperature[1])


# --- Replies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", WITH_REPLY, ids=ids(WITH_REPLY))
def test_the_published_reply_decodes_to_the_values_its_source_asserts(vector):
    expected = vector["expected_reply"]
    frame, message = decoded(expected["hex"])
    assert mismatches(expected["decoded"], view(frame, message)) == []


@pytest.mark.parametrize("vector", WITH_REPLY, ids=ids(WITH_REPLY))
def test_our_reply_echoes_the_request_as_the_source_expects(vector):
    request = decode_frame(bytes.fromhex(vector["hex"])).header
    expected = vector["expected_reply"]
    expected_header, expected_body = expected["decoded"]["header"], expected["decoded"]["body"]
    serial = expected_header.get("serial", 0)
    if request.msg_id == REGISTER:
        # The auth code is platform policy: we answer with the one this source expects.
        ours = registration_reply(request, serial, expected_body["result"], expected_body.get("auth_code"))
    else:
        ours = general_reply(request, serial, expected_body["result"])
    frame, message = decoded(ours.hex())
    assert mismatches(expected["decoded"], view(frame, message)) == []
    assert frame.header.phone == request.phone
    assert (frame.header.version, frame.header.protocol_version) == (
        request.version,
        request.protocol_version,
    )
    if request.msg_id == REGISTER:
        assert isinstance(message, RegistrationReply)
        assert message.ack_serial == request.serial
    else:
        assert isinstance(message, GeneralReply)
        assert (message.ack_serial, message.ack_msg_id) == (request.serial, request.msg_id)
    if serial == 0:
        assert ours.hex() == expected["hex"]


# --- Encoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", SERIALISED, ids=ids(SERIALISED))
def test_encoding_the_decoded_message_reproduces_the_published_frame(vector):
    frame, message = decoded(vector["hex"])
    assert encode_frame(frame.header, message.encode(frame.header.version)).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_encoding_the_decoded_message_decodes_back_to_it(vector):
    frame, message = decoded(vector["hex"])
    again, same = decoded(encode_frame(frame.header, message.encode(frame.header.version)).hex())
    assert again.header == frame.header
    assert same == message
