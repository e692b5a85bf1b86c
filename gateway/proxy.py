"""Forwarding to a service: the signed principal in, hop-by-hop headers out, timeouts as 503/504."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from citygrid.auth import PRINCIPAL_HEADER, Principal, sign_principal
from citygrid.errors import DomainError
from citygrid.logging import request_id_var, traceparent_var
from gateway.routing import READ_METHODS

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Client credentials end at the gateway; a forged principal header must never reach a service.
STRIPPED_INBOUND = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "cookie",
    PRINCIPAL_HEADER.lower(),
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}


URL_SAFE = "/%:@!$&'()*+,;=-._~"
EVENT_STREAM = "text/event-stream"


def wants_event_stream(request: Request) -> bool:
    """A client asking for server-sent events (a browser's ``EventSource`` always says so)."""
    return EVENT_STREAM in request.headers.get("accept", "").lower()


def is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.lower().startswith(EVENT_STREAM)


async def bounded_reads(response: httpx.Response, read_timeout: float) -> AsyncIterator[bytes]:
    """The body, each read bounded as the ordinary client's read timeout would bound it."""
    chunks = response.aiter_raw()
    while True:
        try:
            async with asyncio.timeout(read_timeout):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        yield chunk


class UpstreamUnavailable(DomainError):
    code = "gateway.upstream_unavailable"
    status = 503
    title = "Service unavailable"


class UpstreamTimeout(DomainError):
    code = "gateway.upstream_timeout"
    status = 504
    title = "Service timed out"


class UnknownService(DomainError):
    code = "gateway.unknown_service"
    status = 404
    title = "Unknown service"


def upstream_url(
    base_url: str, request: Request, service: str, *, prefix: str | None = None, query: bytes | None = None
) -> httpx.URL:
    """The service URL for this request, its path kept percent-encoded exactly as the client sent it.

    Building it from the decoded path would turn an encoded ``#`` or ``?`` into a fragment or a query.
    ``prefix`` is the part of the path the service does not see (``/api/<service>/`` by default);
    ``query`` replaces the client's query string.
    """
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    dropped = (prefix or f"/api/{service}/").encode()
    remainder = raw_path[len(dropped) :] if raw_path.startswith(dropped) else b""
    # Bytes a client failed to percent-encode are encoded now; what was encoded stays as it was.
    url = f"{base_url.rstrip('/')}/{quote(remainder, safe=URL_SAFE)}"
    if query is None:
        query = request.scope.get("query_string", b"")
    if query:
        url += "?" + quote(query, safe=URL_SAFE + "?")
    return httpx.URL(url)


async def forward(
    request: Request,
    *,
    client: httpx.AsyncClient,
    stream_client: httpx.AsyncClient,
    base_url: str,
    service: str,
    path: str,
    principal: Principal,
    private_key: str,
    token_ttl: int,
    issuer: str,
    timeout: float,
    prefix: str | None = None,
    query: bytes | None = None,
    content: bytes | None = None,
) -> Response:
    """Forward the request and stream the answer back as it comes, never buffered.

    An event stream goes through ``stream_client``: its own connection pool, so open streams never
    starve ordinary calls, and no read timeout, since a stream may be quiet between heartbeats. Its
    answer must still begin (status and headers) within ``timeout``; connecting is bounded by the
    client's connect timeout either way. A client that leaves closes the upstream response.
    ``prefix``, ``query`` and ``content`` let a route hide what the service must not see.
    """
    # Raw bytes both ways: a header value outside ASCII is passed on as sent, never re-encoded.
    headers: list[tuple[bytes, bytes]] = [
        (name, value)
        for name, value in request.headers.raw
        if name.lower().decode("latin-1") not in STRIPPED_INBOUND
    ]
    token = sign_principal(
        principal, private_key=private_key, audience=service, issuer=issuer, ttl_seconds=token_ttl
    )
    headers.append((PRINCIPAL_HEADER.encode(), token.encode()))
    request_id = request_id_var.get()
    if request_id:
        headers.append((b"X-Request-ID", request_id.encode()))
    traceparent = traceparent_var.get()
    if traceparent:
        headers.append((b"traceparent", traceparent.encode()))
    if request.client is not None:
        headers.append((b"X-Forwarded-For", request.client.host.encode()))
    if "host" in request.headers:
        headers.append((b"X-Forwarded-Host", request.headers["host"].encode("latin-1")))
    headers.append((b"X-Forwarded-Proto", request.url.scheme.encode()))
    body = await request.body() if content is None else content
    streaming = wants_event_stream(request)
    if streaming:
        client = stream_client
    upstream_request = client.build_request(
        request.method,
        upstream_url(base_url, request, service, prefix=prefix, query=query),
        headers=headers,
        content=body,
    )
    attempts = 2 if request.method in READ_METHODS else 1
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(timeout if streaming else None):
                upstream = await client.send(upstream_request, stream=True)
            break
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.RemoteProtocolError,
            httpx.ReadError,
        ) as error:
            # Nothing reached the service, or it hung up on a pooled connection: retry a read once.
            if attempt == attempts:
                log.warning("upstream %s unavailable: %s", service, error)
                raise UpstreamUnavailable(f"the {service} service is unavailable") from None
        except (httpx.TimeoutException, TimeoutError):
            raise UpstreamTimeout(f"the {service} service did not answer in time") from None
        except httpx.HTTPError as error:
            log.warning("upstream %s failed: %s", service, error)
            raise UpstreamUnavailable(f"the {service} service is unavailable") from None
    response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    if upstream.headers.get("content-length"):
        response_headers["content-length"] = upstream.headers["content-length"]
    if streaming and not is_event_stream(upstream):
        body_stream = bounded_reads(upstream, timeout)
    else:
        body_stream = upstream.aiter_raw()
    return StreamingResponse(
        body_stream,
        status_code=upstream.status_code,
        headers=response_headers,
        background=BackgroundTask(upstream.aclose),
    )
