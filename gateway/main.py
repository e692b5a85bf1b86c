"""Composition root of the gateway: authentication, scopes, limits and routing to every service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from citygrid.auth import MissingScope, PrincipalVerifier, load_private_key
from citygrid.http import create_base_app
from citygrid.metrics import KitMetrics
from citygrid.runtime import Runtime
from citygrid.serve import UPSTREAM_KEEPALIVE_SECONDS, serve
from gateway import admin, open311, openapi, proxy
from gateway.authn import Authenticator, RateLimiter
from gateway.routing import UPSTREAMS, is_routable, required_scope
from gateway.settings import GatewaySettings

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class GatewayState:
    settings: GatewaySettings
    client: httpx.AsyncClient
    stream_client: httpx.AsyncClient
    authenticator: Authenticator
    limiter: RateLimiter


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _proxy_route(service: str) -> Any:
    upstream = UPSTREAMS[service]

    async def route_to_service(path: str, request: Request) -> Response:
        state = gateway_state(request)
        principal, per_minute = await state.authenticator.authenticate(request)
        request.state.principal = principal
        if not is_routable(path):
            raise proxy.UnknownService(f"no such path: /api/{service}/{path}")
        scope = required_scope(upstream, request.method, path)
        if not principal.has_scope(scope):
            raise MissingScope(f"this call needs the scope '{scope}'", required_scope=scope)
        state.limiter.check(principal.subject, per_minute)
        return await proxy.forward(
            request,
            client=state.client,
            stream_client=state.stream_client,
            base_url=state.settings.upstreams[service],
            service=service,
            path=path,
            principal=principal,
            private_key=state.settings.internal_token_private_key,
            token_ttl=state.settings.internal_token_ttl_seconds,
            issuer=state.settings.internal_token_issuer,
            timeout=state.settings.upstream_timeout,
        )

    route_to_service.__name__ = f"route_to_{service}"
    return route_to_service


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    if settings.internal_token_private_key:
        load_private_key(settings.internal_token_private_key)
    unknown = set(settings.upstreams) - set(UPSTREAMS)
    if unknown:
        raise ValueError(f"unknown upstream services: {sorted(unknown)}")
    runtime = Runtime(
        settings=settings,
        metrics=KitMetrics(service=settings.service_name),
        verifier=PrincipalVerifier(public_key="", audience=settings.service_name),
        messaging=False,
    )

    @asynccontextmanager
    async def gateway_lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.upstream_timeout, connect=settings.upstream_connect_timeout)
        limits = httpx.Limits(
            max_connections=200, max_keepalive_connections=50, keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS
        )
        # Event streams: no read timeout (a stream is quiet between heartbeats), a pool of their own.
        stream_timeout = httpx.Timeout(
            connect=settings.upstream_connect_timeout,
            read=None,
            write=settings.upstream_timeout,
            pool=settings.upstream_timeout,
        )
        stream_limits = httpx.Limits(
            max_connections=settings.upstream_event_streams, max_keepalive_connections=0
        )
        async with (
            httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as client,
            httpx.AsyncClient(
                timeout=stream_timeout, limits=stream_limits, follow_redirects=False
            ) as stream_client,
        ):
            app.state.gateway = GatewayState(
                settings=settings,
                client=client,
                stream_client=stream_client,
                authenticator=Authenticator(settings, runtime.db),
                limiter=RateLimiter(),
            )
            yield

    app = create_base_app(
        runtime,
        title="CityGrid exchange API",
        description="One door to every CityGrid service: `/api/<service>/v1/...`, authenticated and scoped.",
        extra_lifespan=gateway_lifespan,
        openapi_url=None,
    )
    app.include_router(admin.router)
    for service in sorted(settings.upstreams):
        app.add_api_route(
            f"/api/{service}/{{path:path}}",
            _proxy_route(service),
            methods=PROXY_METHODS,
            include_in_schema=False,
            name=f"proxy_{service}",
        )

    if "case" in settings.upstreams:
        app.add_api_route(
            "/open311/v2/{path:path}",
            open311.route_to_open311,
            methods=open311.METHODS,
            include_in_schema=False,
            name="proxy_open311",
        )

    async def platform_openapi(request: Request) -> dict[str, Any]:
        own = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        return await openapi.merged_openapi(own, gateway_state(request).client, settings.upstreams)

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="CityGrid exchange API")

    app.add_api_route("/openapi.json", platform_openapi, include_in_schema=False, methods=["GET"])
    app.add_api_route("/docs", swagger_ui, include_in_schema=False, methods=["GET"])
    return app


def main() -> None:
    settings = GatewaySettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
