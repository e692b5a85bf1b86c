"""Bad input through the gateway: every refusal is a 4xx problem+json with a stable code, and nothing is written.

"Nothing written" means: the case list is empty for another consumer, the case service's tables
(cases, history, number counters, outbox, idempotency keys) hold no row, and the CASE stream holds
no event. A refused transition on an existing case leaves it at version 1 with its one event.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest
from sqlalchemy import text

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.pagination import encode_cursor
from citygrid.testing import stream_events
from tests.test_case_flow import REPORT

CASES = "/api/case/v1/cases"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
MIB = 1_048_576
CASE_TABLES = ("cases", "case_history", "case_number_counters", "outbox", "idempotency_keys")


# -- helpers -------------------------------------------------------------------------------------


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"urn:citygrid:problem:{code}"
    assert problem["title"]
    return problem


def assert_invalid(response, loc: list, error_type: str) -> dict:
    """A 422 ``validation_failed`` naming the offending field, without echoing the input back."""
    problem = assert_problem(response, 422, "validation_failed")
    assert {"loc": loc, "type": error_type} in [
        {"loc": error["loc"], "type": error["type"]} for error in problem["errors"]
    ], problem["errors"]
    assert all("input" not in error for error in problem["errors"])
    return problem


async def row_counts(stack) -> dict[str, int]:
    async with stack.case_runtime.db() as session:
        return {
            table: await session.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - fixed names
            for table in CASE_TABLES
        }


async def stream_message_count(nats_url: str, stream: str = "CASE") -> int:
    """Messages stored in ``stream`` (0 when it does not exist).

    Not ``stream_events(..., at_least=0)``: on a stream that exists but is empty it asks JetStream
    for message 0 and gets a BadRequestError.
    """
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        try:
            info = await client.jetstream().stream_info(stream)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await client.close()


async def assert_nothing_written(stack) -> None:
    listed = await stack.client.get(CASES, headers=stack.as_("reader"))
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"items": [], "next_cursor": None}
    assert await row_counts(stack) == dict.fromkeys(CASE_TABLES, 0)
    assert await stream_message_count(stack.infrastructure.nats_url) == 0


async def report_one(stack) -> str:
    created = await stack.client.post(CASES, json=REPORT, headers=stack.as_("clerk"))
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def assert_case_untouched(stack, case_id: str) -> None:
    detail = await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("reader"))
    assert detail.status_code == 200, detail.text
    case = detail.json()
    assert (case["status"], case["version"], case["unit"]) == ("reported", 1, None)
    assert [entry["action"] for entry in case["history"]] == ["report"]
    assert detail.headers["etag"] == '"1"'
    counts = await row_counts(stack)
    assert (counts["cases"], counts["case_history"]) == (1, 1)
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=1)
    assert [event.type for event in events] == ["case.case.reported.v1"]


def report_with(**changes) -> dict:
    body = copy.deepcopy(REPORT)
    body.update(changes)
    return body


def at(lon, lat) -> dict:
    return report_with(location={"type": "Point", "coordinates": [lon, lat]})


def raw_json(stack, consumer: str = "clerk", **headers: str) -> dict[str, str]:
    return stack.as_(consumer, **{"Content-Type": "application/json", **headers})


# -- the report body -----------------------------------------------------------------------------

INVALID_REPORTS = [
    pytest.param(
        report_with(description=42), ["body", "description"], "string_type", id="number-for-description"
    ),
    pytest.param(
        report_with(category_code=101), ["body", "category_code"], "string_type", id="number-for-category"
    ),
    pytest.param(
        report_with(district_code=440106), ["body", "district_code"], "string_type", id="number-for-district"
    ),
    pytest.param(
        at("east", "north"),
        ["body", "location", "coordinates", 0],
        "float_type",
        id="words-for-coordinates",
    ),
    pytest.param(
        report_with(location={"type": "Point", "coordinates": "113.3245,23.1291"}),
        ["body", "location", "coordinates"],
        "tuple_type",
        id="string-for-coordinate-pair",
    ),
    pytest.param(
        report_with(location="113.3245,23.1291"),
        ["body", "location"],
        "model_attributes_type",
        id="string-for-location",
    ),
    pytest.param(
        report_with(location={"type": "Point", "coordinates": [113.3245]}),
        ["body", "location", "coordinates", 1],
        "missing",
        id="one-coordinate",
    ),
    pytest.param(
        report_with(location={"type": "Point", "coordinates": [113.3, 23.1, 12.0]}),
        ["body", "location", "coordinates"],
        "too_long",
        id="three-coordinates",
    ),
    pytest.param(
        report_with(location={"type": "Polygon", "coordinates": [113.3245, 23.1291]}),
        ["body", "location", "type"],
        "literal_error",
        id="not-a-point",
    ),
    pytest.param(
        report_with(priority="urgent"), ["body", "priority"], "extra_forbidden", id="unknown-top-level-field"
    ),
    pytest.param(
        report_with(status="closed"), ["body", "status"], "extra_forbidden", id="status-cannot-be-set"
    ),
    pytest.param(
        report_with(location={**REPORT["location"], "crs": "EPSG:4326"}),
        ["body", "location", "crs"],
        "extra_forbidden",
        id="unknown-location-field",
    ),
    pytest.param(
        report_with(reporter={"name": "Li Ming", "is_admin": True}),
        ["body", "reporter", "is_admin"],
        "extra_forbidden",
        id="unknown-reporter-field",
    ),
    pytest.param(
        at(181, 23.1), ["body", "location", "coordinates", 0], "less_than_equal", id="longitude-181"
    ),
    pytest.param(
        at(-180.0001, 23.1),
        ["body", "location", "coordinates", 0],
        "greater_than_equal",
        id="longitude-below-180",
    ),
    pytest.param(
        at(113.3, -91), ["body", "location", "coordinates", 1], "greater_than_equal", id="latitude-91"
    ),
    pytest.param(
        at(113.3, 90.5), ["body", "location", "coordinates", 1], "less_than_equal", id="latitude-over-90"
    ),
    pytest.param(
        report_with(description="x" * 5000), ["body", "description"], "string_too_long", id="description-5000"
    ),
    pytest.param(
        report_with(description="   "), ["body", "description"], "string_too_short", id="blank-description"
    ),
    pytest.param(report_with(source="alien"), ["body", "source"], "enum", id="unknown-source"),
    pytest.param(report_with(source="INSPECTOR"), ["body", "source"], "enum", id="source-in-capitals"),
    pytest.param(
        report_with(district_code="999999"), ["body", "district_code"], "value_error", id="unknown-district"
    ),
    pytest.param(
        report_with(district_code="44010"),
        ["body", "district_code"],
        "string_pattern_mismatch",
        id="short-district",
    ),
    pytest.param(
        report_with(category_code="01a"),
        ["body", "category_code"],
        "string_pattern_mismatch",
        id="bad-category",
    ),
    pytest.param(
        report_with(address="a" * 301), ["body", "address"], "string_too_long", id="address-over-300"
    ),
    pytest.param(
        report_with(reporter={"phone": "call me"}),
        ["body", "reporter", "phone"],
        "string_pattern_mismatch",
        id="bad-phone",
    ),
    pytest.param({}, ["body", "description"], "missing", id="empty-object"),
    pytest.param(
        {k: v for k, v in REPORT.items() if k != "location"},
        ["body", "location"],
        "missing",
        id="no-location",
    ),
    pytest.param(None, ["body"], "model_attributes_type", id="json-null"),
    pytest.param([REPORT], ["body"], "model_attributes_type", id="json-array"),
    pytest.param("report", ["body"], "model_attributes_type", id="json-string"),
]


@pytest.mark.parametrize(("body", "loc", "error_type"), INVALID_REPORTS)
async def test_an_invalid_report_is_refused_with_422_naming_the_field_and_nothing_is_written(
    stack, body, loc, error_type
):
    response = await stack.client.post(CASES, content=json.dumps(body), headers=raw_json(stack))
    assert_invalid(response, loc, error_type)
    await assert_nothing_written(stack)


async def test_longitude_out_of_range_is_refused_and_nothing_is_written(stack):
    response = await stack.client.post(CASES, json=at(181, 23.1291), headers=stack.as_("clerk"))
    problem = assert_invalid(response, ["body", "location", "coordinates", 0], "less_than_equal")
    assert problem["instance"] == "/v1/cases"
    await assert_nothing_written(stack)


async def test_a_one_megabyte_description_under_the_body_limit_reaches_the_service_and_gets_422(stack):
    # 1 MB (10^6 characters) of description is a body under the 1 MiB limit: the service refuses
    # it on length, and the 422 does not echo the megabyte back.
    response = await stack.client.post(
        CASES, json=report_with(description="x" * 1_000_000), headers=stack.as_("clerk")
    )
    assert_invalid(response, ["body", "description"], "string_too_long")
    assert len(response.content) < 2_000
    await assert_nothing_written(stack)


async def test_a_body_over_one_mebibyte_is_refused_with_413_by_the_gateway_and_nothing_is_written(stack):
    response = await stack.client.post(
        CASES, json=report_with(description="x" * MIB), headers=stack.as_("clerk")
    )
    problem = assert_problem(response, 413, "http.payload_too_large")
    assert problem["instance"] == CASES  # the gateway's path: it never reached the case service
    assert str(MIB) in problem["detail"]
    await assert_nothing_written(stack)


async def test_a_streamed_body_over_one_mebibyte_without_content_length_is_refused_with_413(stack):
    body = json.dumps(report_with(description="x" * MIB)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await stack.client.post(CASES, content=chunks(), headers=raw_json(stack))
    assert "content-length" not in response.request.headers
    problem = assert_problem(response, 413, "http.payload_too_large")
    assert problem["instance"] == CASES
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"description": ', id="truncated"),
        pytest.param(b"{'description': 'single quotes'}", id="single-quotes"),
        pytest.param(b'{"description": "x",}', id="trailing-comma"),
        pytest.param(b"report this please", id="plain-words"),
        pytest.param(json.dumps(REPORT).encode()[:-1], id="missing-closing-brace"),
    ],
)
async def test_a_malformed_json_body_is_refused_with_400_and_nothing_is_written(stack, raw):
    response = await stack.client.post(CASES, content=raw, headers=raw_json(stack))
    problem = assert_problem(response, 400, "request.malformed_json")
    assert [error["type"] for error in problem["errors"]] == ["json_invalid"]
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("application/xml", "application/xml"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        ("multipart/form-data; boundary=x", "multipart/form-data"),
        (None, "nothing"),
    ],
)
async def test_a_json_body_sent_with_the_wrong_content_type_is_refused_with_415(stack, content_type, named):
    headers = stack.as_("clerk")
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await stack.client.post(CASES, content=json.dumps(REPORT), headers=headers)
    problem = assert_problem(response, 415, "http.unsupported_media_type")
    assert f"'{named}'" in problem["detail"]
    await assert_nothing_written(stack)


async def test_a_form_encoded_report_is_refused_with_415_and_nothing_is_written(stack):
    form = {k: v for k, v in REPORT.items() if isinstance(v, str)}
    response = await stack.client.post(CASES, data=form, headers=stack.as_("clerk"))
    problem = assert_problem(response, 415, "http.unsupported_media_type")
    assert "application/x-www-form-urlencoded" in problem["detail"]
    await assert_nothing_written(stack)


@pytest.mark.parametrize("content_type", [None, "application/json"])
async def test_an_empty_report_body_is_refused_with_422_body_missing(stack, content_type):
    headers = stack.as_("clerk") if content_type is None else raw_json(stack)
    response = await stack.client.post(CASES, content=b"", headers=headers)
    assert_invalid(response, ["body"], "missing")
    await assert_nothing_written(stack)


# -- transitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["not-a-uuid", "12345", "' OR 1=1 --", "0" * 33])
async def test_a_non_uuid_case_id_in_the_path_is_refused_with_422(stack, case_id):
    response = await stack.client.post(
        f"{CASES}/{case_id}/register", json={}, headers=stack.as_("clerk", **{"If-Match": '"1"'})
    )
    assert_invalid(response, ["path", "case_id"], "uuid_parsing")
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("register", None),
        ("reject", {"note": "not ours"}),
        ("dispatch", {"unit": "tianhe-sanitation"}),
        ("verify", {"passed": True}),
    ],
)
async def test_a_transition_on_an_unknown_case_is_refused_with_404_and_nothing_is_written(
    stack, action, body
):
    response = await stack.client.post(
        f"{CASES}/{UNKNOWN_ID}/{action}", json=body, headers=stack.as_("clerk", **{"If-Match": '"1"'})
    )
    problem = assert_problem(response, 404, "case.not_found")
    assert UNKNOWN_ID in problem["detail"]
    await assert_nothing_written(stack)


async def test_reading_an_unknown_case_is_404(stack):
    response = await stack.client.get(f"{CASES}/{UNKNOWN_ID}", headers=stack.as_("reader"))
    assert_problem(response, 404, "case.not_found")


@pytest.mark.parametrize(
    "if_match",
    ["garbage", "*", "", '""', 'W/""', '"v1"', '"-1"', '"1.0"', '"1", "2"', '"1234567890"', 'W/W/"1"'],
)
async def test_a_garbage_if_match_is_refused_with_400_and_the_case_is_untouched(stack, if_match):
    case_id = await report_one(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/register", json={}, headers=stack.as_("clerk", **{"If-Match": if_match})
    )
    assert_problem(response, 400, "http.invalid_if_match")
    await assert_case_untouched(stack, case_id)


async def test_an_if_match_of_unicode_digits_is_refused_with_400_by_the_case_service_itself(stack):
    # The gateway cannot forward a non-ASCII header today (pinned as a bug at the end of this file), so this goes to the service.
    case_id = await report_one(stack)
    clerk = Principal(
        subject="consumer:test",
        kind="consumer",
        name="clerk",
        roles=frozenset({"operator"}),
        scopes=frozenset({"cases:write"}),
    )
    response = await stack.client.post(
        f"{stack.case_url}/v1/cases/{case_id}/register",
        headers={PRINCIPAL_HEADER: stack.infrastructure.token(clerk, "case"), "If-Match": b'"\xb2"'},
    )
    assert_problem(response, 400, "http.invalid_if_match")
    await assert_case_untouched(stack, case_id)


@pytest.mark.parametrize(
    ("action", "body", "loc", "error_type"),
    [
        ("dispatch", {}, ["body", "unit"], "missing"),
        ("dispatch", {"unit": "   "}, ["body", "unit"], "string_too_short"),
        ("dispatch", {"unit": "u" * 101}, ["body", "unit"], "string_too_long"),
        ("dispatch", {"unit": 7}, ["body", "unit"], "string_type"),
        ("dispatch", {"unit": "u1", "priority": 1}, ["body", "priority"], "extra_forbidden"),
        ("register", {"note": "n" * 2001}, ["body", "note"], "string_too_long"),
        ("register", {"approved": True}, ["body", "approved"], "extra_forbidden"),
        ("reject", {"note": ""}, ["body", "note"], "string_too_short"),
        ("verify", {}, ["body", "passed"], "missing"),
        ("verify", {"passed": "maybe"}, ["body", "passed"], "bool_type"),
    ],
)
async def test_an_invalid_transition_body_is_refused_with_422_and_the_case_is_untouched(
    stack, action, body, loc, error_type
):
    case_id = await report_one(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/{action}", json=body, headers=stack.as_("clerk", **{"If-Match": '"1"'})
    )
    assert_invalid(response, loc, error_type)
    await assert_case_untouched(stack, case_id)


async def test_a_transition_with_a_text_plain_body_is_refused_with_415_and_the_case_is_untouched(stack):
    case_id = await report_one(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/register",
        content=b'{"note": "ok"}',
        headers=stack.as_("clerk", **{"If-Match": '"1"', "Content-Type": "text/plain"}),
    )
    assert_problem(response, 415, "http.unsupported_media_type")
    await assert_case_untouched(stack, case_id)


async def test_a_transition_with_malformed_json_is_refused_with_400_and_the_case_is_untouched(stack):
    case_id = await report_one(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/dispatch", content=b'{"unit": ', headers=raw_json(stack, **{"If-Match": '"1"'})
    )
    assert_problem(response, 400, "request.malformed_json")
    await assert_case_untouched(stack, case_id)


# -- the list endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "loc", "error_type"),
    [
        ({"status": "bogus"}, ["query", "status"], "enum"),
        ({"status": "REPORTED"}, ["query", "status"], "enum"),
        ({"limit": 501}, ["query", "limit"], "less_than_equal"),
        ({"limit": 0}, ["query", "limit"], "greater_than_equal"),
        ({"limit": -1}, ["query", "limit"], "greater_than_equal"),
        ({"limit": "ten"}, ["query", "limit"], "int_parsing"),
        ({"limit": "1e3"}, ["query", "limit"], "int_parsing"),
        ({"district": "tianhe"}, ["query", "district"], "string_pattern_mismatch"),
        ({"district": "440106;--"}, ["query", "district"], "string_pattern_mismatch"),
        ({"category": "0101%"}, ["query", "category"], "string_pattern_mismatch"),
        ({"cursor": "c" * 513}, ["query", "cursor"], "string_too_long"),
    ],
)
async def test_a_bad_list_query_is_refused_with_422_naming_the_parameter(stack, params, loc, error_type):
    response = await stack.client.get(CASES, params=params, headers=stack.as_("reader"))
    assert_invalid(response, loc, error_type)
    await assert_nothing_written(stack)


@pytest.mark.parametrize("when", ["yesterday", "2024-13-45T99:99:99Z", "1e30"])
async def test_a_reported_from_that_is_not_a_date_is_refused_with_422(stack, when):
    response = await stack.client.get(CASES, params={"reported_from": when}, headers=stack.as_("reader"))
    problem = assert_problem(response, 422, "validation_failed")
    assert [error["loc"] for error in problem["errors"]] == [["query", "reported_from"]]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        "W10",
        encode_cursor("2026-01-01T00:00:00+08:00"),
        encode_cursor("not a date", "not a uuid"),
    ],
)
async def test_a_cursor_this_api_did_not_issue_is_refused_with_400(stack, cursor):
    response = await stack.client.get(CASES, params={"cursor": cursor}, headers=stack.as_("reader"))
    assert_problem(response, 400, "pagination.invalid_cursor")


# -- nothing hostile gets a 5xx ------------------------------------------------------------------


def hostile_requests(case_id: str) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) of requests a careless or hostile client might send."""
    one = f"{CASES}/{case_id}"
    bodies: list[bytes] = [
        b"",
        b"{}",
        b"[]",
        b"null",
        b"0",
        b'"x"',
        b"\xff\xfe\x00\x01",
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"category_code": 1' + b"0" * 5000 + b"}",
        b'{"description": "\\ud800"}',
        b'{"location":{"type":"Point","coordinates":[1e400,1]}}',
        b'{"location":{"type":"Point","coordinates":[NaN,Infinity]}}',
        b'{"__proto__": {"admin": true}, "constructor": {"prototype": {}}}',
        b'{"a": 1, "a": 2}',
        b"\xef\xbb\xbf" + json.dumps(REPORT).encode(),
        json.dumps(report_with(description="\u202e\U0001f4a9 '); DROP TABLE cases; --")).encode(),
        json.dumps(report_with(description="<script>alert(1)</script>", address="${jndi:ldap://x}")).encode(),
        json.dumps(report_with(reporter={"name": "x" * 101, "phone": "1" * 21})).encode(),
        json.dumps(report_with(reporter=[])).encode(),
        json.dumps(at(-0.0, -0.0)).encode(),
        json.dumps(at(1e308, -1e308)).encode(),
        json.dumps(report_with(description="d" * 4000, address="a" * 300)).encode(),
    ]
    requests: list[tuple[str, str, dict]] = []
    for body in bodies:
        requests.append(("POST", CASES, {"content": body, "headers": {"Content-Type": "application/json"}}))
        requests.append(
            ("POST", f"{one}/dispatch", {"content": body, "headers": {"Content-Type": "application/json"}})
        )
    for content_type in [
        "application/json; charset=bogus",
        "APPLICATION/JSON",
        ";;;",
        "application/json, text/html",
    ]:
        requests.append(
            ("POST", CASES, {"content": json.dumps(REPORT), "headers": {"Content-Type": content_type}})
        )
    for if_match in ["*", '"0"', '"999999999"', '"000000001"', 'W/"1"', '"1"' * 100, "x" * 4000]:
        requests.append(("POST", f"{one}/register", {"json": {}, "headers": {"If-Match": if_match}}))
    for key in ["", "k" * 201, "tab\there", "retry-1"]:
        requests.append(("POST", CASES, {"json": REPORT, "headers": {"Idempotency-Key": key}}))
    for params in [
        {"status": "reported' OR '1'='1"},
        {"status": ["reported", "closed"]},
        {"limit": ["1", "2"]},
        {"limit": "99999999999999999999999"},
        {"district": "٤٤٠١٠٦"},
        {"category": "\x00"},
        {"reported_from": "\x00"},
        {"reported_from": "2020-01-01T00:00:00"},
        {"reported_to": "9999-12-31T23:59:59"},
        {"reported_from": "-1"},
        {"cursor": "W251bGwsbnVsbF0"},
        {"cursor": encode_cursor({"a": 1}, [1])},
        {"cursor": encode_cursor("2020-01-01T00:00:00", case_id)},
        {"unknown": "x" * 4000},
    ]:
        requests.append(("GET", CASES, {"params": params}))
    for path in [
        f"{CASES}/' OR 1=1--",
        f"{CASES}/" + "a" * 8000,
        f"{CASES}/%E4%B8%AD",
        f"{CASES}/{{{case_id}}}",
        f"{one}/teleport",
        f"{one}/register/again",
        f"{CASES}/..%2F..%2Fhealthz",
        "/api/case/v1/%2e%2e/metrics",
        "/api/case/v1",
        "/api/case/v1/",
        "/api/case/v1/admin/dead-letters",
        "/api/nowhere/v1/cases",
    ]:
        requests.append(("GET", path, {}))
        requests.append(("POST", path, {"json": {}, "headers": {"If-Match": '"1"'}}))
    for method in ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]:
        requests.append((method, CASES, {"json": REPORT}))
        requests.append((method, one, {"json": REPORT}))
    requests.append(("GET", CASES, {"headers": {"X-Request-ID": "<script>" * 50, "traceparent": "00-zz"}}))
    return requests


