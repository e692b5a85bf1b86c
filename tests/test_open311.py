"""Open311 GeoReport v2 through the gateway, spoken as the spec writes it: form POSTs with ``api_key``,
``.xml`` read with xml.etree, ``.json`` read as the spec's lists; reads also by the ``georeport``
client library, unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from georeport import GeoReport
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citygrid.testing import serve_app, stream_events, wait_until
from gateway.main import create_app as create_gateway_app
from services.case.main import create_app as create_case_app
from tests.conftest import Stack, case_settings, gateway_settings, register_consumers
from tests.test_case_flow import step

BASE = "/open311/v2"
# A report of an overflowing bin at the Tianhe Road bus stop, as a citizen's app sends it.
FORM = {
    "service_code": "CG-20106",
    "lat": "23.1291",
    "long": "113.3245",
    "address_string": "Tianhe Road bus stop",
    "description": "The bin at the bus stop is overflowing",
    "first_name": "Ming",
    "last_name": "Li",
    "phone": "138 1234 5678",
    "email": "li.ming@example.com",
    "device_id": "phone-7",
    "media_url": "https://photos.example.com/bin.jpg",
    "attribute[FLOOR]": "ground",
}


class Recorder:
    """What reached the case service: every query string and body, to prove the key stayed behind."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(scope.get("query_string", b""))

        async def recording_receive() -> Message:
            message = await receive()
            self.seen.append(message.get("body", b""))
            return message

        await self.app(scope, recording_receive, send)


@pytest.fixture
async def open311_factory(infrastructure, databases, clean):
    @contextlib.asynccontextmanager
    async def start(**gateway_overrides: Any) -> AsyncIterator[tuple[Stack, Recorder]]:
        """The case service behind a gateway with the gateway's defaults, but for ``gateway_overrides``."""
        case_app = create_case_app(case_settings(infrastructure, databases))
        recorder = Recorder(case_app)
        async with serve_app(recorder) as case_url:  # type: ignore[arg-type]
            settings = gateway_settings(infrastructure, databases, case_url, **gateway_overrides)
            api_keys = await register_consumers(databases["gateway"])
            async with (
                serve_app(create_gateway_app(settings)) as gateway_url,
                httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
            ):
                stack = Stack(infrastructure, gateway_url, case_url, case_app, client, api_keys)
                await wait_until(stack.case_runtime.messaging_ready.is_set)
                yield stack, recorder

    return start


@pytest.fixture
async def open311(open311_factory) -> AsyncIterator[tuple[Stack, Recorder]]:
    async with open311_factory() as running:
        yield running


def xml_of(response: httpx.Response) -> ElementTree.Element:
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ElementTree.fromstring(response.content)  # noqa: S314 - our own server's answer


def json_of(response: httpx.Response) -> object:
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


async def post_request(stack: Stack, fmt: str = "xml", consumer: str = "reporter", **fields: str):
    form = {**FORM, "api_key": stack.api_keys[consumer], **fields}
    return await stack.client.post(f"{BASE}/requests.{fmt}", data=form)


async def test_discovery_names_the_v2_endpoint_and_both_formats(open311):
    stack, _ = open311
    key = {"api_key": stack.api_keys["reader"]}
    root = xml_of(await stack.client.get(f"{BASE}/discovery.xml", params=key))
    assert root.tag == "discovery"
    endpoint = root.find("endpoints/endpoint")
    assert endpoint is not None
    assert endpoint.findtext("specification") == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint.findtext("url") == f"{stack.gateway_url}/open311/v2"
    assert [f.text for f in endpoint.findall("formats/format")] == ["text/xml", "application/json"]
    document = json_of(await stack.client.get(f"{BASE}/discovery.json", params=key))
    assert document["endpoints"][0]["formats"] == ["text/xml", "application/json"]


