"""The shared kit's pure parts: cursors, If-Match, masking, event envelopes and principal tokens."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from citygrid.auth import (
    InvalidToken,
    MissingToken,
    Principal,
    PrincipalVerifier,
    generate_keypair,
    sign_principal,
)
from citygrid.events import CloudEvent, EventData, envelope, stream_name, stream_subjects
from citygrid.masking import mask_address, mask_id_number, mask_name, mask_phone
from citygrid.pagination import InvalidCursor, decode_cursor, encode_cursor
from citygrid.versioning import IfMatchRequired, InvalidIfMatch, etag, expected_version
from contract.case import CaseRegistered

# --- cursors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        (42,),
        ("2026-11-25T08:00:00+00:00", "0193f0a2-7c1e-7a00-8000-000000000000"),
        ("440106-20261125-000042", 7, None),
        ("张三", 1.5, True),
    ],
)
def test_a_cursor_round_trips_its_sort_key(key):
    assert decode_cursor(encode_cursor(*key), arity=len(key)) == list(key)


def test_a_cursor_is_url_safe_and_unpadded():
    cursor = encode_cursor("a" * 50, "??>>??", 10**12)
    assert "=" not in cursor
    assert "+" not in cursor
    assert "/" not in cursor


def test_datetimes_and_uuids_travel_in_a_cursor_as_their_string_form():
    moment = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    ident = uuid.UUID("0193f0a2-7c1e-7a00-8000-000000000000")
    assert decode_cursor(encode_cursor(moment, ident), arity=2) == [str(moment), str(ident)]


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("not a cursor", id="words"),
        pytest.param("!!!!", id="no-base64-characters"),
        pytest.param("a", id="impossible-base64-length"),
        pytest.param("bm90IGpzb24", id="base64-of-non-json"),
        pytest.param("_-_-", id="base64-of-non-utf8"),
        pytest.param("e30", id="json-object-not-list"),
        pytest.param("NDI", id="json-number-not-list"),
        pytest.param("光标", id="non-ascii"),
        # A forged cursor whose text the database would refuse.
        pytest.param(encode_cursor("code\x00"), id="nul-in-a-value"),
    ],
)
def test_a_garbage_cursor_is_invalid(cursor):
    with pytest.raises(InvalidCursor) as raised:
        decode_cursor(cursor, arity=1)
    assert raised.value.code == "pagination.invalid_cursor"
    assert raised.value.status == 400


@pytest.mark.parametrize(("issued", "expected"), [(1, 2), (2, 1), (3, 2), (0, 1)])
def test_a_cursor_of_the_wrong_arity_is_invalid(issued, expected):
    cursor = encode_cursor(*range(issued))
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, arity=expected)


# --- If-Match ---------------------------------------------------------------------------------


def test_the_etag_of_a_version_is_the_quoted_number():
    assert etag(3) == '"3"'


@pytest.mark.parametrize("header", ['"3"', 'W/"3"', "3", ' "3" ', '"003"'])
def test_if_match_gives_the_version_the_client_last_saw(header):
    assert expected_version(header) == 3


def test_an_etag_round_trips_through_if_match():
    assert expected_version(etag(12345)) == 12345


def test_a_missing_if_match_is_a_precondition_required():
    with pytest.raises(IfMatchRequired) as raised:
        expected_version(None)
    assert raised.value.code == "http.if_match_required"
    assert raised.value.status == 428


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param('""', id="empty-etag"),
        pytest.param("*", id="star"),
        pytest.param('"abc"', id="letters"),
        pytest.param('"-1"', id="negative"),
        pytest.param('"1.5"', id="decimal"),
        pytest.param('"3", "4"', id="list"),
        pytest.param("W/", id="weak-marker-only"),
        pytest.param('"1234567890"', id="ten-digits"),
        pytest.param('"' + "9" * 200 + '"', id="huge"),
    ],
)
def test_a_garbage_if_match_is_invalid(header):
    with pytest.raises(InvalidIfMatch) as raised:
        expected_version(header)
    assert raised.value.code == "http.invalid_if_match"
    assert raised.value.status == 400


def test_a_nine_digit_version_is_still_accepted():
    assert expected_version('"999999999"') == 999_999_999


@pytest.mark.parametrize("header", ['"²"', '"¹"', '"³"'])
def test_an_if_match_with_superscript_digits_is_invalid(header):
    with pytest.raises(InvalidIfMatch):
        expected_version(header)


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+8613812345678", "+86*******5678"),
        ("02012345678", "020****5678"),
    ],
)
def test_a_phone_keeps_its_first_three_and_last_four_digits(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("phone", ["", "1", "110", "1234567"])
def test_a_phone_of_seven_characters_or_fewer_is_masked_entirely(phone):
    assert mask_phone(phone) == "*" * len(phone)


def test_a_masked_phone_keeps_its_length():
    assert len(mask_phone("13812345678") or "") == 11


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张**"),
        ("欧阳娜娜", "欧**"),
        ("Li Ming", "L**"),
        ("张", "**"),
    ],
)
def test_a_name_keeps_only_its_first_character_and_not_its_length(name, masked):
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("440106199001011234", "440106********1234"),
        ("44010619900101123X", "440106********123X"),
        ("440106900101123", "440106*****1123"),
    ],
)
def test_an_id_number_keeps_its_region_prefix_and_last_four(number, masked):
    assert mask_id_number(number) == masked


@pytest.mark.parametrize("number", ["", "1234", "1234567890"])
def test_an_id_number_of_ten_characters_or_fewer_is_masked_entirely(number):
    assert mask_id_number(number) == "*" * len(number)


def test_an_address_keeps_its_names_and_masks_its_numbers():
    assert mask_address("广州市天河区天河路385号") == "广州市天河区天河路**号"
    assert mask_address("Tianhe Road bus stop") == "Tianhe Road bus stop"
    assert mask_address("天河区") == "天河区"


@pytest.mark.parametrize("mask", [mask_phone, mask_name, mask_id_number, mask_address])
def test_nothing_to_mask_stays_nothing(mask):
    assert mask(None) is None


def test_an_empty_name_stays_empty():
    assert mask_name("") == ""


# --- event envelopes --------------------------------------------------------------------------


class ThingHappened(EventData):
    subject: ClassVar[str] = "demo.thing.happened"

    thing_id: str
    count: int


class ThingHappenedV2(EventData):
    subject: ClassVar[str] = "demo.thing.happened"
    schema_version: ClassVar[int] = 2

    thing_id: str


def test_an_event_type_is_its_subject_and_schema_version():
    assert ThingHappened.event_type() == "demo.thing.happened.v1"
    assert ThingHappenedV2.event_type() == "demo.thing.happened.v2"
    assert ThingHappened.domain() == "demo"


def test_an_envelope_names_type_source_subject_and_carries_the_data():
    event = envelope(
        ThingHappened(thing_id="t-1", count=3),
        source="demo-service",
        aggregate_id="t-1",
        aggregate_version=1,
        traceparent="tp",
    )
    assert event.specversion == "1.0"
    assert event.type == "demo.thing.happened.v1"
    assert event.source == "citygrid/demo-service"
    assert event.subject == "t-1"
    assert event.traceparent == "tp"
    assert event.datacontenttype == "application/json"
    assert event.data == {"thing_id": "t-1", "count": 3}


def test_an_envelope_id_is_a_uuid7_string():
    event = envelope(
        ThingHappened(thing_id="t", count=1), source="demo", aggregate_id="t", aggregate_version=1
    )
    assert isinstance(event.id, str)
    assert uuid.UUID(event.id).version == 7
    assert str(uuid.UUID(event.id)) == event.id


def test_envelope_ids_are_unique_and_time_ordered():
    ids = [
        envelope(
            ThingHappened(thing_id="t", count=i), source="demo", aggregate_id="t", aggregate_version=1
        ).id
        for i in range(20)
    ]
    assert len(set(ids)) == 20
    timestamps = [uuid.UUID(i).int >> 80 for i in ids]  # the 48-bit millisecond prefix
    assert timestamps == sorted(timestamps)


def test_an_envelope_is_stamped_with_the_current_utc_time():
    before = datetime.now(UTC)
    event = envelope(
        ThingHappened(thing_id="t", count=1), source="demo", aggregate_id="t", aggregate_version=1
    )
    after = datetime.now(UTC)
    assert event.time.tzinfo is not None
    assert before <= event.time <= after


@pytest.mark.parametrize(("data", "subject"), [(ThingHappened, "demo.thing.happened")])
def test_the_nats_subject_is_the_type_without_its_version(data, subject):
    event = envelope(data(thing_id="t", count=1), source="demo", aggregate_id="t", aggregate_version=1)
    assert event.nats_subject == subject


def test_a_second_schema_version_travels_on_the_same_nats_subject():
    event = envelope(ThingHappenedV2(thing_id="t"), source="demo", aggregate_id="t", aggregate_version=1)
    assert event.type == "demo.thing.happened.v2"
    assert event.nats_subject == "demo.thing.happened"


def test_an_envelope_survives_json_and_gives_its_payload_back():
    data = ThingHappened(thing_id="t-9", count=9)
    event = envelope(data, source="demo", aggregate_id="t-9", aggregate_version=1)
    again = CloudEvent.model_validate_json(event.model_dump_json())
    assert again == event
    assert ThingHappened.from_envelope(again) == data


def test_a_case_event_has_the_contracted_type_and_subject():
    assert CaseRegistered.event_type() == "case.case.registered.v1"
    event = CloudEvent(
        id="x", source="citygrid/case", type=CaseRegistered.event_type(), time=datetime.now(UTC)
    )
    assert event.nats_subject == "case.case.registered"


def test_each_domain_has_one_stream_holding_all_its_subjects():
    assert stream_name("case") == "CASE"
    assert stream_subjects("case") == ["case.>"]


# --- principal tokens -------------------------------------------------------------------------

PRIVATE_KEY, PUBLIC_KEY = generate_keypair()
OTHER_PRIVATE_KEY, OTHER_PUBLIC_KEY = generate_keypair()

CLERK = Principal(
    subject="consumer:0193f0a2-7c1e-7a00-8000-000000000000",
    kind="consumer",
    name="clerk",
    roles=frozenset({"operator", "dispatcher"}),
    scopes=frozenset({"cases:read", "cases:write"}),
    district="440106",
)


def verifier(audience: str = "case", public_key: str = PUBLIC_KEY) -> PrincipalVerifier:
    return PrincipalVerifier(public_key=public_key, audience=audience)


def test_a_generated_keypair_is_a_pair_of_pems():
    assert PRIVATE_KEY.startswith("-----BEGIN PRIVATE KEY-----")
    assert PUBLIC_KEY.startswith("-----BEGIN PUBLIC KEY-----")
    assert PRIVATE_KEY != OTHER_PRIVATE_KEY


def test_a_signed_principal_verifies_to_the_same_principal():
    token = sign_principal(CLERK, private_key=PRIVATE_KEY, audience="case")
    assert verifier().verify(token) == CLERK


@pytest.mark.parametrize(
    "principal",
    [
        Principal(subject="person:42", kind="person", name="Li Ming"),
        Principal(subject="service:vision", kind="service", name="vision", roles=frozenset({"x"})),
        Principal(
            subject="person:7",
            kind="person",
            name="Chen Jie",
            roles=frozenset({"handler"}),
            unit="tianhe-sanitation",
        ),
    ],
)
def test_principals_of_every_kind_round_trip(principal):
    token = sign_principal(principal, private_key=PRIVATE_KEY, audience="case")
    assert verifier().verify(token) == principal


def test_a_token_for_another_service_is_invalid():
    token = sign_principal(CLERK, private_key=PRIVATE_KEY, audience="gas")
    with pytest.raises(InvalidToken) as raised:
        verifier(audience="case").verify(token)
    assert raised.value.code == "auth.invalid_internal_token"
    assert raised.value.status == 401


def test_an_expired_token_is_invalid():
    token = sign_principal(
        CLERK, private_key=PRIVATE_KEY, audience="case", ttl_seconds=60, now=time.time() - 3600
    )
    with pytest.raises(InvalidToken):
        verifier().verify(token)


def test_a_token_within_its_lifetime_is_valid_even_if_issued_a_little_earlier():
    token = sign_principal(
        CLERK, private_key=PRIVATE_KEY, audience="case", ttl_seconds=60, now=time.time() - 30
    )
    assert verifier().verify(token) == CLERK


def test_a_token_signed_with_another_key_is_invalid():
    token = sign_principal(CLERK, private_key=OTHER_PRIVATE_KEY, audience="case")
    with pytest.raises(InvalidToken):
        verifier().verify(token)


def test_a_token_from_another_issuer_is_invalid():
    token = sign_principal(CLERK, private_key=PRIVATE_KEY, audience="case", issuer="someone-else")
    with pytest.raises(InvalidToken):
        verifier().verify(token)


def test_a_tampered_token_is_invalid():
    token = sign_principal(CLERK, private_key=PRIVATE_KEY, audience="case")
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        verifier().verify(f"{header}.{payload}.{flipped}")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "Bearer x", "eyJhbGciOiJub25lIn0.e30."])
def test_a_garbage_token_is_invalid(token):
    with pytest.raises(InvalidToken):
        verifier().verify(token)


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_refused_as_missing(token):
    with pytest.raises(MissingToken) as raised:
        verifier().verify(token)
    assert raised.value.code == "auth.missing_internal_token"
    assert raised.value.status == 401


def test_a_service_without_a_public_key_accepts_no_token():
    token = sign_principal(CLERK, private_key=PRIVATE_KEY, audience="case")
    with pytest.raises(InvalidToken):
        verifier(public_key="").verify(token)
