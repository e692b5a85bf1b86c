"""The app factory every service uses: problem+json, request context, metrics, health, admin.

Routers given to the factory are served behind the internal principal (401 without it, or when the
token was issued for another request) and the service's scope declaration (403
``auth.missing_scope``: the same ``citygrid.scopes.ScopeRules`` the gateway checks), and accept only
JSON bodies (415 otherwise); ``open_routers`` skip the JSON rule (e.g. form-encoded APIs). Both
refuse a NUL in the path or the query string (422 ``http.nul_character``) before the route's own
dependencies and parameters see it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.routing import Route

from citygrid import admin, health
from citygrid.auth import PrincipalVerifier, current_principal
from citygrid.db import install_database_problem_handlers
from citygrid.errors import DomainError, InvalidInput
from citygrid.inbox import ConsumerSpec
from citygrid.metrics import KitMetrics, MetricsMiddleware, metrics_endpoint
from citygrid.middleware import BodyLimitMiddleware, RequestContextMiddleware, UnexpectedErrorMiddleware
from citygrid.problems import install_problem_handlers
from citygrid.runtime import Runtime
from citygrid.scopes import ScopeRules, require_declared_scope
from citygrid.settings import ServiceSettings

log = logging.getLogger("citygrid.http")
# Environments whose services also take internal tokens bound to no request (tools and tests
# sign those); production refuses them.
UNBOUND_TOKEN_ENVIRONMENTS = frozenset({"development", "test"})

JSON_TYPES = ("application/json", "application/merge-patch+json")


class UnsupportedMediaType(DomainError):
    code = "http.unsupported_media_type"
    status = 415
    title = "Unsupported media type"


async def require_json_body(request: Request) -> None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise UnsupportedMediaType(f"send the body as application/json, not '{content_type or 'nothing'}'")


class NulCharacter(InvalidInput):
    code = "http.nul_character"
    title = "NUL character"


async def refuse_nul(request: Request) -> None:
    """Neither the path (a path parameter, decoded) nor a query parameter, name or value, may carry
    NUL: PostgreSQL refuses it in text, so it would otherwise surface as a 500 wherever a parameter
    reaches a query unchecked. A dependency rather than a middleware, so a route that renders its
    errors in a shape of its own (Open311) renders this one too."""
    if "\x00" in request.scope["path"]:
        raise NulCharacter("the path may not contain the NUL character (%00)")
    if any("\x00" in key or "\x00" in value for key, value in request.query_params.multi_items()):
        raise NulCharacter("the query string may not contain the NUL character (%00)")


def create_base_app(
    runtime: Runtime,
    *,
    title: str,
    version: str = "1.0.0",
    description: str = "",
    extra_lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    openapi_url: str | None = "/openapi.json",
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """Problem+json, request context, body limit, RED metrics and health: what every process serves.

    ``body_limits`` gives routes that stream a large upload of their own (path → bytes) their limit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            if extra_lifespan is None:
                yield
            else:
                async with extra_lifespan(app):
                    yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title, version=version, description=description, lifespan=lifespan, openapi_url=openapi_url
    )
    app.state.kit = runtime
    install_problem_handlers(app)
    # A statement ended by a time limit, or a lost connection, is a 503 problem, not a 500.
    install_database_problem_handlers(app)
    app.include_router(health.router)
    app.router.routes.append(Route("/metrics", metrics_endpoint(runtime.metrics), include_in_schema=False))  # type: ignore[arg-type]
    # Innermost: an unexpected error is a 500 problem the metrics count and the connection survives.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=runtime.settings.max_body_bytes,
        max_image_bytes=runtime.settings.max_image_body_bytes,
        path_limits=body_limits,
    )
    app.add_middleware(RequestContextMiddleware)
    return app


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    version: str = "1.0.0",
    routers: Sequence[APIRouter] = (),
    open_routers: Sequence[APIRouter] = (),
    publishes: str | None = None,
    consumers: Sequence[ConsumerSpec] = (),
    description: str = "",
    runtime_setup: Callable[[Runtime], None] | None = None,
    scopes: ScopeRules | None = None,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """Build a domain service; engines and connections are made in its lifespan, not here.

    ``runtime_setup`` lets the service add its periodic jobs and startup hooks, which need the
    runtime (its database, its settings) that exists only from here on. ``scopes`` is the
    service's scope declaration (from ``contract``), the one the gateway checks too; a service with
    routers refuses to start without one in production.
    """
    if scopes is None and (routers or open_routers):
        if settings.environment == "production":
            raise ValueError(f"{settings.service_name}: create_service_app needs the service's scopes=")
        log.warning("%s declares no scopes: only v1/admin is checked in the service", settings.service_name)
    if scopes is not None and scopes.service != settings.service_name:
        raise ValueError(f"the scopes of {scopes.service!r} given to the {settings.service_name} service")
    runtime = Runtime(
        settings=settings,
        metrics=KitMetrics(service=settings.service_name),
        verifier=PrincipalVerifier(
            public_key=settings.internal_token_public_key,
            audience=settings.service_name,
            issuer=settings.internal_token_issuer,
            require_binding=settings.environment not in UNBOUND_TOKEN_ENVIRONMENTS,
        ),
        publishes=publishes,
        consumer_specs=consumers,
    )
    if runtime_setup is not None:
        runtime_setup(runtime)
    app = create_base_app(
        runtime, title=title, version=version, description=description, body_limits=body_limits
    )
    app.state.scope_rules = scopes
    # The principal first (401), then the path and the query, then the route's declared scope (403).
    protected = [
        Depends(current_principal),
        Depends(refuse_nul),
        Depends(require_declared_scope),
    ]
    for router in routers:
        app.include_router(router, dependencies=[*protected, Depends(require_json_body)])
    for router in open_routers:
        app.include_router(router, dependencies=protected)
    app.include_router(admin.router, dependencies=protected)
    return app