async def test_services_are_the_active_categories_with_their_open311_codes_and_groups(open311):
    stack, _ = open311
    key = {"api_key": stack.api_keys["reader"]}
    services = json_of(await stack.client.get(f"{BASE}/services.json", params=key))
    by_code = {service["service_code"]: service for service in services}
    assert by_code["CG-20106"] == {
        "service_code": "CG-20106",
        "service_name": "Overflowing bin",
        "description": "Overflowing bin (垃圾满溢)",
        "metadata": False,
        "type": "realtime",
        "keywords": "垃圾满溢, overflow, 满溢",
        "group": "City appearance and environment",
    }
    root = xml_of(await stack.client.get(f"{BASE}/services.xml", params=key))
    assert root.tag == "services"
    assert len(root.findall("service")) == len(services)
    bin_service = next(s for s in root.findall("service") if s.findtext("service_code") == "CG-20106")
    assert bin_service.findtext("metadata") == "false"
    assert bin_service.findtext("group") == "City appearance and environment"


async def test_a_service_definition_has_no_extra_attributes_and_an_unknown_one_is_a_404(open311):
    stack, _ = open311
    key = {"api_key": stack.api_keys["reader"]}
    root = xml_of(await stack.client.get(f"{BASE}/services/CG-20106.xml", params=key))
    assert root.tag == "service_definition"
    assert root.findtext("service_code") == "CG-20106"
    assert json_of(await stack.client.get(f"{BASE}/services/CG-20106.json", params=key)) == {
        "service_code": "CG-20106",
        "attributes": [],
    }
    missing = await stack.client.get(f"{BASE}/services/CG-99999.xml", params=key)
    assert missing.status_code == 404
    error = xml_of(missing).find("error")
    assert error is not None
    assert error.findtext("code") == "404"
    assert error.findtext("problem") == "open311.unknown_service"
    missing_json = await stack.client.get(f"{BASE}/services/CG-99999.json", params=key)
    assert missing_json.status_code == 404
    assert json_of(missing_json)[0]["code"] == 404


async def test_a_form_post_with_api_key_reports_a_public_case_with_the_reporter_kept_private(open311):
    stack, recorder = open311
    created = await post_request(stack)
    assert created.status_code == 201, created.text
    request = xml_of(created).find("request")
    assert request is not None
    number = request.findtext("service_request_id")
    assert number is not None
    assert number.startswith("440106-")  # the nearest district to the bus stop: Tianhe
    assert request.findtext("service_notice") == "To be fixed within 2 working hours of dispatch."
    assert request.findtext("token")

    cases = (
        await stack.client.get(
            "/api/case/v1/cases", params={"district": "440106"}, headers=stack.as_("admin")
        )
    ).json()["items"]
    assert len(cases) == 1
    case = cases[0]
    assert case["number"] == number
    assert case["source"] == "public"
    assert case["category_code"] == "20106"
    assert case["location"]["coordinates"] == [113.3245, 23.1291]
    assert case["reporter"] == {"name": "Ming Li", "phone": "13812345678", "email": "li.ming@example.com"}
    masked = (await stack.client.get(f"/api/case/v1/cases/{case['id']}", headers=stack.as_("reader"))).json()
    assert masked["reporter"] == {"name": "M**", "phone": "138****5678", "email": "l***@example.com"}

    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=1)
    assert [e.type for e in events] == ["case.case.reported.v1"]
    reached = b"".join(recorder.seen)
    assert b"service_code=CG-20106" in reached
    assert stack.api_keys["reporter"].encode() not in reached
    assert b"api_key" not in reached


