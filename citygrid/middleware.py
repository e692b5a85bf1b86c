"""ASGI middleware of every CityGrid app: request context and the request-body size limit; and the
path prefix a service is reached under, for the ``Location`` headers it writes."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citygrid.errors import DomainError
from citygrid.logging import request_id_var, traceparent_var

REQUEST_ID_HEADER = "x-request-id"
# The gateway names the path a service is reached under (``/api/case``); only path segments of
# unreserved characters are believed, so no value can turn a Location into another host's URL.
FORWARDED_PREFIX_HEADER = "X-Forwarded-Prefix"
_FORWARDED_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class PayloadTooLarge(DomainError):
    code = "http.payload_too_large"
    status = 413
    title = "Payload too large"


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def forwarded_prefix(connection: HTTPConnection) -> str:
    """The path prefix the client reached this service under, or ``""`` when called directly."""
    value = connection.headers.get(FORWARDED_PREFIX_HEADER, "").rstrip("/")
    if (
        not value
        or not _FORWARDED_PREFIX.match(value)
        or any(segment in (".", "..") for segment in value.split("/"))
    ):
        return ""
    return value


def public_path(connection: HTTPConnection, path: str) -> str:
    """``path`` of this service as its client sees it: ``/v1/cases/…`` becomes ``/api/case/v1/cases/…``
    through the gateway and stays ``/v1/cases/…`` on a direct call. For ``Location`` headers."""
    return forwarded_prefix(connection) + path


class RequestContextMiddleware:
    """Echo or mint ``X-Request-ID``; accept or start a W3C ``traceparent``; expose both to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        traceparent = header(scope, b"traceparent")
        if traceparent is None or not _TRACEPARENT.match(traceparent):
            traceparent = new_traceparent()
        request_token = request_id_var.set(request_id)
        trace_token = traceparent_var.set(traceparent)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(request_token)
            traceparent_var.reset(trace_token)


class UnexpectedErrorMiddleware:
    """Answer an unexpected exception with the 500 problem inside the app.

    An exception that escapes the app makes uvicorn close the connection after the response; the
    gateway, which pools its connections to the service, would then fail the next caller's request
    on that connection. Caught here, the connection stays usable like after any other answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # too late for a problem document: let the server end the response
                raise
            from citygrid.problems import unexpected_error_response

            response = unexpected_error_response(scope.get("method", ""), scope.get("path", ""))
            await response(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, whether announced by Content-Length or streamed.

    Image bodies (photos uploaded as they are) have their own, larger limit; every other body keeps
    the small one, so a JSON endpoint never parses megabytes.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_image_bytes: int | None = None,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_image_bytes = max(max_bytes, max_image_bytes or max_bytes)
        # Routes that take a large upload of their own (a city's grid file) and read it streamed.
        self.path_limits = dict(path_limits or {})

    def limit_for(self, scope: Scope) -> int:
        if scope["path"] in self.path_limits:
            return self.path_limits[scope["path"]]
        content_type = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        return self.max_image_bytes if content_type.startswith("image/") else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            from citygrid.problems import problem

            response = problem(
                413,
                PayloadTooLarge.code,
                PayloadTooLarge.title,
                f"the body is over {max_bytes} bytes",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge(f"the body is over {max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)
