"""Forwarding to a service: the signed principal in, hop-by-hop headers out, timeouts as 503/504.

Every upstream has its own connection pools (bulkheads): a slow service can hold all of its own
connections, never another's; a call that cannot get a connection within the pool timeout is
answered 503 ``gateway.upstream_saturated`` at once. Request bodies stream through: only the first
``upstream_buffered_body_bytes`` are read before the call, so a gateway holds a bounded amount of
every upload, never the whole of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from citygrid.auth import PRINCIPAL_HEADER, Principal, PrincipalSigner, RequestTarget
from citygrid.errors import DomainError
from citygrid.logging import request_id_var, traceparent_var
from citygrid.middleware import FORWARDED_PREFIX_HEADER
from citygrid.serve import UPSTREAM_KEEPALIVE_SECONDS
from gateway.routing import READ_METHODS
from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Client credentials end at the gateway; a forged principal header must never reach a service; and
# nothing a client says about addresses, hosts, ports or prefixes passes: the gateway says it itself.
STRIPPED_INBOUND = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "cookie",
    "expect",
    PRINCIPAL_HEADER.lower(),
    "x-request-id",
    "traceparent",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-forwarded-for",
}
# Every X-Forwarded-* (For, Host, Proto, Port, Prefix, Server, …) and every internal header.
STRIPPED_INBOUND_PREFIXES = (b"x-forwarded-", b"x-citygrid-")

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


class UpstreamSaturated(DomainError):
    code = "gateway.upstream_saturated"
    status = 503
    title = "Service saturated"


class UpstreamTimeout(DomainError):
    code = "gateway.upstream_timeout"
    status = 504
    title = "Service timed out"


class UnknownService(DomainError):
    code = "gateway.unknown_service"
    status = 404
    title = "Unknown service"


class BodyTimeout(DomainError):
    code = "gateway.body_timeout"
    status = 408
    title = "Request body timeout"


class ClientGone(DomainError):
    code = "gateway.client_disconnected"
    status = 400
    title = "Client disconnected"


class TooManyUploads(DomainError):
    code = "gateway.too_many_uploads"
    status = 429
    title = "Too many uploads at once"


@dataclass
class UploadSlots:
    """Streamed bodies in flight per principal: each holds an upstream connection while its client
    sends, so one consumer's slow uploads may hold only so many of a service's connections."""

    per_principal: int
    held: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def hold(self, subject: str) -> Iterator[None]:
        if self.per_principal and self.held.get(subject, 0) >= self.per_principal:
            raise TooManyUploads(
                f"at most {self.per_principal} large bodies at once per caller; retry when one is done",
                headers={"Retry-After": "1"},
                retry_after_seconds=1,
            )
        self.held[subject] = self.held.get(subject, 0) + 1
        try:
            yield
        finally:
            self.held[subject] -= 1
            if not self.held[subject]:
                del self.held[subject]


@dataclass
class UpstreamPool:
    """One service's connections: ordinary calls, and event streams (no read timeout) apart."""

    service: str
    base_url: str
    client: httpx.AsyncClient
    stream_client: httpx.AsyncClient

    @classmethod
    def open(cls, service: str, base_url: str, settings: GatewaySettings) -> UpstreamPool:
        connections = settings.connections_for(service)
        timeout = httpx.Timeout(
            settings.upstream_timeout,
            connect=settings.upstream_connect_timeout,
            pool=settings.upstream_pool_timeout,
        )
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS,
        )
        # Event streams: no read timeout (a stream is quiet between heartbeats), a pool of their own.
        stream_timeout = httpx.Timeout(
            connect=settings.upstream_connect_timeout,
            read=None,
            write=settings.upstream_timeout,
            pool=settings.upstream_pool_timeout,
        )
        stream_limits = httpx.Limits(
            max_connections=settings.upstream_event_streams, max_keepalive_connections=0
        )
        return cls(
            service=service,
            base_url=base_url,
            client=httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False),
            stream_client=httpx.AsyncClient(
                timeout=stream_timeout, limits=stream_limits, follow_redirects=False
            ),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.stream_client.aclose()


class NoSigningKey(DomainError):
    code = "gateway.no_signing_key"
    status = 503
    title = "Gateway not configured"


def signer_of(settings: GatewaySettings) -> PrincipalSigner | None:
    """The internal principal's signer, its key parsed once (None: this gateway has no key)."""
    if not settings.internal_token_private_key:
        return None
    return PrincipalSigner(
        private_key=settings.internal_token_private_key,
        issuer=settings.internal_token_issuer,
        ttl_seconds=settings.internal_token_ttl_seconds,
    )