async def test_a_request_shows_status_notes_agency_and_expected_time_and_never_the_reporter(open311):
    stack, _ = open311
    created = json_of(await post_request(stack, fmt="json"))
    number = created[0]["service_request_id"]
    key = {"api_key": stack.api_keys["reader"]}

    (request,) = json_of(await stack.client.get(f"{BASE}/requests/{number}.json", params=key))
    assert request["status"] == "open"
    assert request["status_notes"] == "Received; waiting to be registered as a case."
    assert request["agency_responsible"] == "Tianhe District City Management"
    assert request["expected_datetime"] is None
    assert request["media_url"] == "https://photos.example.com/bin.jpg"
    assert (request["lat"], request["long"]) == (23.1291, 113.3245)
    assert datetime.fromisoformat(request["requested_datetime"]).utcoffset() == timedelta(hours=8)

    case_id = created[0]["token"]
    for action, version, body in [
        ("register", 1, None),
        ("dispatch", 2, {"unit": "tianhe-sanitation"}),
        ("accept", 3, None),
    ]:
        response = await stack.client.post(
            f"/api/case/v1/cases/{case_id}/{action}",
            json=body,
            headers=stack.as_("clerk", **{"If-Match": f'"{version}"'}),
        )
        assert response.status_code == 200, response.text
    root = xml_of(await stack.client.get(f"{BASE}/requests/{number}.xml", params=key))
    request_xml = root.find("request")
    assert request_xml is not None
    assert request_xml.findtext("status") == "open"
    assert request_xml.findtext("agency_responsible") == "tianhe-sanitation"
    assert request_xml.findtext("status_notes") == "The responsible unit is handling it."
    expected = request_xml.findtext("expected_datetime")
    assert expected
    assert datetime.fromisoformat(expected).utcoffset() == timedelta(hours=8)
    text = ElementTree.tostring(root, encoding="unicode")
    for private in ("Ming", "13812345678", "5678", "li.ming@example.com", "phone-7"):
        assert private not in text

    for action, version, body in [("handle", 4, None), ("verify", 5, {"passed": True})]:
        response = await step(stack, case_id, action, version, body)
        assert response.status_code == 200, response.text
    (closed,) = json_of(await stack.client.get(f"{BASE}/requests/{number}.json", params=key))
    assert closed["status"] == "closed"
    assert closed["status_notes"] == "Fixed and verified on site."
    assert closed["expected_datetime"] is None

    token = json_of(await stack.client.get(f"{BASE}/tokens/{case_id}.json", params=key))
    assert token == [{"service_request_id": number, "token": case_id}]


async def test_the_request_list_filters_by_id_service_status_and_dates_within_90_days(open311):
    stack, _ = open311
    key = {"api_key": stack.api_keys["reader"]}
    bin_number = json_of(await post_request(stack, fmt="json"))[0]["service_request_id"]
    cover = json_of(await post_request(stack, fmt="json", service_code="CG-10101"))
    cover_number = cover[0]["service_request_id"]
    inspector_report = {
        "category_code": "20106",
        "description": "Seen on patrol",
        "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
        "district_code": "440106",
        "source": "inspector",
    }
    made = await stack.client.post("/api/case/v1/cases", json=inspector_report, headers=stack.as_("clerk"))
    assert made.status_code == 201

    async def numbers(**params: str) -> list[str]:
        response = await stack.client.get(f"{BASE}/requests.json", params={**key, **params})
        assert response.status_code == 200, response.text
        return [item["service_request_id"] for item in json_of(response)]

    # Only what the public reported is listed, newest first.
    assert await numbers() == [cover_number, bin_number]
    assert await numbers(service_code="CG-10101") == [cover_number]
    assert await numbers(service_code="CG-10101,CG-20106") == [cover_number, bin_number]
    assert await numbers(status="open") == [cover_number, bin_number]
    assert await numbers(status="closed") == []
    assert await numbers(service_request_id=bin_number, service_code="CG-10101") == [bin_number]
    assert await numbers(start_date="2020-01-01T00:00:00+08:00", end_date="2020-03-01T00:00:00Z") == []
    assert await numbers(end_date="2020-03-01T00:00:00Z") == []

    root = xml_of(await stack.client.get(f"{BASE}/requests.xml", params=key))
    assert root.tag == "service_requests"
    assert [r.findtext("service_request_id") for r in root.findall("request")] == [cover_number, bin_number]

    too_long = await stack.client.get(
        f"{BASE}/requests.xml",
        params={**key, "start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"},
    )
    assert too_long.status_code == 400
    error = xml_of(too_long).find("error")
    assert error is not None
    assert error.findtext("code") == "400"
    assert "90 days" in (error.findtext("description") or "")
    for params in ({"status": "pending"}, {"start_date": "yesterday"}):
        bad = await stack.client.get(f"{BASE}/requests.json", params={**key, **params})
        assert bad.status_code == 400
        assert json_of(bad)[0]["problem"] == "open311.invalid_query"
    unknown = await stack.client.get(f"{BASE}/requests/440106-20200101-000001.json", params=key)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        pytest.param({"service_code": "CG-99999"}, "no service", id="unknown-service"),
        pytest.param({"service_code": ""}, "service_code", id="no-service"),
        pytest.param({"lat": "", "long": ""}, "lat and long", id="no-location"),
        pytest.param({"lat": "north"}, "lat", id="latitude-not-a-number"),
        pytest.param({"lat": "nan"}, "lat", id="latitude-nan"),
        pytest.param({"lat": "39.9", "long": "116.4"}, "outside Guangzhou", id="beijing"),
        pytest.param({"phone": "call me"}, "phone", id="bad-phone"),
        pytest.param({"phone": "+" + "1" * 20}, "phone", id="phone-longer-than-kept"),
        pytest.param({"email": "not-an-address"}, "email", id="bad-email"),
        pytest.param({"media_url": "file:///etc/passwd"}, "media_url", id="bad-media-url"),
        pytest.param({"description": "x" * 4001}, "description", id="long-description"),
        pytest.param({"description": "bin\x00"}, "NUL", id="nul"),
        pytest.param({"attribute[\x00]": "x"}, "NUL", id="nul-in-an-attribute-name"),
    ],
)
async def test_a_bad_submission_is_a_400_in_the_spec_error_shape_and_writes_nothing(
    open311, fields, fragment
):
    stack, _ = open311
    for fmt in ("xml", "json"):
        response = await post_request(stack, fmt=fmt, **fields)
        assert response.status_code == 400, response.text
        if fmt == "xml":
            errors = [
                (e.findtext("code"), e.findtext("description") or "")
                for e in xml_of(response).findall("error")
            ]
            assert all(code == "400" for code, _ in errors)
        else:
            errors = [(str(e["code"]), e["description"]) for e in json_of(response)]
        assert any(fragment in description for _, description in errors), errors
    cases = (await stack.client.get("/api/case/v1/cases", headers=stack.as_("admin"))).json()["items"]
    assert cases == []


