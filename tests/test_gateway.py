"""The gateway's contract with upstreams: 503 when one is down, 504 when slow, ids and traces carried."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from citygrid.devstack.servers import free_port
from citygrid.testing import serve_app, stream_events
from gateway.main import create_app as create_gateway_app
from tests.conftest import gateway_settings, register_consumers
from tests.test_case_flow import REPORT


@pytest.fixture
async def gateway_to(infrastructure, databases, clean):
    """A gateway whose `case` upstream is whatever URL the test names."""

    async def start(upstream: str, timeout: float = 1.0):
        settings = gateway_settings(
            infrastructure, databases, upstream, upstream_timeout=timeout, upstream_connect_timeout=0.5
        )
        keys = await register_consumers(databases["gateway"])
        return create_gateway_app(settings), keys

    return start


async def test_an_upstream_that_is_down_answers_503_problem(gateway_to):
    app, keys = await gateway_to(f"http://127.0.0.1:{free_port()}")
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/case/v1/cases", headers={"X-API-Key": keys["reader"]})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "gateway.upstream_unavailable"


async def test_a_slow_upstream_answers_504_problem(gateway_to):
    slow = FastAPI()

    @slow.get("/v1/cases")
    async def take_your_time() -> dict[str, str]:
        await asyncio.sleep(3)
        return {}

    async with serve_app(slow) as upstream:
        app, keys = await gateway_to(upstream, timeout=0.5)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/api/case/v1/cases", headers={"X-API-Key": keys["reader"]})
    assert response.status_code == 504
    assert response.json()["code"] == "gateway.upstream_timeout"


async def test_headers_cross_the_gateway_as_sent_and_no_cookie_is_carried_between_callers(gateway_to):
    upstream_app = FastAPI()
    seen: list[list[tuple[bytes, bytes]]] = []

    @upstream_app.get("/v1/cases")
    async def echo(request: Request) -> Response:
        seen.append(list(request.headers.raw))
        answer = Response(b"[]", media_type="application/json")
        answer.raw_headers.append((b"set-cookie", b"session=first-callers; Path=/"))
        answer.raw_headers.append((b"set-cookie", b"theme=dark; Path=/"))
        return answer

    async with serve_app(upstream_app) as upstream:
        app, keys = await gateway_to(upstream)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            reader = {"X-API-Key": keys["reader"]}
            first = await client.get("/api/case/v1/cases", headers={**reader, "X-Note": "广州".encode()})
            second = await client.get("/api/case/v1/cases", headers=reader)
            latin1 = await client.get("/api/case/v1/cases", headers={**reader, "X-Note": b"caf\xe9"})
    assert first.status_code == second.status_code == 200
    # Repeated headers of the service's answer all reach the client.
    assert first.headers.get_list("set-cookie") == ["session=first-callers; Path=/", "theme=dark; Path=/"]
    first_seen, second_seen = (dict(headers) for headers in seen)
    # A UTF-8 value outside ASCII byte for byte; the gateway keeps no cookie of one caller for the next.
    assert first_seen[b"x-note"] == "广州".encode()
    assert b"cookie" not in second_seen
    assert b"x-note" not in second_seen
    # A value that is not UTF-8 is refused, not passed on changed.
    assert latin1.status_code == 400
    assert latin1.json()["code"] == "http.invalid_header"
    assert len(seen) == 2


async def test_request_id_and_trace_travel_from_the_client_to_the_event(stack):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    created = await stack.client.post(
        "/api/case/v1/cases",
        json=REPORT,
        headers=stack.as_("clerk", **{"X-Request-ID": "client-req-42", "traceparent": traceparent}),
    )
    assert created.headers["x-request-id"] == "client-req-42"
    refused = await stack.client.post(
        f"/api/case/v1/cases/{created.json()['id']}/handle",
        headers=stack.as_("clerk", **{"If-Match": '"1"', "X-Request-ID": "client-req-43"}),
    )
    assert refused.json()["request_id"] == "client-req-43"  # written by the case service itself
    (event,) = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=1)
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == trace_id


async def test_a_request_without_ids_gets_fresh_ones(stack):
    response = await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))
    assert len(response.headers["x-request-id"]) == 32
    hostile = await stack.client.get(
        "/api/case/v1/cases", headers=stack.as_("reader", **{"X-Request-ID": "<script>alert(1)</script>"})
    )
    assert hostile.headers["x-request-id"] != "<script>alert(1)</script>"


async def test_the_gateway_serves_one_openapi_document_for_every_service(stack):
    document = (await stack.client.get("/openapi.json")).json()
    assert "/api/case/v1/cases" in document["paths"]
    assert "/api/case/v1/cases/{case_id}/verify" in document["paths"]
    assert "/admin/v1/consumers" in document["paths"]
    assert "case.CaseOut" in document["components"]["schemas"]
    post = document["paths"]["/api/case/v1/cases"]["post"]
    assert post["operationId"] == "case_report_case"
    assert (
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/case.ReportCase"
    )
    assert {"ApiKey", "Bearer"} <= set(document["components"]["securitySchemes"])
    refs = str(document).count("'$ref': '#/components/schemas/")
    unresolved = [
        ref
        for ref in _refs(document)
        if ref.removeprefix("#/components/schemas/") not in document["components"]["schemas"]
    ]
    assert refs > 0
    assert unresolved == []


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_the_gateway_is_ready_when_its_database_is(stack):
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True}


async def test_over_the_rate_limit_a_consumer_gets_429_with_retry_after(stack, databases):
    from sqlalchemy import update
    from sqlalchemy.ext.asyncio import create_async_engine

    from citygrid.db import create_sessionmaker
    from citygrid.settings import to_asyncpg_url
    from gateway.models import ApiConsumer

    engine = create_async_engine(to_asyncpg_url(databases["gateway"]))
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(ApiConsumer).where(ApiConsumer.name == "reader").values(rate_limit_per_minute=3)
        )
    await engine.dispose()
    statuses = [
        (await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))
    assert limited.json()["code"] == "gateway.rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    other = await stack.client.get("/api/case/v1/cases", headers=stack.as_("clerk"))
    assert other.status_code == 200