@dataclass(frozen=True)
class Forwarding:
    """What every forwarded call needs from the gateway's settings."""

    signer: PrincipalSigner | None
    timeout: float
    buffered_body_bytes: int
    body_idle_timeout: float
    public_scheme: str | None = None
    public_host: str | None = None
    on_saturated: Callable[[str], None] = field(default=lambda service: None)
    uploads: UploadSlots = field(default_factory=lambda: UploadSlots(0))

    @classmethod
    def of(
        cls,
        settings: GatewaySettings,
        on_saturated: Callable[[str], None],
        *,
        signer: PrincipalSigner | None = None,
    ) -> Forwarding:
        scheme, _, host = settings.public_base_url.partition("://")
        return cls(
            signer=signer or signer_of(settings),
            timeout=settings.upstream_timeout,
            buffered_body_bytes=settings.upstream_buffered_body_bytes,
            body_idle_timeout=settings.request_body_idle_timeout,
            public_scheme=scheme or None,
            public_host=host or None,
            on_saturated=on_saturated,
            uploads=UploadSlots(settings.upstream_streamed_bodies_per_principal),
        )


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


def inbound_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers a service may see: raw bytes, a value outside ASCII passed on as sent."""
    kept = []
    for name, value in raw:
        lowered = name.lower()
        if lowered.decode("latin-1") in STRIPPED_INBOUND or lowered.startswith(STRIPPED_INBOUND_PREFIXES):
            continue
        kept.append((name, value))
    return kept


def gateway_origin(request: Request, forwarding: Forwarding) -> tuple[str, str | None]:
    """The scheme and host the services render: the configured public origin, else the address the
    gateway listens on. Never the client's ``Host``: a client could make a service render its host."""
    if forwarding.public_scheme and forwarding.public_host:
        return forwarding.public_scheme, forwarding.public_host
    server = request.scope.get("server")
    if not server:
        return request.url.scheme, None
    host, port = server[0], server[1]
    if ":" in str(host):
        host = f"[{host}]"
    return request.url.scheme, f"{host}:{port}" if port else str(host)


