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
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, overload
from urllib.parse import quote

import aiohttp
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from yarl import URL

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


def is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").lower().startswith(EVENT_STREAM)


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


class UpstreamSlots:
    """A pool's connections as slots: waiting for one is bounded by the pool timeout, and a call that
    cannot get one is told at once that the service is saturated (the connector alone would queue it)."""

    def __init__(self, size: int, wait: float) -> None:
        self.wait = wait
        self.free = asyncio.Semaphore(size)

    async def take(self) -> bool:
        """True once a slot is held; False when none came free within the wait."""
        try:
            async with asyncio.timeout(self.wait):
                await self.free.acquire()
        except TimeoutError:
            return False
        return True


@dataclass
class UpstreamPool:
    """One service's connections: ordinary calls, and event streams (no read timeout) apart.

    aiohttp's client: keep-alive connections and a parser in C, about a tenth of the CPU per call of
    the client this replaced (docs/performance.md). No cookie jar (a service's cookie for one client
    must never go out with another's call) and no headers of its own beyond ``Host``.
    """

    service: str
    base_url: str
    calls: aiohttp.ClientSession
    streams: aiohttp.ClientSession
    call_slots: UpstreamSlots
    stream_slots: UpstreamSlots
    # For a call whose body is streamed: the service answers only after the whole file is stored.
    upload_timeout: aiohttp.ClientTimeout = field(default_factory=aiohttp.ClientTimeout)

    @classmethod
    def open(cls, service: str, base_url: str, settings: GatewaySettings) -> UpstreamPool:
        connections = settings.connections_for(service)
        calls = _session(
            aiohttp.TCPConnector(limit=connections, keepalive_timeout=UPSTREAM_KEEPALIVE_SECONDS),
            aiohttp.ClientTimeout(
                sock_connect=settings.upstream_connect_timeout, sock_read=settings.upstream_timeout
            ),
        )
        # Event streams: no read timeout (a stream is quiet between heartbeats), connections of their own.
        streams = _session(
            aiohttp.TCPConnector(limit=settings.upstream_event_streams, force_close=True),
            aiohttp.ClientTimeout(sock_connect=settings.upstream_connect_timeout),
        )
        return cls(
            service=service,
            base_url=base_url,
            calls=calls,
            streams=streams,
            call_slots=UpstreamSlots(connections, settings.upstream_pool_timeout),
            stream_slots=UpstreamSlots(settings.upstream_event_streams, settings.upstream_pool_timeout),
            upload_timeout=aiohttp.ClientTimeout(
                sock_connect=settings.upstream_connect_timeout, sock_read=settings.upstream_upload_timeout
            ),
        )

    async def get_json(self, path: str, timeout: float) -> Any:
        """A document the gateway itself reads from the service (its OpenAPI), on the service's own pool."""
        if not await self.call_slots.take():
            raise UpstreamSaturated(f"the {self.service} service is at its connection limit")
        try:
            async with asyncio.timeout(timeout):
                async with self.calls.get(f"{self.base_url.rstrip('/')}{path}") as response:
                    response.raise_for_status()
                    return await response.json(content_type=None)
        finally:
            self.call_slots.free.release()

    async def aclose(self) -> None:
        await self.calls.close()
        await self.streams.close()


def _session(connector: aiohttp.TCPConnector, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )


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
    # The longest answer a route that rewrites answers (the exchange) reads whole; longer ones 502.
    rewritten_body_bytes: int = 8_388_608
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
            rewritten_body_bytes=settings.exchange_answer_bytes,
            public_scheme=scheme or None,
            public_host=host or None,
            on_saturated=on_saturated,
            uploads=UploadSlots(settings.upstream_streamed_bodies_per_principal),
        )


