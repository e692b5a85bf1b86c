"""EPCIS 2.0 for cylinders: GRAI codes, the typed models, and ObjectEvents ↔ our scans."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.gas.epcis.codes import (
    UnknownIdentifier,
    grai_check_digit,
    grai_epc_uri,
    gs1_check_digit,
    is_city_code,
    is_grai_code,
    parse_cylinder_identifier,
    parse_grai,
)
from services.gas.epcis.mapping import (
    FILLING_BIZ_STEP,
    NET_MASS_FIELD,
    SCAN_KINDS,
    MappedScan,
    Unmappable,
    cbv_term,
    context_prefixes,
    epcis_document,
    map_document,
    map_event,
    scan_to_object_event,
)
from services.gas.epcis.models import (
    AggregationEvent,
    EPCISDocument,
    EPCISQueryDocument,
    EpcisValidationError,
    ExtensionEvent,
    ObjectEvent,
    is_uri,
    parse_date_time,
    parse_document,
    parse_event,
)

GS1_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
CST = timezone(timedelta(hours=8))

# GRAIs of GS1's published examples (the EPCIS conformance corpus and the EPC Tag Data Standard).
SENSOR_EXAMPLE_14_GRAI = "https://id.example.com/8003/040123450007718765"
BLOCK4LOG_GRAI_CLASS = "https://id.gs1.org/8003/04000001111114"
OPENEPCIS_ALL_KEYS_GRAI = "urn:epc:id:grai:4012345.66666.87"
TDS_GRAI = "urn:epc:id:grai:0614141.12345.400"
# openepcis' Combination_of_different_event.json: its check digit should be 6.
OPENEPCIS_GRAI_WITH_WRONG_CHECK_DIGIT = "https://id.example.com/8003/030013450007718765"

STATION = "urn:epc:id:sgln:0614141.00777.0"
USER_ADDRESS = "urn:epc:id:sgln:0614141.00888.0"
GRAI_CODE = "0401234566666387"  # urn:epc:id:grai:4012345.66666.87
CITY_CODE = "GZ-TH-000123"


def object_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": "2026-12-01T08:30:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [OPENEPCIS_ALL_KEYS_GRAI],
        "readPoint": {"id": STATION},
    }
    event.update(fields)
    return {key: value for key, value in event.items() if value is not ...}


def document(*events, context=None):
    return {
        "@context": context or [GS1_CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-12-01T09:00:00+08:00",
        "epcisBody": {"eventList": list(events)},
    }


def mapped(event, context=None):
    return map_document(parse_document(document(event, context=context)))[0]


def unmappable_reason(event, context=None) -> str:
    with pytest.raises(Unmappable) as raised:
        mapped(event, context)
    return raised.value.reason


# --- GS1 check digits and GRAI forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "check"),
    [
        ("061414112345", "2"),  # GS1's GTIN example 0614141123452
        ("629104150021", "3"),  # GTIN-13 6291041500213
    ],
)
def test_gs1_check_digit_is_gs1s_mod_10(digits, check):
    assert gs1_check_digit(digits) == check


@pytest.mark.parametrize(
    ("first13", "check"),
    [
        ("0614141123452", "4"),
        ("0061414112345", "2"),  # urn:epc:id:grai:0614141.12345.400 (EPC Tag Data Standard)
        ("0401234500077", "1"),  # GS1 SensorDataExample14: …/8003/040123450007718765
        ("0400000111111", "4"),  # Block4Log: …/8003/04000001111114
        ("0401234566666", "3"),  # urn:epc:id:grai:4012345.66666.87 (openepcis, all GS1 keys)
        ("0401234555555", "4"),  # urn:epc:id:grai:4012345.55555.987 (openepcis, combination)
    ],
)
def test_grai_check_digit_of_the_grais_in_gs1s_examples(first13, check):
    assert grai_check_digit(first13) == check


@pytest.mark.parametrize("first13", ["061414112345", "06141411234521", "061414112345X", ""])
def test_grai_check_digit_needs_exactly_13_digits(first13):
    with pytest.raises(UnknownIdentifier):
        grai_check_digit(first13)


@pytest.mark.parametrize(
    ("identifier", "code"),
    [
        (OPENEPCIS_ALL_KEYS_GRAI, "0401234566666387"),
        (TDS_GRAI, "00614141123452400"),
        ("urn:epc:id:grai:4012345.55555.987", "04012345555554987"),
        ("urn:epc:id:grai:061414100001..S1", "00614141000012S1"),  # 12-digit company prefix, no asset type
        ("urn:epc:id:grai:0614141.12345.A%2F1", "00614141123452A/1"),  # an escaped serial
        (SENSOR_EXAMPLE_14_GRAI, "040123450007718765"),
        (BLOCK4LOG_GRAI_CLASS, "04000001111114"),  # no serial: an asset type
        ("https://id.gs1.org/8003/00614141123452400", "00614141123452400"),
        ("http://brand.example.com/dl/8003/00614141123452400", "00614141123452400"),
        ("https://id.gs1.org/8003/00614141123452400?linkType=gs1:certificationInfo", "00614141123452400"),
        ("https://id.gs1.org/8003/00614141123452400/extra#x", "00614141123452400"),
        ("https://id.gs1.org/8003/00614141123452A%2F1", "00614141123452A/1"),
        ("800300614141123452400", "00614141123452400"),
        ("(8003)00614141123452400", "00614141123452400"),
        ("(8003)04000001111114", "04000001111114"),
    ],
)
def test_parse_grai_reads_every_form_to_14_digits_and_the_serial(identifier, code):
    assert parse_grai(identifier) == code


def test_a_wrong_check_digit_is_refused_as_in_openepcis_combination_file():
    with pytest.raises(UnknownIdentifier, match="check digit 1 \\(expected 6\\)"):
        parse_grai(OPENEPCIS_GRAI_WITH_WRONG_CHECK_DIGIT)


@pytest.mark.parametrize(
    ("identifier", "complaint"),
    [
        ("urn:epc:id:grai:0614141.12345.400".replace("12345", "12346"), None),  # fine: its own check digit
        ("https://id.gs1.org/8003/00614141123453400", "check digit"),
        ("(8003)00614141123453400", "check digit"),
        ("https://id.gs1.org/8003/14000001111111", "filler 0"),
        ("urn:epc:id:sgtin:0614141.107346.2017", "not a GRAI"),
        ("https://id.gs1.org/01/70614141123451/21/2017", "not a GRAI"),
        ("urn:epc:id:grai:061414.12345.400", "12 digits"),
        ("urn:epc:id:grai:0614141.12345.", "12 digits"),
        ("urn:epc:id:grai:0614141.12345.A/1", "escaped"),
        ("urn:epc:id:grai:0614141.12345.%41", "not an escape"),
        ("https://id.gs1.org/8003/0061414112345", "14 digits"),
        ("(8003)00614141123452" + "S" * 17, "at most 16"),
        ("(8003)00614141123452A B", "AI 82"),
        ("GZ-TH-000123", "not a GRAI"),
    ],
)
def test_parse_grai_refuses_what_is_no_grai(identifier, complaint):
    if complaint is None:
        assert parse_grai(identifier).endswith("400")
        return
    with pytest.raises(UnknownIdentifier, match=complaint):
        parse_grai(identifier)


@pytest.mark.parametrize(
    ("company_prefix_length", "uri"),
    [
        (7, "urn:epc:id:grai:0614141.12345.400"),
        (9, "urn:epc:id:grai:061414112.345.400"),
        (12, "urn:epc:id:grai:061414112345..400"),
    ],
)
def test_grai_epc_uri_splits_at_the_company_prefix_and_reads_back(company_prefix_length, uri):
    assert grai_epc_uri("00614141123452400", company_prefix_length) == uri
    assert parse_grai(uri) == "00614141123452400"


def test_grai_epc_uri_escapes_the_serial():
    assert grai_epc_uri("00614141123452A/1?", 7) == "urn:epc:id:grai:0614141.12345.A%2F1%3F"
    assert parse_grai("urn:epc:id:grai:0614141.12345.A%2F1%3F") == "00614141123452A/1?"


@pytest.mark.parametrize(
    ("code", "company_prefix_length", "complaint"),
    [
        ("04000001111114", 7, "without serial"),
        ("00614141123453400", 7, "check digit"),
        ("00614141123452400", 5, "6 to 12 digits"),
        ("00614141123452400", 13, "6 to 12 digits"),
    ],
)
def test_grai_epc_uri_refuses_codes_without_serial_or_with_a_wrong_check_digit(
    code, company_prefix_length, complaint
):
    with pytest.raises(ValueError, match=complaint):
        grai_epc_uri(code, company_prefix_length)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GZ-TH-000123", True),
        ("0401234566666387", True),
        ("abcdef", True),
        ("abcde", False),
        ("A" * 41, False),
        ("urn:citygrid:cylinder:GZ-1", False),
        ("http-000123", False),
        ("HTTPS-000123", False),
        ("GZ TH 000123", False),
        ("GZ_TH_000123", False),
    ],
)
def test_is_city_code_is_the_contracts_cylinder_code_and_never_uri_like(value, expected):
    assert is_city_code(value) is expected


def test_is_grai_code_needs_the_filler_and_the_check_digit():
    assert is_grai_code("0401234566666387")
    assert not is_grai_code("0401234566666487")
    assert not is_grai_code("GZ-TH-000123")


@pytest.mark.parametrize(
    ("identifier", "code"),
    [
        ("urn:citygrid:cylinder:GZ-TH-000123", "GZ-TH-000123"),
        ("urn:citygrid:cylinder:0401234566666387", "0401234566666387"),
        (OPENEPCIS_ALL_KEYS_GRAI, "0401234566666387"),
        (SENSOR_EXAMPLE_14_GRAI, "040123450007718765"),
        ("(8003)0401234566666387", "0401234566666387"),
    ],
)
def test_parse_cylinder_identifier_reads_city_urns_and_grais(identifier, code):
    assert parse_cylinder_identifier(identifier) == code


@pytest.mark.parametrize(
    ("identifier", "complaint"),
    [
        ("urn:citygrid:cylinder:GZ 1", "not a city cylinder code"),
        ("urn:citygrid:cylinder:", "not a city cylinder code"),
        ("urn:epc:id:sgtin:0614141.107346.2017", "neither a GRAI nor"),
        ("GZ-TH-000123", "neither a GRAI nor"),
        (OPENEPCIS_GRAI_WITH_WRONG_CHECK_DIGIT, "check digit"),
        ("urn:epc:id:grai:0614141.12345.A%2F1", "cannot carry"),
    ],
)
def test_parse_cylinder_identifier_refuses_other_identifiers(identifier, complaint):
    with pytest.raises(UnknownIdentifier, match=complaint):
        parse_cylinder_identifier(identifier)


# --- The models ------------------------------------------------------------------------------------


def test_a_minimal_document_parses_to_typed_events():
    parsed = parse_document(json.dumps(document(object_event(bizStep="shipping"))).encode())
    assert isinstance(parsed, EPCISDocument)
    (event,) = parsed.events
    assert isinstance(event, ObjectEvent)
    assert event.biz_step == "shipping"
    assert event.event_time == datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert event.read_point is not None
    assert event.read_point.id == STATION


def test_extension_fields_are_kept_and_unknown_plain_fields_are_refused():
    parsed = parse_document(document(object_event(**{"example:myField": {"a": 1}, "urn:x:y": 2})))
    assert parsed.events[0].extensions == {"example:myField": {"a": 1}, "urn:x:y": 2}
    with pytest.raises(EpcisValidationError) as raised:
        parse_document(document(object_event(myField=1)))
    assert raised.value.errors == [
        "event 0: epcisBody.eventList[0]: unknown field 'myField': an extension field is named by a URI "
        "or a prefixed name such as 'example:myField'"
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"action": "CREATE"},
            "event 1: epcisBody.eventList[1].action: Input should be 'OBSERVE', 'ADD' or 'DELETE'",
        ),
        (
            {"eventTimeZoneOffset": "-0600"},
            "event 1: epcisBody.eventList[1].eventTimeZoneOffset: '-0600' is not",
        ),
        ({"eventTimeZoneOffset": "+14:30"}, "eventTimeZoneOffset: '+14:30' is not"),
        ({"eventTime": "22-07-2026"}, "eventTime: '22-07-2026' is not an RFC 3339 date-time"),
        ({"eventTime": "2026-02-30T00:00:00Z"}, "is not a date of the calendar"),
        ({"eventTime": "2026-12-01T08:30:00"}, "is not an RFC 3339 date-time"),
        ({"bizStep": "transforming"}, "'transforming' is neither a CBV 2.0 business step"),
        ({"bizStep": "urn:epcglobal:cbv:bizstep:shipping"}, "outside the CBV namespaces"),
        ({"disposition": "in_transport"}, "'in_transport' is neither a CBV 2.0 disposition"),
        ({"epcList": ["not a uri"]}, "epcList[0]: 'not a uri' is not an absolute URI"),
        ({"epcList": [TDS_GRAI, TDS_GRAI]}, "appears more than once"),
        ({"epcList": ..., "readPoint": ...}, "an ObjectEvent names what it is about"),
        (
            {"quantityList": [{"epcClass": "urn:c", "quantity": "10"}]},
            "quantity: '10' is not a number",
        ),
        (
            {"quantityList": [{"epcClass": "urn:c", "quantity": True}]},
            "quantity: True is not a number",
        ),
        (
            {"quantityList": [{"epcClass": "urn:c", "quantity": 10**400, "uom": "kg"}]},
            "quantityList[0].uom: 'kg'",
        ),
        ({"quantityList": [{"epcClass": "urn:c", "uom": "kg"}]}, "'kg' is not a UN/CEFACT unit code"),
        ({"quantityList": [{"epcClass": "urn:c", "ex:foo": 1}]}, "ex:foo: Extra inputs are not permitted"),
        ({"ilmd": {"ex:lot": "1"}}, "ilmd (instance/lot master data) comes only with action ADD"),
        ({"bizStep": None}, "bizStep: null is not a value of this field"),
        ({"persistentDisposition": {}}, "sets or unsets at least one disposition"),
        ({"readPoint": {"name": "station"}}, "readPoint.id: Field required"),
        ({"parentID": "urn:x"}, "unknown field 'parentID'"),
    ],
)
def test_refusals_name_the_event_the_field_and_the_problem(change, reason):
    with pytest.raises(EpcisValidationError) as raised:
        parse_document(document(object_event(), object_event(**change)))
    assert any(reason in line and line.startswith("event 1: ") for line in raised.value.errors), (
        raised.value.errors
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"@context": ...}, "@context: Field required"),
        ({"schemaVersion": 2.0}, "schemaVersion: Input should be a valid string (got 2.0)"),
        ({"type": "epcisDocument"}, "type: Input should be 'EPCISDocument'"),
        ({"format": "application/ld+json"}, "unknown field 'format'"),
        ({"creationDate": "2026-12-01"}, "creationDate: '2026-12-01' is not an RFC 3339 date-time"),
    ],
)
def test_document_level_refusals_name_the_field(change, reason):
    data = document(object_event())
    data.update(change)
    data = {key: value for key, value in data.items() if value is not ...}
    with pytest.raises(EpcisValidationError) as raised:
        parse_document(data)
    assert any(reason in line for line in raised.value.errors), raised.value.errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [(b"{", "not JSON"), (b"[]", "a JSON object"), (b'{"x": NaN}', "not JSON"), (b"\xff", "not JSON")],
)
def test_what_is_no_json_object_is_refused(text, reason):
    with pytest.raises(EpcisValidationError, match=reason):
        parse_document(text)


def test_the_other_event_types_and_extension_events_parse():
    aggregation = {
        "type": "AggregationEvent",
        "eventTime": "2026-12-01T08:30:00Z",
        "eventTimeZoneOffset": "+08:00",
        "action": "DELETE",
        "parentID": "urn:epc:id:sscc:0614141.1234567890",
    }
    extension = {
        "type": "https://example.com/CylinderWeighed",
        "eventTime": "2026-12-01T08:30:00Z",
        "eventTimeZoneOffset": "+08:00",
        "kg": 3,
    }
    parsed = parse_document(document(aggregation, extension))
    assert isinstance(parsed.events[0], AggregationEvent)
    assert isinstance(parsed.events[1], ExtensionEvent)
    with pytest.raises(EpcisValidationError, match="'CylinderWeighed' is not an absolute URI"):
        parse_document(document({**extension, "type": "CylinderWeighed"}))


def test_a_query_document_parses_with_its_results():
    data = {
        "@context": [GS1_CONTEXT],
        "type": "EPCISQueryDocument",
        "epcisBody": {
            "queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": [object_event()]}}
        },
    }
    parsed = parse_document(data)
    assert isinstance(parsed, EPCISQueryDocument)
    assert len(parsed.events) == 1


def test_a_bare_event_needs_its_own_context():
    assert isinstance(parse_event({**object_event(), "@context": GS1_CONTEXT}), ObjectEvent)
    with pytest.raises(EpcisValidationError, match="carries its own @context"):
        parse_event(object_event())


def test_date_times_keep_their_instant_whatever_the_spelling():
    assert parse_date_time("2005-04-03T20:33:31.116000-06:00") == datetime(
        2005, 4, 4, 2, 33, 31, 116000, tzinfo=UTC
    )
    assert parse_date_time("2026-12-01t08:30:00.123456789z") == datetime(
        2026, 12, 1, 8, 30, 0, 123456, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example:myField", True),
        ("urn:epc:id:sgtin:0614141.107346.2017", True),
        ("ni:///sha-256;df7b?ver=CBV2.0", True),
        ("https://[2001:db8::1]:8080/x?y#z", True),
        ("myField", False),
        ("shipping", False),
        ("https://id.gs1.org/01/ 1", False),
        ("1abc:x", False),
        ("urn:x\n", False),
    ],
)
def test_uris_are_rfc_3986_absolute_uris(value, expected):
    assert is_uri(value) is expected


# --- ObjectEvents → scans --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"bizStep": "commissioning", "action": "ADD"}, "commission"),
        ({"bizStep": "shipping"}, "dispatch"),
        ({"bizStep": "https://ref.gs1.org/cbv/BizStep-shipping"}, "dispatch"),
        ({"bizStep": "cbv:BizStep-shipping"}, "dispatch"),
        ({"bizStep": "receiving", "disposition": "in_progress"}, "deliver"),
        ({"bizStep": "receiving", "disposition": "returned"}, "recover"),
        ({"bizStep": "receiving", "disposition": "https://ref.gs1.org/cbv/Disp-returned"}, "recover"),
        ({"bizStep": "collecting"}, "recover"),
        ({"bizStep": "inspecting", "disposition": "conformant"}, "inspect"),
        ({"bizStep": "decommissioning", "action": "DELETE"}, "void"),
        ({"bizStep": "decommissioning"}, "void"),
        ({"bizStep": "destroying", "action": "DELETE"}, "scrap"),
        ({"bizStep": "destroying"}, "scrap"),
        ({"bizStep": FILLING_BIZ_STEP, NET_MASS_FIELD: 14.5}, "fill"),
    ],
)
def test_each_business_step_maps_to_its_scan(fields, kind):
    assert mapped(object_event(**fields)).kind == kind


def test_a_scan_carries_the_codes_the_time_in_the_events_offset_and_the_places():
    scan = mapped(
        object_event(
            bizStep="receiving",
            eventTime="2026-12-01T00:30:00Z",
            epcList=[OPENEPCIS_ALL_KEYS_GRAI, "urn:citygrid:cylinder:GZ-TH-000123"],
            bizLocation={"id": USER_ADDRESS},
            eventID="urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        )
    )
    assert scan == MappedScan(
        kind="deliver",
        cylinder_codes=("0401234566666387", "GZ-TH-000123"),
        at=datetime(2026, 12, 1, 8, 30, tzinfo=CST),
        read_point=STATION,
        biz_location=USER_ADDRESS,
        event_id="urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    )
    assert scan.at.utcoffset() == timedelta(hours=8)


def test_one_cylinder_in_two_identifier_syntaxes_is_one_cylinder():
    scan = mapped(
        object_event(bizStep="shipping", epcList=[TDS_GRAI, "https://id.gs1.org/8003/00614141123452400"])
    )
    assert scan.cylinder_codes == ("00614141123452400",)


@pytest.mark.parametrize(("disposition", "passed"), [("conformant", True), ("non_conformant", False)])
def test_an_inspection_passes_or_fails_by_its_disposition(disposition, passed):
    assert mapped(object_event(bizStep="inspecting", disposition=disposition)).passed is passed


def test_a_fill_reads_the_net_mass_also_with_compact_names_from_the_context():
    context = [GS1_CONTEXT, {"cg": "urn:citygrid:bizstep:"}, {"city": {"@id": "urn:citygrid:"}}]
    scan = mapped(object_event(bizStep="cg:filling", **{"city:netMassKg": 14}), context)
    assert (scan.kind, scan.net_mass_kg) == ("fill", 14.0)


def test_an_event_context_adds_to_the_documents_prefixes():
    event = object_event(
        bizStep="cg:filling", **{"@context": {"cg": "urn:citygrid:bizstep:"}, NET_MASS_FIELD: 9.5}
    )
    assert mapped(event).net_mass_kg == 9.5


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {
                "type": "AggregationEvent",
                "eventTime": "2026-12-01T08:30:00Z",
                "eventTimeZoneOffset": "+08:00",
                "action": "ADD",
                "parentID": "urn:epc:id:sscc:0614141.1234567890",
                "childEPCs": [OPENEPCIS_ALL_KEYS_GRAI],
            },
            "AggregationEvent is not a cylinder scan",
        ),
        (
            object_event(bizStep="sensor_reporting"),
            "bizStep 'sensor_reporting' is no step of a cylinder's life",
        ),
        (object_event(bizStep="https://example.com/bizStep/filling"), "is no step of a cylinder's life"),
        (object_event(bizStep="cg:filling"), "is no step"),  # cg is not declared
        (object_event(), "has no bizStep"),
        (
            object_event(bizStep="shipping", epcList=["urn:epc:id:sgtin:0614141.107346.2017"]),
            "epcList[0] is not a cylinder code",
        ),
        (object_event(bizStep="shipping", epcList=[OPENEPCIS_GRAI_WITH_WRONG_CHECK_DIGIT]), "check digit"),
        (object_event(bizStep="shipping", epcList=[BLOCK4LOG_GRAI_CLASS]), "a GRAI without serial"),
        (
            object_event(
                bizStep="shipping",
                epcList=...,
                quantityList=[{"epcClass": BLOCK4LOG_GRAI_CLASS, "quantity": 60}],
            ),
            "counts objects by class",
        ),
        (object_event(bizStep="shipping", epcList=[]), "names no cylinder"),
        (object_event(bizStep="shipping", action="DELETE"), "only decommissioning and destroying delete"),
        (object_event(bizStep="receiving", action="DELETE"), "action DELETE"),
        (object_event(bizStep="commissioning"), "commissioning is action ADD"),
        (object_event(bizStep="destroying", action="ADD"), "would issue the code it retires"),
        (object_event(bizStep="inspecting"), "verdict as disposition conformant or non_conformant"),
        (object_event(bizStep="inspecting", disposition="in_progress"), "verdict"),
        (object_event(bizStep=FILLING_BIZ_STEP), "carries the net mass in kilograms"),
        (object_event(bizStep=FILLING_BIZ_STEP, **{NET_MASS_FIELD: "14.5"}), "a positive number"),
        (object_event(bizStep=FILLING_BIZ_STEP, **{NET_MASS_FIELD: True}), "a positive number"),
        (object_event(bizStep=FILLING_BIZ_STEP, **{NET_MASS_FIELD: -1}), "a positive number"),
        (object_event(bizStep=FILLING_BIZ_STEP, **{NET_MASS_FIELD: 10**400}), "a positive number"),
        (
            object_event(
                bizStep=FILLING_BIZ_STEP,
                epcList=[TDS_GRAI, OPENEPCIS_ALL_KEYS_GRAI],
                **{NET_MASS_FIELD: 14.5},
            ),
            "names one cylinder",
        ),
        (
            object_event(bizStep="shipping", errorDeclaration={"declarationTime": "2026-12-02T00:00:00Z"}),
            "an error declaration corrects an earlier event",
        ),
    ],
)
def test_what_is_no_cylinder_scan_is_unmappable_with_a_reason(event, reason):
    assert reason in unmappable_reason(event)


def test_a_document_maps_whole_or_not_at_all():
    data = document(object_event(bizStep="shipping"), object_event(bizStep="sensor_reporting"))
    with pytest.raises(Unmappable) as raised:
        map_document(parse_document(data))
    assert raised.value.event_index == 1
    assert raised.value.reason.startswith("event 1: bizStep 'sensor_reporting'")


def test_cbv_terms_are_read_in_every_spelling():
    assert cbv_term("shipping", "BizStep") == "shipping"
    assert cbv_term("https://ref.gs1.org/cbv/BizStep-shipping", "BizStep") == "shipping"
    assert cbv_term("cbv:Disp-returned", "Disp") == "returned"
    assert cbv_term("old:returned", "Disp", {"old": "urn:epcglobal:cbv:disp:"}) == "returned"
    assert cbv_term("https://example.com/x", "BizStep") == "https://example.com/x"
    assert context_prefixes([GS1_CONTEXT, {"a": "urn:a:", "@vocab": "urn:v:", "b": {"@id": "urn:b:"}}]) == {
        "a": "urn:a:",
        "b": "urn:b:",
    }


# --- scans → ObjectEvents → scans ------------------------------------------------------------------

AT = datetime(2026, 12, 1, 8, 30, 15, 250000, tzinfo=CST)


def scan_of(kind: str, **fields) -> MappedScan:
    defaults: dict[str, Any] = {
        "cylinder_codes": (GRAI_CODE, CITY_CODE),
        "at": AT,
        "read_point": STATION,
        "biz_location": USER_ADDRESS,
        "event_id": "urn:uuid:0b9f3a3e-5d7e-4f1f-9d1e-2c3b4a5d6e7f",
        "passed": True if kind == "inspect" else None,
        "net_mass_kg": 14.5 if kind == "fill" else None,
    }
    if kind == "fill":
        defaults["cylinder_codes"] = (GRAI_CODE,)
    defaults.update(fields)
    return MappedScan(kind=kind, **defaults)


ROUND_TRIPS = [
    *(scan_of(kind) for kind in SCAN_KINDS),
    scan_of("inspect", passed=False),
    scan_of("dispatch", read_point=None, biz_location=None, event_id=None, cylinder_codes=(CITY_CODE,)),
    scan_of("deliver", at=datetime(2026, 12, 1, 0, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))),
    scan_of("recover", at=datetime(2026, 12, 1, 0, 0, tzinfo=UTC), cylinder_codes=("04012345000771876",)),
]


@pytest.mark.parametrize("scan", ROUND_TRIPS, ids=lambda scan: scan.kind)
def test_a_scan_survives_the_way_to_epcis_and_back(scan):
    event = scan_to_object_event(scan)
    text = json.dumps(epcis_document([event], created_at=AT)).encode()
    assert map_document(parse_document(text)) == [scan]


def test_grai_codes_travel_as_epc_uris_and_city_codes_as_city_urns():
    event = scan_to_object_event(scan_of("dispatch"))
    assert event["epcList"] == [OPENEPCIS_ALL_KEYS_GRAI, f"urn:citygrid:cylinder:{CITY_CODE}"]
    assert scan_to_object_event(scan_of("dispatch"), company_prefix_length=9)["epcList"][0] == (
        "urn:epc:id:grai:401234566.666.87"
    )
    assert scan_to_object_event(scan_of("void"))["action"] == "DELETE"
    assert scan_to_object_event(scan_of("commission"))["action"] == "ADD"
    assert scan_to_object_event(scan_of("fill"))[NET_MASS_FIELD] == 14.5


@pytest.mark.parametrize(
    ("scan", "complaint"),
    [
        (scan_of("dispatch", at=datetime(2026, 12, 1, 8, 30)), "aware"),
        (
            scan_of("dispatch", at=datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=14, minutes=30)))),
            "-14:00 to",
        ),
        (
            scan_of("dispatch", at=datetime(2026, 12, 1, tzinfo=timezone(timedelta(seconds=30)))),
            "whole minutes",
        ),
        (scan_of("dispatch", read_point="station 7"), "not an absolute URI"),
        (scan_of("dispatch", event_id="event 7"), "not an absolute URI"),
        (scan_of("dispatch", passed=True), "only an inspection"),
        (scan_of("inspect", passed=None), "only an inspection"),
        (scan_of("fill", net_mass_kg=None), "only a fill"),
        (scan_of("fill", cylinder_codes=(GRAI_CODE, CITY_CODE)), "one cylinder"),
        (scan_of("fill", net_mass_kg=0.0), "positive net mass"),
        (scan_of("dispatch", cylinder_codes=()), "each once"),
        (scan_of("dispatch", cylinder_codes=(CITY_CODE, CITY_CODE)), "each once"),
        (scan_of("dispatch", cylinder_codes=("not a code",)), "not a cylinder code"),
        (scan_of("weigh"), "not a scan kind"),
    ],
)
def test_scans_epcis_cannot_tell_are_refused(scan, complaint):
    with pytest.raises(ValueError, match=complaint):
        scan_to_object_event(scan)


def test_map_event_takes_the_documents_prefixes():
    event = parse_document(document(object_event(bizStep="cg:filling", **{NET_MASS_FIELD: 12.0}))).events[0]
    assert map_event(event, prefixes={"cg": "urn:citygrid:bizstep:"}).kind == "fill"
    with pytest.raises(Unmappable, match="is no step"):
        map_event(event)


def test_a_json_integer_beyond_any_float_is_still_a_number():
    parsed = parse_document(document(object_event(quantityList=[{"epcClass": "urn:c", "quantity": 10**400}])))
    event = parsed.events[0]
    assert isinstance(event, ObjectEvent)
    assert event.quantity_list is not None
    assert event.quantity_list[0].quantity == 10**400