async def test_no_hostile_body_query_path_or_header_gets_a_5xx(stack):
    """A broad sweep: every answer is a 2xx/4xx, and every 4xx is problem+json with a code.

    Inputs that once got a 5xx have their own tests below as well.
    """
    case_id = await report_one(stack)
    failures = []
    for method, path, kwargs in hostile_requests(case_id):
        headers = stack.as_("clerk", **kwargs.pop("headers", {}))
        response = await stack.client.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 500:
            failures.append((method, path[:80], kwargs, response.status_code, response.text[:200]))
        elif response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
            assert response.json()["code"], (method, path)
    assert failures == []
    # The injection attempts were stored as text, not run: the table and the first case are there.
    detail = await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("reader"))
    assert detail.status_code == 200


# -- product bugs, pinned ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(report_with(description="bin\x00overflowing"), id="description"),
        pytest.param(report_with(address="Tianhe\x00Road"), id="address"),
        pytest.param(report_with(reporter={"name": "Li\x00Ming"}), id="reporter-name"),
    ],
)
async def test_a_nul_character_in_report_text_is_refused_with_422_not_a_server_error(stack, body):
    response = await stack.client.post(CASES, json=body, headers=stack.as_("clerk"))
    assert response.status_code == 422, response.text
    await assert_nothing_written(stack)