async def test_a_post_needs_a_valid_api_key_with_the_write_scope(open311):
    stack, _ = open311
    without = await stack.client.post(f"{BASE}/requests.xml", data=FORM)
    assert without.status_code == 403
    error = xml_of(without).find("error")
    assert error is not None
    assert error.findtext("code") == "403"
    assert error.findtext("problem") == "auth.missing_credentials"
    wrong = await stack.client.post(
        f"{BASE}/requests.json", data={**FORM, "api_key": "cgk_000000000000_nope"}
    )
    assert wrong.status_code == 403
    assert json_of(wrong)[0]["problem"] == "auth.invalid_credentials"
    read_only = await post_request(stack, fmt="json", consumer="reader")
    assert read_only.status_code == 403
    assert json_of(read_only)[0]["problem"] == "auth.missing_scope"
    # The key may also come in the query string or the usual header.
    in_query = await stack.client.post(
        f"{BASE}/requests.json", params={"api_key": stack.api_keys["reporter"]}, data=FORM
    )
    assert in_query.status_code == 201, in_query.text
    in_header = await stack.client.post(f"{BASE}/requests.json", data=FORM, headers=stack.as_("reporter"))
    assert in_header.status_code == 201, in_header.text
    behind_a_proxy = await stack.client.post(
        f"{BASE}/requests.json",
        data={**FORM, "api_key": stack.api_keys["reporter"]},
        headers={"Authorization": "Basic cHJveHk6cGFzcw=="},
    )
    assert behind_a_proxy.status_code == 201, behind_a_proxy.text