def upstream_url(
    base_url: str,
    request: Request,
    service: str,
    *,
    prefix: str | None = None,
    query: bytes | None = None,
    target: bytes | None = None,
) -> URL:
    """The service URL for this request, its path kept percent-encoded exactly as the client sent it.

    Building it from the decoded path would turn an encoded ``#`` or ``?`` into a fragment or a query.
    ``prefix`` is the part of the path the service does not see (``/api/<service>/`` by default);
    ``query`` replaces the client's query string; ``target`` the whole path (percent-encoded, without
    its leading slash) where the service's path is not the client's (the exchange's datasets).
    """
    if target is None:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        dropped = (prefix or f"/api/{service}/").encode()
        remainder = raw_path[len(dropped) :] if raw_path.startswith(dropped) else b""
    else:
        remainder = target
    # Bytes a client failed to percent-encode are encoded now; what was encoded stays as it was.
    url = f"{base_url.rstrip('/')}/{quote(remainder, safe=URL_SAFE)}"
    if query is None:
        query = request.scope.get("query_string", b"")
    if query:
        url += "?" + quote(query, safe=URL_SAFE + "?")
    return URL(url, encoded=True)


class InvalidHeader(DomainError):
    code = "http.invalid_header"
    status = 400
    title = "Invalid header"


