"""What one client or one service can do to everybody else through the gateway, and what it cannot.

Every gateway here is served the way ``python -m gateway.main`` serves it (``citygrid.serve``,
uvicorn not believing ``X-Forwarded-For``), on real PostgreSQL; the upstreams are real ASGI apps on
loopback: the case service itself, or small apps that are slow, sink bodies or record what reaches
them. Nothing passes or fails on a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.types import Message, Receive, Scope, Send

from citygrid.auth import PRINCIPAL_HEADER
from citygrid.db import create_sessionmaker
from citygrid.devstack.servers import free_port
from citygrid.middleware import forwarded_prefix
from citygrid.serve import server_config
from citygrid.settings import to_asyncpg_url
from citygrid.testing import serve_app, wait_until
from gateway.consumers.service import register_consumer
from gateway.main import create_app as create_gateway_app
from services.case.main import create_app as create_case_app
from tests.conftest import case_settings, gateway_settings, register_consumers
from tests.test_case_flow import REPORT, add_photo
from tests.test_security import SERVICE_CALLER

MIB = 1024 * 1024
CHUNK = b"\xff" * (64 * 1024)
FRONTEND = "https://screens.city.example"


# -- serving ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_gateway(app: FastAPI) -> AsyncIterator[str]:
    """Serve a gateway as production does: the kit's uvicorn config, X-Forwarded-For left to the app."""
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, proxy_headers=False))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done())
    if not server.started:
        await task
        raise RuntimeError("the gateway did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def keys(databases, clean) -> dict[str, str]:
    """The usual consumers, and one that reads both services."""
    api_keys = await register_consumers(databases["gateway"])
    engine = create_async_engine(to_asyncpg_url(databases["gateway"]))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, api_keys["both"] = await register_consumer(
                session, name="both", scopes=["cases:read", "vision:read"], roles=["operator"]
            )
    finally:
        await engine.dispose()
    return api_keys


@pytest.fixture
def gateway(infrastructure, databases):
    """A gateway app (not yet served) with these upstreams and settings."""

    def make(upstreams: dict[str, str], **overrides: Any) -> FastAPI:
        settings = gateway_settings(
            infrastructure, databases, upstreams.get("case", ""), upstreams=upstreams, **overrides
        )
        return create_gateway_app(settings)

    return make


def key_lookups(app: FastAPI) -> list[str]:
    """Every statement the gateway sends to its database to look up an API key, as it sends it (not
    the webhook deliverer's reads, which join the consumers too)."""
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "api_consumers" in statement and "consumer_keys" in statement:
            statements.append(statement)

    event.listen(app.state.kit.engine.sync_engine, "before_cursor_execute", on_execute)
    return statements


def random_key() -> str:
    return f"cgk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def echo_app() -> tuple[FastAPI, list[Request]]:
    """An upstream that answers every call and keeps the requests it saw."""
    app = FastAPI()
    seen: list[Request] = []

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(path: str, request: Request) -> JSONResponse:
        seen.append(request)
        return JSONResponse({"path": path}, headers={"ETag": '"7"', "Location": f"/{path}/1"})

    return app, seen


@dataclass
class Sink:
    """An upstream that reads request bodies and throws them away, counting what arrived.

    With ``hold_until`` it lets no body in until that many requests have begun: a gateway that
    buffers bodies would have to hold every one of them whole before the first got here.
    """

    hold_until: int = 0
    # Seconds between the end of a body and the answer (a service storing what it read).
    answer_after: float = 0.0
    started: int = 0
    completed: list[int] = field(default_factory=list)
    disconnected: list[int] = field(default_factory=list)
    content_lengths: list[str | None] = field(default_factory=list)
    everyone_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            lifespan = await receive()
            if lifespan["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        self.content_lengths.append(
            headers[b"content-length"].decode() if b"content-length" in headers else None
        )
        self.started += 1
        if self.started >= self.hold_until:
            self.everyone_in.set()
        await self.everyone_in.wait()
        received = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.append(received)
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.completed.append(received)
        await asyncio.sleep(self.answer_after)
        body = json.dumps({"bytes": received}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def upload(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes from one reused chunk: the sender itself allocates nothing per upload."""
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece


# -- 1. bulkheads -------------------------------------------------------------------------------


async def test_a_slow_upstream_saturates_only_its_own_pool_and_the_other_keeps_answering(
    infrastructure, databases, keys, gateway
):
    slow = FastAPI()
    inside: list[int] = []
    release = asyncio.Event()

    @slow.get("/v1/alarms")
    async def held() -> dict[str, int]:
        inside.append(1)
        await release.wait()
        return {"held": len(inside)}

    case_app = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(case_app) as case_url, serve_app(slow) as vision_url:
        app = gateway(
            {"case": case_url, "vision": vision_url},
            upstream_connections=8,
            upstream_connection_limits={"vision": 4},
            upstream_pool_timeout=0.5,
            upstream_timeout=60.0,
        )
        headers = {"X-API-Key": keys["both"]}
        async with (
            serve_gateway(app) as url,
            httpx.AsyncClient(base_url=url, timeout=60.0, headers=headers) as client,
        ):
            holding = [asyncio.create_task(client.get("/api/vision/v1/alarms")) for _ in range(4)]
            await wait_until(lambda: len(inside) == 4)

            saturated = await client.get("/api/vision/v1/alarms")
            assert saturated.status_code == 503
            assert saturated.headers["content-type"].startswith("application/problem+json")
            assert saturated.json()["code"] == "gateway.upstream_saturated"
            assert int(saturated.headers["retry-after"]) >= 1
            assert len(inside) == 4  # it never reached the slow service

            # Meanwhile the case service, healthy, answers as if nothing happened (never more calls
            # at once than its own pool holds, so none of them waits for a connection).
            for _ in range(5):
                rounds = await asyncio.gather(*(client.get("/api/case/v1/cases") for _ in range(4)))
                assert [r.status_code for r in rounds] == [200] * 4, [r.text for r in rounds]

            release.set()
            assert [(await call).status_code for call in holding] == [200] * 4
            assert (await client.get("/api/vision/v1/alarms")).status_code == 200
        async with serve_app(app.state.internal_app) as internal:
            scraped = (await httpx.AsyncClient().get(f"{internal}/metrics")).text
    assert 'citygrid_gateway_upstream_saturated_total{service="vision"} 1.0' in scraped
    assert 'citygrid_gateway_upstream_saturated_total{service="case"}' not in scraped


# -- 2. request bodies stream through -----------------------------------------------------------


async def test_fifty_parallel_8_mib_uploads_stream_through_in_bounded_gateway_memory(keys, gateway):
    uploads, size = 50, 8 * MIB
    sink = Sink(hold_until=uploads)
    async with serve_app(sink) as sink_url:  # type: ignore[arg-type]
        app = gateway(
            {"case": sink_url},
            upstream_connections=64,
            upstream_streamed_bodies_per_principal=uploads,
            upstream_timeout=120.0,
        )
        async with (
            serve_gateway(app) as url,
            httpx.AsyncClient(
                base_url=url, timeout=120.0, limits=httpx.Limits(max_connections=uploads)
            ) as client,
        ):

            async def one(declared: bool) -> httpx.Response:
                headers = {"X-API-Key": keys["clerk"], "Content-Type": "image/jpeg"}
                if declared:
                    headers["Content-Length"] = str(size)
                return await client.post("/api/case/v1/uploads", content=upload(size), headers=headers)

            await client.get("/healthz")  # the server's own first allocations, outside the measure
            tracing = tracemalloc.is_tracing()
            if not tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            baseline, _ = tracemalloc.get_traced_memory()
            try:
                answers = await asyncio.gather(*(one(declared=i % 2 == 0) for i in range(uploads)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                if not tracing:
                    tracemalloc.stop()
    assert [a.status_code for a in answers] == [200] * uploads, answers[0].text
    assert sink.completed == [size] * uploads
    # Buffering would hold all 50 bodies at once (400 MiB): the sink let none in before all had begun.
    # Streaming holds what the sockets' buffers hold, about 1 MiB an upload in this whole process
    # (client, gateway and sink together), whatever the size of the body.
    grown = peak - baseline
    assert grown < uploads * 2 * MIB, f"{grown / MIB:.0f} MiB held for {uploads * size // MIB} MiB uploaded"
    # A declared length travels on with the stream; an undeclared one stays chunked.
    assert sorted(sink.content_lengths, key=str) == [str(size)] * (uploads // 2) + [None] * (uploads // 2)


async def test_a_streamed_body_over_the_limit_is_refused_413_and_the_service_never_sees_it_whole(
    keys, gateway
):
    sink = Sink()
    async with serve_app(sink) as sink_url:  # type: ignore[arg-type]
        app = gateway({"case": sink_url})
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url, timeout=60.0) as client:
            headers = {"X-API-Key": keys["clerk"], "Content-Type": "image/png"}
            over = 9 * MIB  # the image limit is 8 MiB
            chunked = await client.post("/api/case/v1/uploads", content=upload(over), headers=headers)
            assert chunked.status_code == 413
            assert chunked.json()["code"] == "http.payload_too_large"
            assert chunked.json()["instance"] == "/api/case/v1/uploads"  # the gateway's answer
            await wait_until(lambda: sink.disconnected)
            assert sink.completed == []
            assert 0 < sink.disconnected[0] <= 8 * MIB  # part of it went on, never the end of it

            declared = await client.post(
                "/api/case/v1/uploads",
                content=upload(over),
                headers={**headers, "Content-Length": str(over)},
            )
            assert declared.status_code == 413
            assert sink.started == 1  # refused on its declared length: it never left the gateway

            small = await client.post("/api/case/v1/uploads", content=b"x" * 1000, headers=headers)
            assert small.status_code == 200
            assert small.json() == {"bytes": 1000}
            assert sink.content_lengths[-1] == "1000"


async def test_an_upload_may_take_longer_than_an_ordinary_call_to_be_answered(keys, gateway):
    sink = Sink(answer_after=1.5)
    async with serve_app(sink) as sink_url:  # type: ignore[arg-type]
        app = gateway({"case": sink_url}, upstream_timeout=0.5, upstream_upload_timeout=30.0)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url, timeout=60.0) as client:
            headers = {"X-API-Key": keys["clerk"], "Content-Type": "image/png"}
            streamed = await client.post("/api/case/v1/uploads", content=upload(4 * MIB), headers=headers)
            assert streamed.status_code == 200, streamed.text
            assert streamed.json() == {"bytes": 4 * MIB}
            # A body small enough to be read first is an ordinary call, with the ordinary timeout.
            small = await client.post("/api/case/v1/uploads", content=b"x" * 1000, headers=headers)
            assert small.status_code == 504
            assert small.json()["code"] == "gateway.upstream_timeout"


async def test_a_client_that_stops_sending_its_body_gets_408_and_lets_the_upstream_connection_go(
    keys, gateway
):
    sink = Sink()
    async with serve_app(sink) as sink_url:  # type: ignore[arg-type]
        app = gateway({"case": sink_url}, request_body_idle_timeout=0.5, upstream_connections=1)
        async with serve_gateway(app) as url:
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /api/case/v1/uploads HTTP/1.1\r\nHost: gateway\r\n"
                + f"X-API-Key: {keys['clerk']}\r\n".encode()
                + b"Content-Type: image/png\r\nContent-Length: 1048576\r\n\r\n"
                + b"\x00" * 200_000  # more than the gateway reads ahead: the upload is streaming
            )
            await writer.drain()
            status_line = await reader.readline()  # then nothing more is sent
            writer.close()
            assert status_line.startswith(b"HTTP/1.1 408"), status_line
            await wait_until(lambda: sink.disconnected)
            assert sink.completed == []
            # The only upstream connection is free again for the next caller.
            async with httpx.AsyncClient(base_url=url) as client:
                after = await client.post(
                    "/api/case/v1/uploads",
                    content=b"x" * 10,
                    headers={"X-API-Key": keys["clerk"], "Content-Type": "image/png"},
                )
            assert after.status_code == 200


async def test_one_consumer_may_stream_only_so_many_bodies_at_once_so_slow_uploads_cannot_fill_a_pool(
    keys, gateway
):
    sink = Sink()
    async with serve_app(sink) as sink_url:  # type: ignore[arg-type]
        app = gateway(
            {"case": sink_url}, upstream_streamed_bodies_per_principal=1, request_body_idle_timeout=60.0
        )
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            port = int(url.rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(  # a slow upload: part of the body, then the sender dawdles
                b"POST /api/case/v1/uploads HTTP/1.1\r\nHost: gateway\r\n"
                + f"X-API-Key: {keys['clerk']}\r\n".encode()
                + b"Content-Type: image/png\r\nContent-Length: 1048576\r\n\r\n"
                + b"\x00" * 200_000
            )
            await writer.drain()
            await wait_until(lambda: sink.started == 1)

            def photo(consumer: str) -> Any:
                headers = {"X-API-Key": keys[consumer], "Content-Type": "image/png"}
                return client.post("/api/case/v1/uploads", content=upload(MIB), headers=headers)

            second = await photo("clerk")
            assert second.status_code == 429
            assert second.json()["code"] == "gateway.too_many_uploads"
            assert int(second.headers["retry-after"]) >= 1
            assert (await photo("admin")).status_code == 200  # another consumer is not held up
            small = await client.post(  # a small body is read first: it needs no slot
                "/api/case/v1/uploads",
                content=b"x" * 100,
                headers={"X-API-Key": keys["clerk"], "Content-Type": "image/png"},
            )
            assert small.status_code == 200

            writer.close()  # the slow sender gives up: its slot is free again
            await wait_until(lambda: not app.state.gateway.forwarding.uploads.held)
            assert (await photo("clerk")).status_code == 200


# -- 3. the merged OpenAPI document, cached ------------------------------------------------------


class CountingOpenApi:
    """Counts the requests for the service's own OpenAPI document that reach it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.fetches = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/openapi.json":
            self.fetches += 1
        await self.app(scope, receive, send)


async def test_the_merged_openapi_document_costs_one_fetch_per_refresh_period_however_many_hits(gateway):
    service = FastAPI()

    @service.get("/v1/things", operation_id="list_things")
    async def things() -> list[str]:
        return []

    counted = CountingOpenApi(service)
    async with serve_app(counted) as service_url:  # type: ignore[arg-type]
        app = gateway({"case": service_url}, openapi_cache_seconds=60.0)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            now = [1000.0]
            app.state.gateway.openapi.clock = lambda: now[0]

            first = await asyncio.gather(*(client.get("/openapi.json") for _ in range(50)))
            assert [r.status_code for r in first] == [200] * 50
            assert "/api/case/v1/things" in first[0].json()["paths"]
            assert len({r.headers["etag"] for r in first}) == 1
            assert counted.fetches == 1  # 50 anonymous hits on a cold cache: one fetch

            more = await asyncio.gather(*(client.get("/openapi.json") for _ in range(50)))
            assert {r.status_code for r in more} == {200}
            etag = first[0].headers["etag"]
            unchanged = await client.get("/openapi.json", headers={"If-None-Match": etag})
            assert unchanged.status_code == 304
            assert unchanged.content == b""
            assert (await client.get("/docs")).status_code == 200
            assert counted.fetches == 1

            now[0] += 61.0  # the period is over: the next hit is served and starts one rebuild
            stale = await asyncio.gather(*(client.get("/openapi.json") for _ in range(50)))
            assert {r.status_code for r in stale} == {200}
            await wait_until(lambda: counted.fetches == 2)
            after = await asyncio.gather(*(client.get("/openapi.json") for _ in range(50)))
            assert {r.status_code for r in after} == {200}
            assert counted.fetches == 2


async def test_a_service_missing_from_the_document_is_asked_again_once_per_retry_period_not_per_hit(gateway):
    service = FastAPI()

    @service.get("/v1/things", operation_id="list_things")
    async def things() -> list[str]:
        return []

    counted = CountingOpenApi(service)
    failing = [True]

    async def flaky(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/openapi.json" and failing[0]:
            counted.fetches += 1
            await JSONResponse({"down": True}, status_code=503)(scope, receive, send)
            return
        await counted(scope, receive, send)

    async with serve_app(flaky) as service_url:  # type: ignore[arg-type]
        app = gateway({"case": service_url}, openapi_cache_seconds=300.0, openapi_retry_seconds=10.0)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            now = [1000.0]
            app.state.gateway.openapi.clock = lambda: now[0]
            partial = await asyncio.gather(*(client.get("/openapi.json") for _ in range(30)))
            assert {r.status_code for r in partial} == {200}
            assert partial[0].json()["info"]["x-unavailable-services"] == ["case"]
            assert "/admin/v1/consumers" in partial[0].json()["paths"]  # the gateway's own part
            assert counted.fetches == 1

            failing[0] = False
            now[0] += 10.0  # the retry period, far short of the refresh period
            await client.get("/openapi.json")
            await wait_until(lambda: counted.fetches == 2)
            await wait_until(
                lambda: app.state.gateway.openapi._document.complete  # the rebuild has landed
            )
            complete = await asyncio.gather(*(client.get("/openapi.json") for _ in range(30)))
            assert "/api/case/v1/things" in complete[0].json()["paths"]
            assert "x-unavailable-services" not in complete[0].json()["info"]
            assert counted.fetches == 2


# -- 4. authentication floods --------------------------------------------------------------------


async def test_two_hundred_random_keys_cost_at_most_the_lookup_budget_and_then_get_429(keys, gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, key_lookup_failures_per_minute=5)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            lookups = key_lookups(app)
            now = [1000.0]  # the key caches' clock (the budget keeps the real one: it does not refill)
            app.state.gateway.authenticator.clock = lambda: now[0]
            reader = {"X-API-Key": keys["reader"]}
            assert (await client.get("/api/case/v1/cases", headers=reader)).status_code == 200
            assert len(lookups) == 1  # the reader's key, now cached

            flood = await asyncio.gather(
                *(client.get("/api/case/v1/cases", headers={"X-API-Key": random_key()}) for _ in range(200))
            )
            assert len(lookups) <= 1 + 5, lookups
            codes = [r.json()["code"] for r in flood]
            assert codes.count("auth.invalid_credentials") <= 5
            assert codes.count("gateway.auth_throttled") >= 195
            throttled = next(r for r in flood if r.status_code == 429)
            assert throttled.headers["content-type"].startswith("application/problem+json")
            assert int(throttled.headers["retry-after"]) >= 1

            # A key the gateway already knows costs no lookup and keeps working from that address;
            # one it has never seen waits, like the flood, until the budget refills.
            assert (await client.get("/api/case/v1/cases", headers=reader)).status_code == 200
            clerk = await client.get("/api/case/v1/cases", headers={"X-API-Key": keys["clerk"]})
            assert clerk.json()["code"] == "gateway.auth_throttled"
            spent = len(lookups)
            assert spent <= 1 + 5
            # When the reader's cache entry is due, re-checking the key it knew costs no budget.
            now[0] += 31.0
            assert (await client.get("/api/case/v1/cases", headers=reader)).status_code == 200
            assert len(lookups) == spent + 1
            # A wrong secret for that real prefix is no free pass to a lookup.
            forged = keys["reader"].rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32)
            assert (await client.get("/api/case/v1/cases", headers={"X-API-Key": forged})).status_code == 401
            assert len(lookups) == spent + 1
        async with serve_app(app.state.internal_app) as internal:
            scraped = (await httpx.AsyncClient().get(f"{internal}/metrics")).text
    assert 'citygrid_gateway_refused_requests_total{reason="auth_throttled"}' in scraped
    assert 'citygrid_gateway_key_lookups_total{outcome="unknown"}' in scraped


async def test_a_client_retrying_unknown_keys_costs_one_lookup_per_key_not_per_request(keys, gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, key_lookup_failures_per_minute=0)  # no budget: the cache alone
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            lookups = key_lookups(app)
            unknown = [random_key() for _ in range(4)]
            answers = await asyncio.gather(
                *(client.get("/api/case/v1/cases", headers={"X-API-Key": unknown[i % 4]}) for i in range(200))
            )
            assert {r.json()["code"] for r in answers} == {"auth.invalid_credentials"}
            assert len(lookups) == 4

            # Concurrent first calls with one valid key share one lookup, too.
            valid = await asyncio.gather(
                *(client.get("/api/case/v1/cases", headers={"X-API-Key": keys["clerk"]}) for _ in range(50))
            )
            assert {r.status_code for r in valid} == {200}
            assert len(lookups) == 5


async def test_the_per_address_limit_answers_429_before_any_authentication(keys, gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, client_rate_limit_per_minute=5)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            lookups = key_lookups(app)
            anonymous = [(await client.get("/api/case/v1/cases")).status_code for _ in range(5)]
            assert anonymous == [401] * 5
            limited = await client.get("/api/case/v1/cases", headers={"X-API-Key": keys["admin"]})
            assert limited.status_code == 429
            assert limited.headers["content-type"].startswith("application/problem+json")
            assert limited.json()["code"] == "gateway.client_rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            assert lookups == []  # refused before the key was looked at
            for path in ("/admin/v1/consumers", "/openapi.json", "/docs", "/open311/v2/services.json"):
                assert (await client.get(path)).status_code == 429, path
            assert (await client.get("/healthz")).status_code == 200  # probes are not limited


# -- 5. headers: client addresses, hosts, prefixes, Location, metrics ---------------------------


async def test_a_forged_x_forwarded_for_earns_no_fresh_allowance_without_trusted_proxies(gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, client_rate_limit_per_minute=3)
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            statuses = [
                (
                    await client.get("/api/case/v1/cases", headers={"X-Forwarded-For": f"198.51.100.{i}"})
                ).status_code
                for i in range(4)
            ]
    assert statuses == [401, 401, 401, 429]


async def test_behind_a_trusted_proxy_each_client_is_the_right_most_untrusted_address(gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, client_rate_limit_per_minute=3, trusted_proxies=["127.0.0.0/8"])
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:

            async def status(forwarded_for: str) -> int:
                response = await client.get("/api/case/v1/cases", headers={"X-Forwarded-For": forwarded_for})
                return response.status_code

            # The client wrote a different left-most address each time; the proxy appended the real one.
            assert [await status(f"10.9.9.{i}, 198.51.100.1") for i in range(4)] == [401, 401, 401, 429]
            assert await status("198.51.100.2") == 401  # another client: its own allowance
            assert await status("198.51.100.2, 198.51.100.1") == 429  # a claim on the left changes nothing


async def test_what_a_service_hears_about_the_client_comes_from_the_gateway_alone(keys, gateway):
    upstream, seen = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway(
            {"case": upstream_url},
            trusted_proxies=["127.0.0.1/32"],
            public_base_url="https://api.city.example",
        )
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            hostile = {
                "X-API-Key": keys["reader"],
                "Host": "evil.example",
                "X-Forwarded-For": "198.51.100.7",
                "Forwarded": "for=192.0.2.1;host=evil.example;proto=http",
                "X-Real-IP": "192.0.2.1",
                "X-Forwarded-Host": "evil.example",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Port": "8443",
                "X-Forwarded-Prefix": "//evil.example",
                "X-Forwarded-Server": "evil",
                "X-Original-URL": "/v1/admin/dead-letters",
                "X-CityGrid-Role": "supervisor",
                PRINCIPAL_HEADER: "forged",
            }
            response = await client.get("/api/case/v1/cases", headers=hostile)
    assert response.status_code == 200
    (request,) = seen
    heard = [(name.decode().lower(), value.decode()) for name, value in request.headers.raw]
    forwarded = {name: value for name, value in heard if name.startswith("x-forwarded-")}
    assert forwarded == {
        "x-forwarded-for": "198.51.100.7",
        "x-forwarded-host": "api.city.example",
        "x-forwarded-proto": "https",
        "x-forwarded-prefix": "/api/case",
    }
    names = {name for name, _ in heard}
    assert not names & {"forwarded", "x-real-ip", "x-original-url", "x-citygrid-role", "x-api-key"}
    assert [value for name, value in heard if name == PRINCIPAL_HEADER.lower()] != ["forged"]


async def test_location_is_the_gateway_path_through_the_gateway_and_the_service_path_directly(stack):
    created = await stack.client.post(
        "/api/case/v1/cases",
        json=REPORT,
        headers=stack.as_("clerk", **{"X-Forwarded-Prefix": "/somewhere/else"}),
    )
    assert created.status_code == 201, created.text
    case_id = created.json()["id"]
    assert created.headers["location"] == f"/api/case/v1/cases/{case_id}"
    followed = await stack.client.get(created.headers["location"], headers=stack.as_("reader"))
    assert followed.status_code == 200
    assert followed.json()["id"] == case_id

    photo = await add_photo(stack, case_id, "before")
    assert photo.status_code == 201, photo.text
    assert photo.headers["location"] == f"/api/case/v1/cases/{case_id}/evidence/{photo.json()['id']}"

    token = stack.infrastructure.token(SERVICE_CALLER, "case")
    for prefix in (None, "//evil.example", "/api/../x", "https://evil.example", "/a b"):
        headers = {PRINCIPAL_HEADER: token}
        if prefix is not None:
            headers["X-Forwarded-Prefix"] = prefix
        direct = await stack.client.post(f"{stack.case_url}/v1/cases", json=REPORT, headers=headers)
        assert direct.status_code == 201, direct.text
        assert direct.headers["location"] == f"/v1/cases/{direct.json()['id']}", prefix


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("/api/case", "/api/case"),
        ("/api/case/", "/api/case"),
        ("", ""),
        ("/", ""),
        ("//evil.example", ""),
        ("/api/../admin", ""),
        ("/api/./case", ""),
        ("https://evil.example/api", ""),
        ("/api/case?x=1", ""),
        ("/api/ca se", ""),
        ("api/case", ""),
    ],
)
def test_only_a_clean_path_is_believed_as_the_forwarded_prefix(value, prefix):
    from starlette.requests import Request as StarletteRequest

    scope = {"type": "http", "headers": [(b"x-forwarded-prefix", value.encode())]}
    assert forwarded_prefix(StarletteRequest(scope)) == prefix


async def test_metrics_are_not_on_the_public_listener_but_on_the_internal_one(gateway):
    upstream, _ = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url})
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            public = await client.get("/metrics")
            await client.get("/api/case/v1/cases")
        async with serve_app(app.state.internal_app) as internal:
            scraped = await httpx.AsyncClient().get(f"{internal}/metrics")
    assert public.status_code == 404
    assert public.headers["content-type"].startswith("application/problem+json")
    assert scraped.status_code == 200
    counted = [line for line in scraped.text.splitlines() if line.startswith("http_requests_total{")]
    assert any('route="/api/case/{path:path}"' in line and 'status="401"' in line for line in counted)
    assert not any('route="/metrics"' in line for line in counted)