async def test_an_unmodified_client_reads_services_and_requests_without_any_key_by_default(open311):
    stack, _ = open311
    number = json_of(await post_request(stack, fmt="json"))[0]["service_request_id"]
    async with httpx.AsyncClient(base_url=f"{stack.gateway_url}{BASE}") as plain:  # no key, no header
        services = json_of(await plain.get("/services.json"))
        assert "CG-20106" in [service["service_code"] for service in services]
        root = xml_of(await plain.get("/services.xml"))
        assert root.tag == "services"
        assert json_of(await plain.get("/services/CG-20106.json")) == {
            "service_code": "CG-20106",
            "attributes": [],
        }
        listed = json_of(await plain.get("/requests.json", params={"service_code": "CG-20106"}))
        assert [item["service_request_id"] for item in listed] == [number]
        (one,) = json_of(await plain.get(f"/requests/{number}.json"))
        one_xml = await plain.get(f"/requests/{number}.xml")
        discovery = await plain.get("/discovery.json")
    assert one["service_request_id"] == number
    assert one["status"] == "open"
    assert discovery.status_code == 200
    # The anonymous reader has no pii:read, and the Open311 views hold no personal data anyway.
    text = json.dumps(listed, ensure_ascii=False) + json.dumps(one, ensure_ascii=False) + one_xml.text
    for private in ("Ming", "13812345678", "5678", "li.ming@example.com", "phone-7"):
        assert private not in text, private


async def test_with_anonymous_reads_turned_off_a_keyless_read_is_refused(open311_factory):
    async with open311_factory(open311_anonymous_reads=False) as (stack, _):
        refused = await stack.client.get(f"{BASE}/services.json")
        assert refused.status_code == 403
        assert json_of(refused)[0]["problem"] == "auth.missing_credentials"
        keyed = await stack.client.get(f"{BASE}/services.json", params={"api_key": stack.api_keys["reader"]})
        assert keyed.status_code == 200


async def test_a_keyless_post_and_a_keyless_read_of_anything_else_still_need_a_key(open311):
    stack, _ = open311
    still_refused = await stack.client.post(f"{BASE}/requests.json", data=FORM)
    assert still_refused.status_code == 403
    assert json_of(still_refused)[0]["problem"] == "auth.missing_credentials"
    for path in ("nothing.json", "services/CG-20106/extra.json", "requests.html"):
        refused = await stack.client.get(f"{BASE}/{path}")
        assert refused.status_code == 403, path
    cases = (await stack.client.get("/api/case/v1/cases", headers=stack.as_("admin"))).json()["items"]
    assert cases == []