async def _next_chunk(chunks: AsyncIterator[bytes], idle_timeout: float) -> bytes | None:
    try:
        async with asyncio.timeout(idle_timeout):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise BodyTimeout(f"the request body stalled for more than {idle_timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone("the client went away while sending the body") from None


async def request_content(request: Request, forwarding: Forwarding) -> bytes | AsyncIterator[bytes]:
    """The client's body: whole when it is small, else a stream that starts with what was read.

    The kit's body limit counts what is received, so a body over it raises 413 from inside the stream;
    the service then sees the connection end before the body does, never a complete request.
    """
    if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
        return b""
    chunks = request.stream()
    head: list[bytes] = []
    size = 0
    while size <= forwarding.buffered_body_bytes:
        chunk = await _next_chunk(chunks, forwarding.body_idle_timeout)
        if chunk is None:
            return b"".join(head)
        if chunk:
            head.append(chunk)
            size += len(chunk)

    async def rest() -> AsyncIterator[bytes]:
        while head:
            yield head.pop(0)
        while (chunk := await _next_chunk(chunks, forwarding.body_idle_timeout)) is not None:
            if chunk:
                yield chunk

    return rest()


async def forward(
    request: Request,
    upstream: UpstreamPool,
    forwarding: Forwarding,
    *,
    path: str,
    principal: Principal,
    client_address: str,
    forwarded_prefix: str | None = None,
    prefix: str | None = None,
    query: bytes | None = None,
    content: bytes | None = None,
    response_headers: dict[str, str] | None = None,
) -> Response:
    """Forward the request and stream the answer back as it comes, never buffered.

    An event stream goes through the upstream's stream client: its own connection pool, so open
    streams never starve ordinary calls, and no read timeout, since a stream may be quiet between
    heartbeats. Its answer must still begin (status and headers) within the timeout; connecting is
    bounded by the connect timeout either way. A client that leaves closes the upstream response.
    ``prefix``, ``query`` and ``content`` let a route hide what the service must not see;
    ``forwarded_prefix`` is the path the service is reached under (``X-Forwarded-Prefix``).
    """
    service = upstream.service
    if forwarding.signer is None:
        raise NoSigningKey("this gateway has no key to sign the internal principal with")
    url = upstream_url(upstream.base_url, request, service, prefix=prefix, query=query)
    headers = inbound_headers(request.headers.raw)
    # Bound to this one call: its method and the path and query exactly as the service receives them.
    token = forwarding.signer.sign(
        principal, audience=service, request=RequestTarget(request.method, url.raw_path)
    )
    headers.append((PRINCIPAL_HEADER.encode(), token.encode()))
    request_id = request_id_var.get()
    if request_id:
        headers.append((b"X-Request-ID", request_id.encode()))
    traceparent = traceparent_var.get()
    if traceparent:
        headers.append((b"traceparent", traceparent.encode()))
    headers.append((b"X-Forwarded-For", client_address.encode("latin-1")))
    scheme, host = gateway_origin(request, forwarding)
    if host:
        headers.append((b"X-Forwarded-Host", host.encode("latin-1")))
    headers.append((b"X-Forwarded-Proto", scheme.encode()))
    if forwarded_prefix:
        headers.append((FORWARDED_PREFIX_HEADER.encode(), forwarded_prefix.encode()))
    body: bytes | AsyncIterator[bytes] = (
        await request_content(request, forwarding) if content is None else content
    )
    if not isinstance(body, bytes) and "content-length" in request.headers:
        # The client's own body streamed on: its declared length goes with it (no chunked re-framing).
        headers.append((b"Content-Length", request.headers["content-length"].encode()))
    streaming = wants_event_stream(request)
    client = upstream.stream_client if streaming else upstream.client
    upstream_request = client.build_request(request.method, url, headers=headers, content=body)
    # A read is retried once when a pooled connection turns out closed, if its body can be sent again.
    attempts = 2 if request.method in READ_METHODS and isinstance(body, bytes) else 1
    with contextlib.ExitStack() as sending:
        if not isinstance(body, bytes):
            sending.enter_context(forwarding.uploads.hold(principal.subject))
        upstream_response = await _send(client, upstream_request, service, forwarding, streaming, attempts)
    answer_headers = {k: v for k, v in upstream_response.headers.items() if k.lower() not in HOP_BY_HOP}
    if upstream_response.headers.get("content-length"):
        answer_headers["content-length"] = upstream_response.headers["content-length"]
    answer_headers.update(response_headers or {})
    declared = upstream_response.headers.get("content-length", "")
    if not streaming and declared.isdigit() and int(declared) <= forwarding.buffered_body_bytes:
        # A small answer of known length (most of them): read whole and written in one piece, without
        # a streamed response's per-chunk machinery; the memory it holds is bounded by the setting.
        return Response(
            await _read_small(upstream_response, service, forwarding),
            status_code=upstream_response.status_code,
            headers=answer_headers,
        )
    if streaming and not is_event_stream(upstream_response):
        body_stream = bounded_reads(upstream_response, forwarding.timeout)
    else:
        body_stream = upstream_response.aiter_raw()
    return StreamingResponse(
        body_stream,
        status_code=upstream_response.status_code,
        headers=answer_headers,
        background=BackgroundTask(upstream_response.aclose),
    )


async def _read_small(upstream_response: httpx.Response, service: str, forwarding: Forwarding) -> bytes:
    try:
        async with asyncio.timeout(forwarding.timeout):
            # Raw, as the streamed path forwards it: a compressed answer stays compressed.
            return b"".join([chunk async for chunk in upstream_response.aiter_raw()])
    except (httpx.TimeoutException, TimeoutError):
        raise UpstreamTimeout(f"the {service} service did not answer in time") from None
    except httpx.HTTPError as error:
        log.warning("upstream %s failed mid-answer: %s", service, error)
        raise UpstreamUnavailable(f"the {service} service is unavailable") from None
    finally:
        await upstream_response.aclose()


async def _send(
    client: httpx.AsyncClient,
    upstream_request: httpx.Request,
    service: str,
    forwarding: Forwarding,
    streaming: bool,
    attempts: int,
) -> httpx.Response:
    """Send the request, its whole body, and return once the answer's head is in; failures as problems."""
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(forwarding.timeout if streaming else None):
                upstream_response = await client.send(upstream_request, stream=True)
            return upstream_response
        except httpx.PoolTimeout:
            forwarding.on_saturated(service)
            log.warning("upstream %s saturated: no free connection", service)
            raise UpstreamSaturated(
                f"the {service} service is at its connection limit; retry shortly",
                headers={"Retry-After": "1"},
                retry_after_seconds=1,
            ) from None
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
    raise AssertionError("unreachable: the last attempt returned or raised")