# What RFC 9110 forbids in a field value (HTAB aside); the upstream client refuses to write them.
FORBIDDEN_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def inbound_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers a service may see, a UTF-8 value outside ASCII passed on byte for byte.

    A value that is not UTF-8 (a stray Latin-1 byte) or holds a control character is refused with
    400 rather than passed on changed.
    """
    kept = []
    for name, value in raw:
        lowered = name.lower()
        if lowered.decode("latin-1") in STRIPPED_INBOUND or lowered.startswith(STRIPPED_INBOUND_PREFIXES):
            continue
        label = name.decode("latin-1")
        if FORBIDDEN_IN_VALUE.search(value):
            raise InvalidHeader(f"the {label} header holds a control character")
        try:
            kept.append((label, value.decode("utf-8")))
        except UnicodeDecodeError:
            raise InvalidHeader(f"the {label} header is not UTF-8") from None
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
    target: bytes | None = None,
    rewrite: Callable[[bytes], bytes] | None = None,
) -> Response:
    """Forward the request and pass the answer back: whole when small, else streamed as it comes.

    An event stream goes through the upstream's stream session: its own connections, so open
    streams never starve ordinary calls, and no read timeout, since a stream may be quiet between
    heartbeats. Its answer must still begin (status and headers) within the timeout; connecting is
    bounded by the connect timeout either way. A client that leaves closes the upstream response.
    ``prefix``, ``query`` and ``content`` let a route hide what the service must not see;
    ``forwarded_prefix`` is the path the service is reached under (``X-Forwarded-Prefix``).
    ``rewrite`` turns a successful JSON answer into what the client gets (read whole, uncompressed).
    """
    service = upstream.service
    if forwarding.signer is None:
        raise NoSigningKey("this gateway has no key to sign the internal principal with")
    url = upstream_url(upstream.base_url, request, service, prefix=prefix, query=query, target=target)
    headers = inbound_headers(request.headers.raw)
    if rewrite is not None:
        # The answer is read and rewritten here: it must come as the service wrote it, in JSON.
        headers = [
            (name, value) for name, value in headers if name.lower() not in ("accept-encoding", "accept")
        ]
        headers.append(("Accept", "application/json"))
    # Bound to this one call: its method and the path and query exactly as the service receives them.
    token = forwarding.signer.sign(
        principal, audience=service, request=RequestTarget(request.method, url.raw_path_qs.encode())
    )
    headers.append((PRINCIPAL_HEADER, token))
    request_id = request_id_var.get()
    if request_id:
        headers.append(("X-Request-ID", request_id))
    traceparent = traceparent_var.get()
    if traceparent:
        headers.append(("traceparent", traceparent))
    headers.append(("X-Forwarded-For", client_address))
    scheme, host = gateway_origin(request, forwarding)
    if host:
        headers.append(("X-Forwarded-Host", host))
    headers.append(("X-Forwarded-Proto", scheme))
    if forwarded_prefix:
        headers.append((FORWARDED_PREFIX_HEADER, forwarded_prefix))
    body: bytes | AsyncIterator[bytes] = (
        await request_content(request, forwarding) if content is None else content
    )
    body_failure = BodyFailure()
    if not isinstance(body, bytes):
        if "content-length" in request.headers:
            # The client's own body streamed on: its declared length goes with it (no chunked re-framing).
            headers.append(("Content-Length", request.headers["content-length"]))
        body = body_failure.watch(body)
    elif body or request.method not in READ_METHODS:
        headers.append(("Content-Length", str(len(body))))
    call = UpstreamCall(
        upstream=upstream,
        forwarding=forwarding,
        streaming=rewrite is None and wants_event_stream(request),
        method=request.method,
        url=url,
        headers=headers,
        body=body if body else None,
        body_failure=body_failure,
    )
    with contextlib.ExitStack() as sending:
        if not isinstance(body, bytes):
            sending.enter_context(forwarding.uploads.hold(principal.subject))
        upstream_response = await call.send()
    try:
        if rewrite is not None and 200 <= upstream_response.status < 300:
            if not _rewritable(upstream_response):
                # Never passed on unread: what is not JSON cannot be masked.
                raise UnexpectedAnswer(f"the {service} service answered what this route does not pass on")
            return await _rewritten(call, upstream_response, rewrite, response_headers, forwarding)
        return await _answer(call, upstream_response, forwarding, response_headers)
    except BaseException:
        call.close()
        raise


class UnexpectedAnswer(DomainError):
    code = "gateway.unexpected_answer"
    status = 502
    title = "Bad gateway"


def _rewritable(upstream_response: aiohttp.ClientResponse) -> bool:
    content_type = upstream_response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" and "content-encoding" not in upstream_response.headers


async def _rewritten(
    call: UpstreamCall,
    upstream_response: aiohttp.ClientResponse,
    rewrite: Callable[[bytes], bytes],
    response_headers: dict[str, str] | None,
    forwarding: Forwarding,
) -> Response:
    raw = await call.read_whole(limit=forwarding.rewritten_body_bytes)
    if raw is None:
        raise UnexpectedAnswer(
            f"the {call.upstream.service} service answered more than {forwarding.rewritten_body_bytes} bytes"
        )
    body = rewrite(raw)
    own = [
        (name.lower().encode(), value.encode("latin-1")) for name, value in (response_headers or {}).items()
    ]
    replaced = {name for name, _ in own} | {b"content-length", b"etag"}
    kept = [(n, v) for n, v in answer_headers_of(upstream_response) if n.lower() not in replaced]
    answer = Response(body, status_code=upstream_response.status)
    answer.raw_headers = [*kept, (b"content-length", str(len(body)).encode()), *own]
    return answer


async def _answer(
    call: UpstreamCall,
    upstream_response: aiohttp.ClientResponse,
    forwarding: Forwarding,
    response_headers: dict[str, str] | None,
) -> Response:
    own = [
        (name.lower().encode(), value.encode("latin-1")) for name, value in (response_headers or {}).items()
    ]
    replaced = {name for name, _ in own}
    answer_headers = [(n, v) for n, v in answer_headers_of(upstream_response) if n.lower() not in replaced]
    declared = upstream_response.headers.get("content-length", "")
    answer: Response
    if not call.streaming and declared.isdigit() and int(declared) <= forwarding.buffered_body_bytes:
        # A small answer of known length (most of them): read whole and written in one piece, without
        # a streamed response's per-chunk machinery; the memory it holds is bounded by the setting.
        answer = Response(await call.read_whole(), status_code=upstream_response.status)
    else:
        bounded = call.streaming and not is_event_stream(upstream_response)
        answer = StreamingResponse(
            call.chunks(read_timeout=forwarding.timeout if bounded else None),
            status_code=upstream_response.status,
            background=BackgroundTask(call.close),
        )
    # The service's headers as it sent them, repeated ones (Set-Cookie, Link) included, then the gateway's.
    answer.raw_headers = answer_headers + own
    return answer


HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP - {"content-length"})


def answer_headers_of(upstream_response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    """The service's headers a client may see, the bytes as they came (hop-by-hop ones dropped; the
    length stays, since the body goes on as the service framed it)."""
    return [
        (name, value) for name, value in upstream_response.raw_headers if name.lower() not in HOP_BY_HOP_BYTES
    ]


@dataclass
class BodyFailure:
    """Why a streamed request body ended early (too large, stalled, the client gone): the client's
    problem, which the upstream client would otherwise report as a broken connection."""

    error: Exception | None = None

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as error:
            self.error = error
            raise


@dataclass
class UpstreamCall:
    """One call to a service: its connection slot taken before it is sent and given back exactly once,
    when the answer has been read or the client has gone."""

    upstream: UpstreamPool
    forwarding: Forwarding
    streaming: bool
    method: str
    url: URL
    headers: list[tuple[str, str]]
    body: bytes | AsyncIterator[bytes] | None
    body_failure: BodyFailure
    response: aiohttp.ClientResponse | None = None
    slots: UpstreamSlots | None = None

    async def send(self) -> aiohttp.ClientResponse:
        """Send the request, its whole body, and return once the answer's head is in; failures as problems."""
        service = self.upstream.service
        slots = self.upstream.stream_slots if self.streaming else self.upstream.call_slots
        if not await slots.take():
            self.forwarding.on_saturated(service)
            log.warning("upstream %s saturated: no free connection", service)
            raise UpstreamSaturated(
                f"the {service} service is at its connection limit; retry shortly",
                headers={"Retry-After": "1"},
                retry_after_seconds=1,
            )
        self.slots = slots
        try:
            self.response = await self._send_with_retry()
        except BaseException:
            self.close()
            raise
        return self.response

    async def _send_with_retry(self) -> aiohttp.ClientResponse:
        service = self.upstream.service
        session = self.upstream.streams if self.streaming else self.upstream.calls
        # A read is retried once when nothing reached the service, if its body can be sent again.
        streamed_body = isinstance(self.body, AsyncIterator)
        attempts = 2 if self.method in READ_METHODS and not streamed_body else 1
        timeout = self.upstream.upload_timeout if streamed_body and not self.streaming else session.timeout
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(self.forwarding.timeout if self.streaming else None):
                    return await session.request(
                        self.method,
                        self.url,
                        headers=self.headers,
                        data=self.body,
                        allow_redirects=False,
                        compress=None,
                        timeout=timeout,
                    )
            except aiohttp.SocketTimeoutError:
                raise UpstreamTimeout(f"the {service} service did not answer in time") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                if self.body_failure.error is not None:
                    raise self.body_failure.error from None
                # Refused, not reached in time, or a pooled connection it had closed: retry a read once.
                if attempt == attempts:
                    log.warning("upstream %s unavailable: %s", service, error)
                    raise UpstreamUnavailable(f"the {service} service is unavailable") from None
            except TimeoutError:
                raise UpstreamTimeout(f"the {service} service did not answer in time") from None
            except aiohttp.ClientError as error:
                log.warning("upstream %s failed: %s", service, error)
                raise UpstreamUnavailable(f"the {service} service is unavailable") from None
        raise AssertionError("unreachable: the last attempt returned or raised")

    @overload
    async def read_whole(self) -> bytes: ...
    @overload
    async def read_whole(self, limit: int) -> bytes | None: ...
    async def read_whole(self, limit: int | None = None) -> bytes | None:
        """The whole answer; None when it is longer than ``limit``."""
        assert self.response is not None
        service = self.upstream.service
        try:
            async with asyncio.timeout(self.forwarding.timeout):
                if limit is None:
                    # Raw, as the streamed path forwards it: a compressed answer stays compressed.
                    return await self.response.read()
                pieces: list[bytes] = []
                size = 0
                while chunk := await self.response.content.readany():
                    size += len(chunk)
                    if size > limit:
                        return None
                    pieces.append(chunk)
                return b"".join(pieces)
        except TimeoutError:
            raise UpstreamTimeout(f"the {service} service did not answer in time") from None
        except aiohttp.ClientError as error:
            log.warning("upstream %s failed mid-answer: %s", service, error)
            raise UpstreamUnavailable(f"the {service} service is unavailable") from None
        finally:
            self.close()

    async def chunks(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        """The body as it comes, each read bounded by ``read_timeout`` (None: an event stream)."""
        assert self.response is not None
        content = self.response.content
        try:
            while True:
                async with asyncio.timeout(read_timeout):
                    chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except aiohttp.ClientError as error:
            # The head has gone out: all that is left is to end the client's answer early.
            log.warning("upstream %s failed mid-answer: %s", self.upstream.service, error)
        finally:
            self.close()

    def close(self) -> None:
        """Give the connection back (or drop it, mid-answer) and its slot; a second call does nothing."""
        if self.response is not None:
            if self.response.content.is_eof():
                self.response.release()
            else:
                self.response.close()
            self.response = None
        if self.slots is not None:
            self.slots.free.release()
            self.slots = None