async def test_keyless_reads_are_limited_per_client_address_in_the_spec_error_shape(open311_factory):
    async with open311_factory(open311_anonymous_rate_limit_per_minute=3) as (stack, _):
        statuses = [(await stack.client.get(f"{BASE}/services.json")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await stack.client.get(f"{BASE}/services.xml")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        error = xml_of(limited).find("error")
        assert error is not None
        assert error.findtext("problem") == "gateway.rate_limited"
        # A keyed client from the same address has its own allowance.
        keyed = await stack.client.get(f"{BASE}/services.json", params={"api_key": stack.api_keys["reader"]})
        assert keyed.status_code == 200
        assert keyed.headers["ratelimit-policy"] == '"minute";q=600;w=60'


async def test_discovery_names_the_configured_public_url_never_the_clients_host(open311_factory):
    public = "https://open311.city.example"
    async with open311_factory(public_base_url=public) as (stack, _):
        for headers in ({}, {"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example"}):
            root = xml_of(await stack.client.get(f"{BASE}/discovery.xml", headers=headers))
            assert root.findtext("endpoints/endpoint/url") == f"{public}/open311/v2"


async def test_without_a_public_url_discovery_names_the_gateways_own_address_not_the_host_header(open311):
    stack, _ = open311
    document = json_of(
        await stack.client.get(
            f"{BASE}/discovery.json", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        )
    )
    assert document["endpoints"][0]["url"] == f"{stack.gateway_url}/open311/v2"


async def test_unknown_resources_formats_and_methods_get_spec_errors(open311):
    stack, _ = open311
    key = {"api_key": stack.api_keys["reader"]}
    assert (await stack.client.get(f"{BASE}/services.html", params=key)).status_code == 404
    nothing = await stack.client.get(f"{BASE}/nothing.json", params=key)
    assert nothing.status_code == 404
    assert json_of(nothing)[0]["problem"] == "open311.unknown_resource"
    traversal = await stack.client.get(f"{BASE}/..%2F..%2Fmetrics", params=key)
    assert traversal.status_code == 404
    deleted = await stack.client.delete(f"{BASE}/requests.json", params=key)
    assert deleted.status_code == 400
    assert json_of(deleted)[0]["problem"] == "http.method_not_allowed"


async def test_the_georeport_client_library_reads_services_and_requests_unchanged(open311_factory):
    async with open311_factory() as (stack, _):  # the defaults: no key is needed to read
        number = json_of(await post_request(stack, fmt="json"))[0]["service_request_id"]
        for output_format in ("json", "xml"):
            client = GeoReport(f"{stack.gateway_url}/open311/v2", output_format=output_format)
            services = await asyncio.to_thread(client.get_service_list)
            assert "CG-20106" in [service["service_code"] for service in services]
            definition = await asyncio.to_thread(client.get_service_definition, "CG-20106")
            assert definition["service_code"] == "CG-20106"
            requests = await asyncio.to_thread(client.get_service_requests, service_code="CG-20106")
            listed = requests if isinstance(requests, list) else [requests]
            assert [item["service_request_id"] for item in listed] == [number]
            one = await asyncio.to_thread(client.get_service_request, number)
            assert one["service_request_id"] == number
            assert one["status"] == "open"
            assert "email" not in one
            assert "phone" not in one


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        pytest.param("requests.json", {"service_code": "CG-1\x00"}, 400, id="nul-in-service-code"),
        pytest.param("requests.json", {"service_request_id": "\x00"}, 400, id="nul-in-request-id"),
        pytest.param("requests.json", {"service_code": "CG-1;DROP"}, 400, id="odd-service-code"),
        pytest.param("requests.json", {"status": "open\x00"}, 400, id="nul-in-status"),
        pytest.param("requests/%00.json", {}, 404, id="nul-in-path"),
        pytest.param("services/a%20b.json", {}, 404, id="space-in-service-code"),
        pytest.param("tokens/not-a-uuid.json", {}, 404, id="token-not-an-id"),
        pytest.param("requests/" + "9" * 5000 + ".json", {}, 404, id="huge-id"),
    ],
)
async def test_odd_queries_and_ids_are_4xx_in_the_spec_shape(open311, path, params, status):
    stack, _ = open311
    response = await stack.client.get(
        f"{BASE}/{path}", params={"api_key": stack.api_keys["reader"], **params}
    )
    assert response.status_code == status, response.text
    assert json_of(response)[0]["code"] == status


async def test_forms_the_spec_does_not_describe_are_refused_without_writing_anything(open311):
    stack, _ = open311
    key = stack.api_keys["reporter"]
    refusals = [
        await stack.client.post(
            f"{BASE}/requests.json",
            content=b"api_key=x&description=%FF%FE",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        await stack.client.post(
            f"{BASE}/requests.json",
            data={**FORM, **{f"attribute[a{i}]": "x" for i in range(300)}, "api_key": key},
        ),
        await stack.client.post(
            f"{BASE}/requests.json",
            params={"api_key": key},
            data=FORM,
            files={"media": ("bin.jpg", b"\xff\xd8", "image/jpeg")},
        ),
        await stack.client.post(
            f"{BASE}/requests.json", params={"api_key": key}, json={"service_code": "CG-20106"}
        ),
    ]
    assert [response.status_code for response in refusals] == [400, 400, 400, 400]
    assert all(json_of(response)[0]["code"] == 400 for response in refusals)
    cases = (await stack.client.get("/api/case/v1/cases", headers=stack.as_("admin"))).json()["items"]
    assert cases == []


async def test_the_case_service_answers_open311_only_with_the_gateways_principal(open311):
    stack, _ = open311
    async with httpx.AsyncClient(base_url=stack.case_url) as direct:
        response = await direct.get(f"{BASE}/services.json", params={"api_key": stack.api_keys["admin"]})
    assert response.status_code == 403
    assert json_of(response)[0]["problem"] == "auth.missing_internal_token"
