"""The app factory every service uses: problem+json, request context, metrics, health, admin.

Routers given to the factory are served behind the internal principal (401 without it) and accept
only JSON bodies (415 otherwise); ``open_routers`` skip the JSON rule (e.g. form-encoded APIs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.routing import Route

from citygrid import admin, health
from citygrid.auth import PrincipalVerifier, current_principal
from citygrid.errors import DomainError, InvalidInput
from citygrid.inbox import ConsumerSpec
from citygrid.metrics import KitMetrics, MetricsMiddleware, metrics_endpoint
from citygrid.middleware import BodyLimitMiddleware, RequestContextMiddleware, UnexpectedErrorMiddleware
from citygrid.problems import install_problem_handlers
from citygrid.runtime import Runtime
from citygrid.settings import ServiceSettings

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


class NulInQuery(InvalidInput):
    code = "http.nul_character"
    title = "NUL character"


async def refuse_nul_in_query(request: Request) -> None:
    """No query parameter, name or value, may carry NUL: PostgreSQL refuses it in text, so it would
    otherwise surface as a 500 wherever a parameter reaches a query unchecked."""
    if any("\x00" in key or "\x00" in value for key, value in request.query_params.multi_items()):
        raise NulInQuery("the query string may not contain the NUL character (%00)")


def create_base_app(
    runtime: Runtime,
    *,
    title: str,
    version: str = "1.0.0",
    description: str = "",
    extra_lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    openapi_url: str | None = "/openapi.json",
) -> FastAPI:
    """Problem+json, request context, body limit, RED metrics and health: what every process serves."""

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
    app.include_router(health.router)
    app.router.routes.append(Route("/metrics", metrics_endpoint(runtime.metrics), include_in_schema=False))  # type: ignore[arg-type]
    # Innermost: an unexpected error is a 500 problem the metrics count and the connection survives.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=runtime.settings.max_body_bytes,
        max_image_bytes=runtime.settings.max_image_body_bytes,
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
) -> FastAPI:
    """Build a domain service; engines and connections are made in its lifespan, not here.

    ``runtime_setup`` lets the service add its periodic jobs and startup hooks, which need the
    runtime (its database, its settings) that exists only from here on.
    """
    runtime = Runtime(
        settings=settings,
        metrics=KitMetrics(service=settings.service_name),
        verifier=PrincipalVerifier(
            public_key=settings.internal_token_public_key,
            audience=settings.service_name,
            issuer=settings.internal_token_issuer,
        ),
        publishes=publishes,
        consumer_specs=consumers,
    )
    if runtime_setup is not None:
        runtime_setup(runtime)
    app = create_base_app(runtime, title=title, version=version, description=description)
    protected = [Depends(current_principal), Depends(refuse_nul_in_query)]
    for router in routers:
        app.include_router(router, dependencies=[*protected, Depends(require_json_body)])
    for router in open_routers:
        app.include_router(router, dependencies=protected)
    app.include_router(admin.router, dependencies=protected)
    return app