async def test_python_m_gateway_main_serves_the_api_and_metrics_on_separate_ports(databases, clean):
    port, internal_port = free_port(), free_port()
    environment = {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "test",
        "CITYGRID_DATABASE_URL": databases["gateway"],
        "CITYGRID_PORT": str(port),
        "CITYGRID_INTERNAL_PORT": str(internal_port),
        "CITYGRID_UPSTREAMS": "{}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.main",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:

            async def up() -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return process.returncode is not None

            await wait_until(up, timeout=30.0)
            assert process.returncode is None
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
            scraped = await client.get(f"http://127.0.0.1:{internal_port}/metrics")
            assert scraped.status_code == 200
            assert "citygrid_gateway_upstream_saturated" in scraped.text
            assert (await client.get(f"http://127.0.0.1:{internal_port}/healthz")).status_code == 404
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30.0)
    # A clean stop: uvicorn finishes serving, then re-raises the SIGTERM it caught (status -15).
    assert process.returncode in (0, -signal.SIGTERM), output.decode()[-2000:]
    assert "Finished server process" in output.decode(), output.decode()[-2000:]


# -- 6. browsers ---------------------------------------------------------------------------------


async def test_a_configured_frontend_gets_its_preflight_answered_without_credentials(keys, gateway):
    upstream, seen = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, cors_origins=[FRONTEND])
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            lookups = key_lookups(app)
            requested = "authorization, x-api-key, idempotency-key, if-match, last-event-id, content-type"
            for path in ("/api/case/v1/cases", "/api/case/v1/cases/live", "/open311/v2/requests.json"):
                preflight = await client.options(
                    path,
                    headers={
                        "Origin": FRONTEND,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": requested,
                    },
                )
                assert preflight.status_code == 204, preflight.text
                assert preflight.headers["access-control-allow-origin"] == FRONTEND
                methods = {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
                assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
                allowed = {
                    h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
                }
                assert {h.strip() for h in requested.split(",")} <= allowed
                assert "access-control-allow-credentials" not in preflight.headers
                assert "Origin" in preflight.headers["vary"]
            assert seen == []
            assert lookups == []

            read = await client.get(
                "/api/case/v1/cases", headers={"Origin": FRONTEND, "X-API-Key": keys["reader"]}
            )
            refused = await client.get("/api/case/v1/cases", headers={"Origin": FRONTEND})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == FRONTEND
    exposed = {h.strip().lower() for h in read.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "location", "x-request-id", "retry-after"} <= exposed
    assert {"ratelimit", "ratelimit-policy"} <= exposed
    assert read.headers["ratelimit-policy"] == '"minute";q=600;w=60'
    assert "Origin" in read.headers["vary"]
    # A refusal is readable by the frontend too.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == FRONTEND


async def test_an_origin_that_is_not_configured_gets_no_cors_headers(keys, gateway):
    upstream, seen = echo_app()
    async with serve_app(upstream) as upstream_url:
        app = gateway({"case": upstream_url}, cors_origins=[FRONTEND])
        async with serve_gateway(app) as url, httpx.AsyncClient(base_url=url) as client:
            preflight = await client.options(
                "/api/case/v1/cases",
                headers={
                    "Origin": "https://phishing.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "x-api-key",
                },
            )
            read = await client.get(
                "/api/case/v1/cases",
                headers={"Origin": "https://phishing.example", "X-API-Key": keys["reader"]},
            )
            lookalike = await client.get(
                "/api/case/v1/cases",
                headers={"Origin": f"{FRONTEND}.phishing.example", "X-API-Key": keys["reader"]},
            )
    assert preflight.status_code == 403
    assert preflight.json()["code"] == "gateway.cors_origin_not_allowed"
    for response in (preflight, read, lookalike):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert read.status_code == 200  # not a browser's business here: the key decides
    assert len(seen) == 2