async def test_a_nul_character_in_a_transition_note_is_refused_with_422_not_a_server_error(stack):
    case_id = await report_one(stack)
    response = await stack.client.post(
        f"{CASES}/{case_id}/register",
        json={"note": "ok\x00"},
        headers=stack.as_("clerk", **{"If-Match": '"1"'}),
    )
    assert response.status_code == 422, response.text
    await assert_case_untouched(stack, case_id)


@pytest.mark.parametrize(
    "coordinates",
    [
        pytest.param(["113.3245", "23.1291"], id="numeric-strings"),
        pytest.param([True, False], id="booleans"),
    ],
)
async def test_coordinates_that_are_not_json_numbers_are_refused_and_nothing_is_written(stack, coordinates):
    body = report_with(location={"type": "Point", "coordinates": coordinates})
    response = await stack.client.post(CASES, json=body, headers=stack.as_("clerk"))
    assert response.status_code == 422, response.text
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"reported_from": "0001-01-01T00:00:00+14:00"}, id="reported-from-year-1"),
        pytest.param({"reported_to": "9999-12-31T23:59:59-14:00"}, id="reported-to-year-9999"),
        pytest.param({"cursor": encode_cursor("0001-01-01T00:00:00+14:00", UNKNOWN_ID)}, id="cursor-year-1"),
    ],
)
async def test_a_date_outside_the_databases_range_is_refused_with_4xx_not_a_server_error(stack, params):
    response = await stack.client.get(CASES, params=params, headers=stack.as_("reader"))
    assert 400 <= response.status_code < 500, response.text


async def test_a_header_value_with_a_latin1_byte_does_not_break_the_gateway(stack):
    headers = {**stack.as_("reader"), "X-Client-Note": b"caf\xe9"}
    response = await stack.client.get(CASES, headers=headers)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("escaped", ["%00", "a%0Db", "a%09b", "a%7Fb"])
async def test_a_percent_encoded_control_character_in_the_path_is_a_4xx_not_a_server_error(stack, escaped):
    response = await stack.client.get(f"{CASES}/{escaped}", headers=stack.as_("reader"))
    assert 400 <= response.status_code < 500, response.text
