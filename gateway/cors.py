"""CORS for the city's browser frontends: configured origins only, preflights answered before anything else.

Starlette's ``CORSMiddleware`` does not fit: it sends ``Access-Control-Expose-Headers`` to every
origin and answers a refused preflight with the allowed methods and headers. Here an origin that is
not configured gets no ``Access-Control-*`` header at all, and its preflight a 403 problem. A
preflight from a configured origin is answered at once, without credentials (browsers send none on
a preflight), with the methods and headers the API takes. Credentials travel in headers
(``Authorization``, ``X-API-Key``), never cookies, so ``Access-Control-Allow-Credentials`` is not sent.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citygrid.middleware import header
from citygrid.problems import problem

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = (
    "Authorization",
    "X-API-Key",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "Last-Event-ID",
    "Content-Type",
    "Accept",
    "Accept-Language",
    "X-Request-ID",
    "traceparent",
    "tracestate",
)
EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "X-Request-ID",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Idempotent-Replayed",
)
VARY_PREFLIGHT = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: Collection[str], max_age: int = 600) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.preflight_headers = {
            "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(max_age),
            "Vary": VARY_PREFLIGHT,
        }
        self.exposed = ", ".join(EXPOSED_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if origin is None and not self.origins:
            await self.app(scope, receive, send)
            return
        allowed = origin is not None and origin in self.origins
        preflight = scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method")
        if origin is not None and preflight:
            response: Response
            if allowed:
                response = Response(
                    status_code=204, headers={"Access-Control-Allow-Origin": origin, **self.preflight_headers}
                )
            else:
                response = problem(
                    403,
                    "gateway.cors_origin_not_allowed",
                    "Origin not allowed",
                    "this origin is not one of the frontends this gateway serves",
                    instance=scope.get("path"),
                    headers={"Vary": VARY_PREFLIGHT},
                )
            await response(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Answers differ by Origin once CORS is on: caches must keep them apart.
                headers = MutableHeaders(scope=message)
                vary = [v.strip() for value in headers.getlist("vary") for v in value.split(",")]
                if "Origin" not in vary:
                    headers.append("Vary", "Origin")
                if allowed and origin is not None:
                    headers["Access-Control-Allow-Origin"] = origin
                    headers["Access-Control-Expose-Headers"] = self.exposed
            await send(message)

        await self.app(scope, receive, send_with_cors)
