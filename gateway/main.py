"""Composition root of the gateway: authentication, scopes, limits and routing to every service.

What a request meets, in order: CORS (a preflight from a configured frontend is answered here,
without credentials), the kit's request context and body limit, the per-address limit (before
authentication, so a flood costs no lookup), authentication, the scope, the principal's quotas (a
rate per minute and a daily quota, held across replicas by ``gateway.quotas``), and the upstream's
own connection pool. Every call answered once the principal is known, a refusal
too, is recorded in the message log (``gateway.message_log``) without waiting for the database.
``/metrics`` is not on this listener: the gateway serves it on ``CITYGRID_INTERNAL_PORT``, which
only operators reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from citygrid.auth import MissingScope, Principal, PrincipalVerifier
from citygrid.errors import DomainError
from citygrid.http import create_base_app
from citygrid.jobs import PeriodicJob
from citygrid.logging import request_id_var
from citygrid.metrics import KitMetrics, metrics_endpoint
from citygrid.middleware import RequestContextMiddleware
from citygrid.runtime import Runtime
from citygrid.serve import serve
from gateway import open311, openapi, proxy
from gateway.authn import (
    AuthenticationThrottled,
    Authenticator,
    ClientRateLimited,
    DailyQuotaExhausted,
    RateLimited,
    RateLimiter,
)
from gateway.clients import IPNetwork, client_address, limit_key, parse_networks
from gateway.consumers import api as consumers_api
from gateway.consumers import changes as credential_changes
from gateway.cors import CorsMiddleware
from gateway.exchange import api as exchange_api
from gateway.message_log import api as message_log_api
from gateway.message_log import capture
from gateway.message_log import partitions as message_log_partitions
from gateway.message_log.chain import Hasher
from gateway.message_log.recorder import Call, MessageLog
from gateway.metrics import GatewayMetrics
from gateway.oauth import api as oauth_api
from gateway.oauth import signing
from gateway.people import PeopleTokens
from gateway.quotas import ledger as quota_ledger
from gateway.quotas.policies import Allowance, Period, headers
from gateway.routing import UPSTREAMS, is_routable, required_scope
from gateway.settings import GatewaySettings
from gateway.subscriptions import api as subscriptions_api
from gateway.subscriptions import delivery as webhook_delivery
from gateway.subscriptions import intake as webhook_intake
from gateway.subscriptions import service as subscriptions
from gateway.subscriptions.sealing import DEVELOPMENT_KEY, Sealer

log = logging.getLogger("gateway")

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class GatewayState:
    settings: GatewaySettings
    upstreams: dict[str, proxy.UpstreamPool]
    forwarding: proxy.Forwarding
    authenticator: Authenticator
    quotas: quota_ledger.QuotaLedger  # per principal, across replicas
    limiter: RateLimiter  # anonymous Open311 reads, per client address and replica
    clients: RateLimiter  # per client address, before authentication
    proxies: tuple[IPNetwork, ...]
    openapi: openapi.OpenApiCache
    metrics: GatewayMetrics
    message_log: MessageLog
    message_log_hashers: tuple[Hasher, ...]  # the current key's first; earlier keys verify older chains
    tokens: signing.TokenKeys

    def client_address(self, request: Request) -> str:
        """The caller's address: the socket's peer, or what trusted proxies say it is."""
        known: str | None = getattr(request.state, "client_address", None)
        if known is None:
            forwarded = [
                value.decode("latin-1") for name, value in request.headers.raw if name == b"x-forwarded-for"
            ]
            peer = request.client.host if request.client else None
            known = client_address(peer, forwarded, self.proxies)
            request.state.client_address = known
        return known

    def admit(self, request: Request) -> str:
        """Count the request against its client address before anything costs; the address's limit key."""
        key = limit_key(self.client_address(request))
        per_minute = self.settings.client_rate_limit_per_minute
        if per_minute:
            try:
                self.clients.check(key, per_minute)
            except RateLimited:
                self.metrics.refused.labels(reason="client_rate_limited").inc()
                raise
        return key

    async def authenticate(self, request: Request, client: str) -> tuple[Principal, Allowance]:
        try:
            return await self.authenticator.authenticate(request, client)
        except AuthenticationThrottled:
            self.metrics.refused.labels(reason="auth_throttled").inc()
            raise

    async def authenticate_key(self, plaintext: str, client: str) -> tuple[Principal, Allowance]:
        try:
            return await self.authenticator.authenticate_key(plaintext, client)
        except AuthenticationThrottled:
            self.metrics.refused.labels(reason="auth_throttled").inc()
            raise

    async def count(self, subject: str, allowance: Allowance) -> dict[str, str]:
        """Count the request against its principal's quotas: the ``RateLimit`` fields, or 429."""
        try:
            standings = await self.quotas.admit(subject, allowance)
        except quota_ledger.QuotaExceeded as exceeded:
            entry = exceeded.entry
            daily = entry.period is Period.DAY and exceeded.reason == "spent"
            self.metrics.refused.labels(reason="daily_quota" if daily else "rate_limited").inc()
            error = DailyQuotaExhausted if daily else RateLimited
            if exceeded.reason == "spent":
                detail = error.template.format(per_minute=entry.limit)
            else:
                # Not spent: this replica could not reserve for it in time, or counts alone.
                detail = "the quota could not be counted in time; try again shortly"
            raise error(
                detail,
                headers={"Retry-After": str(exceeded.retry_after), **headers(exceeded.standings)},
                retry_after_seconds=exceeded.retry_after,
            ) from None
        return headers(standings)

    def count_anonymous(self, subject: str, per_minute: int) -> dict[str, str]:
        """Count an anonymous request in this replica's memory: the ``RateLimit`` fields, or 429."""
        try:
            return self.limiter.check(subject, per_minute).headers()
        except RateLimited:
            self.metrics.refused.labels(reason="rate_limited").inc()
            raise

    async def forward(self, request: Request, service: str, **options: Any) -> Response:
        if service not in self.upstreams:
            raise proxy.UnknownService(f"the {service} service is not behind this gateway")
        try:
            return await proxy.forward(
                request,
                self.upstreams[service],
                self.forwarding,
                client_address=self.client_address(request),
                **options,
            )
        except proxy.TooManyUploads:
            self.metrics.refused.labels(reason="too_many_uploads").inc()
            raise

    def record_call(
        self,
        request: Request,
        *,
        service: str,
        path: str,
        principal: Principal,
        status: int,
        started: float,
        dataset: str | None = None,
        record_count: int | None = None,
        fields: tuple[str, ...] = (),
    ) -> None:
        """Put a call answered for ``principal`` in the message log (``path`` after ``/api/<service>/``).

        No body is read and no query value is kept."""
        try:
            self.message_log.record(
                Call(
                    request_id=request_id_var.get(),
                    consumer=principal.subject,
                    dataset=dataset or capture.dataset_of(service, path),
                    action=capture.action_of(request.method),
                    method=request.method,
                    path=capture.public_path(request.url.path),
                    query_keys=capture.query_keys(request.scope.get("query_string", b"")),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000),
                    record_count=record_count,
                    fields=fields,
                )
            )
        except Exception:
            # The call is answered whatever happens here; a fault is logged, never the caller's.
            log.exception("message log: a call could not be recorded")

    async def aclose(self) -> None:
        await self.openapi.close()
        await self.authenticator.aclose()
        for pool in self.upstreams.values():
            await pool.aclose()


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _proxy_route(service: str) -> Any:
    upstream = UPSTREAMS[service]

    async def route_to_service(path: str, request: Request) -> Response:
        state = gateway_state(request)
        client = state.admit(request)
        principal, allowance = await state.authenticate(request, client)
        request.state.principal = principal
        # From here on the call is answered for a principal: the message log records it, refusals too.
        started = time.perf_counter()
        try:
            if not is_routable(path):
                raise proxy.UnknownService(f"no such path: /api/{service}/{path}")
            scope = required_scope(upstream, request.method, path)
            if not principal.has_scope(scope):
                raise MissingScope(f"this call needs the scope '{scope}'", required_scope=scope)
            quota_headers = await state.count(principal.subject, allowance)
            response = await state.forward(
                request,
                service,
                path=path,
                principal=principal,
                forwarded_prefix=f"/api/{service}",
                response_headers=quota_headers,
            )
        except Exception as error:
            status = error.status if isinstance(error, DomainError) else 500
            state.record_call(
                request,
                service=service,
                path=path,
                principal=principal,
                status=status,
                started=started,
            )
            raise
        state.record_call(
            request,
            service=service,
            path=path,
            principal=principal,
            status=response.status_code,
            started=started,
        )
        return response

    route_to_service.__name__ = f"route_to_{service}"
    return route_to_service


def internal_app(runtime: Runtime) -> Starlette:
    """What the internal port serves: the gateway's metrics (Prometheus needs no credential there)."""
    endpoint: Any = metrics_endpoint(runtime.metrics)
    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {value.strip().removeprefix("W/") for value in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    # The signing key is parsed here, once: a malformed one stops the gateway before it serves.
    signer = proxy.signer_of(settings)
    unknown = set(settings.upstreams) - set(UPSTREAMS)
    if unknown:
        raise ValueError(f"unknown upstream services: {sorted(unknown)}")
    runtime = Runtime(
        settings=settings,
        metrics=KitMetrics(service=settings.service_name),
        verifier=PrincipalVerifier(public_key="", audience=settings.service_name),
        # NATS for the webhook subscriptions' durable consumers only: the gateway publishes nothing.
        messaging=True,
    )
    metrics = GatewayMetrics(runtime.metrics.registry)
    webhook_policy = webhook_delivery.Policy.of(settings)
    if not settings.webhook_secret_key and settings.environment != "development":
        log.warning(
            "CITYGRID_WEBHOOK_SECRET_KEY is empty: webhook secrets are sealed with the public development key"
        )
    sealer = Sealer(settings.webhook_secret_key or DEVELOPMENT_KEY, settings.webhook_previous_secret_keys)
    deliverer = webhook_delivery.Deliverer(lambda: runtime.autocommit, webhook_policy, sealer, metrics)

    def webhooks_queued(count: int) -> None:
        metrics.webhook_queued.inc(count)
        deliverer.wake()

    runtime.consumer_specs = webhook_intake.consumer_specs(webhooks_queued)
    hashers = tuple(Hasher.of(key) for key in [settings.message_log_key, *settings.message_log_previous_keys])

    async def message_log_partitions_round() -> int:
        # The replica's clock, which stamps the records.
        today = datetime.now(UTC).date()
        return await message_log_partitions.maintain(runtime.db, today, settings.message_log_retention_days)

    async def prepare_message_log() -> None:
        # This month's partition before the first call; a database that is down now is retried by the job.
        try:
            await message_log_partitions_round()
        except Exception as error:
            log.warning("message log: partitions not checked at start (%s); the job retries", error)

    policy = signing.TokenPolicy(
        issuer=settings.token_issuer,
        lifetime=timedelta(seconds=settings.token_lifetime_seconds),
        rotation=timedelta(days=settings.token_key_rotation_days),
        publish_ahead=timedelta(seconds=settings.token_key_publish_seconds),
        passphrase=settings.token_key_passphrase.encode(),
    )
    tokens = signing.TokenKeys(lambda: runtime.db, policy)

    async def token_keys_round() -> int:
        async with runtime.uow() as uow:
            changed = await signing.rotate(uow.session, policy)
        await tokens.refresh()
        return changed

    async def prepare_token_keys() -> None:
        # The first key before the first token request; a database that is down now is retried by the job.
        try:
            await token_keys_round()
        except Exception as error:
            log.warning("token keys: not checked at start (%s); the job retries", error)

    runtime.on_startup = [prepare_message_log, prepare_token_keys]
    runtime.jobs = [
        PeriodicJob(
            "gateway-message-log-partitions",
            settings.message_log_partition_check_seconds,
            message_log_partitions_round,
            batch_size=10_000,
        ),
        PeriodicJob("gateway-token-keys", settings.token_key_check_seconds, token_keys_round),
        PeriodicJob(
            "gateway-webhook-retention",
            3600.0,
            lambda: subscriptions.purge(
                runtime.db,
                retention=timedelta(days=settings.webhook_retention_days),
                undelivered=timedelta(days=settings.webhook_undelivered_days),
            ),
            batch_size=1000,
        ),
        PeriodicJob(
            "gateway-quota-retention",
            3600.0,
            lambda: quota_ledger.purge(runtime.db, older_than_seconds=settings.quota_retention_days * 86_400),
            batch_size=5000,
        ),
        PeriodicJob(
            "gateway-consumer-retention",
            3600.0,
            lambda: credential_changes.purge(
                runtime.db,
                change_days=settings.credential_change_retention_days,
                audit_days=settings.consumer_audit_retention_days,
            ),
            batch_size=5000,
        ),
    ]

    @asynccontextmanager
    async def gateway_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.environment == "production" and not settings.trusted_proxies:
            log.warning(
                "CITYGRID_TRUSTED_PROXIES is empty: every client is its socket's peer, so clients "
                "behind a load balancer share its per-address limits"
            )
        if settings.environment == "production" and not settings.public_base_url:
            log.warning("CITYGRID_PUBLIC_BASE_URL is empty: services render the gateway's own address")
        upstreams = {
            service: proxy.UpstreamPool.open(service, base_url, settings)
            for service, base_url in settings.upstreams.items()
        }
        message_log = MessageLog(
            hasher=hashers[0],
            sessions=lambda: runtime.db,
            metrics=metrics,
            batch_size=settings.message_log_batch_size,
            flush_seconds=settings.message_log_flush_seconds,
            max_pending=settings.message_log_max_pending,
            shutdown_seconds=settings.message_log_shutdown_seconds,
        )
        message_log.start()

        async def message_log_gauges() -> None:
            metrics.message_log_pending.set(message_log.pending)
            metrics.message_log_oldest_pending_age.set(message_log.oldest_pending_age())

        runtime.metrics.scrape_hooks.append(message_log_gauges)

        def settled(outcome: str, seconds: float) -> None:
            metrics.quota_settlements.labels(outcome=outcome).inc()
            metrics.quota_settle_seconds.observe(seconds)

        quotas = quota_ledger.QuotaLedger(
            lambda: runtime.db,
            sync_seconds=settings.quota_sync_seconds,
            reserve_seconds=settings.quota_reserve_seconds,
            minimum_reservation=settings.quota_minimum_reservation,
            timeout_seconds=settings.quota_timeout_seconds,
            replicas=settings.quota_replicas,
            on_settle=settled,
            on_offline_admit=metrics.quota_offline_admits.inc,
        )
        quotas.start()

        async def quota_gauges() -> None:
            metrics.quota_windows.set(quotas.windows)
            metrics.quota_ledger_reachable.set(1 if quotas.reachable else 0)

        runtime.metrics.scrape_hooks.append(quota_gauges)
        own_document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )

        async def build() -> dict[str, Any]:
            documents = {
                service: functools.partial(pool.get_json, "/openapi.json", timeout=5.0)
                for service, pool in upstreams.items()
            }
            return await openapi.merged_openapi(own_document, documents)

        authenticator = Authenticator(
            settings,
            runtime.db,
            on_lookup=lambda outcome: metrics.key_lookups.labels(outcome=outcome).inc(),
            people=PeopleTokens.from_settings(
                settings, on_fetch=lambda outcome: metrics.jwks_fetches.labels(outcome=outcome).inc()
            ),
            tokens=tokens,
        )
        follower = credential_changes.CredentialChanges(
            lambda: runtime.db,
            authenticator,
            every_seconds=settings.credential_poll_seconds,
            token_lifetime=policy.lifetime,
            on_poll=lambda outcome: metrics.credential_polls.labels(outcome=outcome).inc(),
        )
        # The recent revocations are read before the first request is served: a replica that has
        # just started must not accept a token revoked a minute ago. A database that is down now
        # is retried by the follower.
        try:
            async with asyncio.timeout(settings.credential_start_seconds):
                await follower.start()
        except Exception as error:
            log.warning("credential changes: not read at start (%s); the follower retries", error)
        following = asyncio.create_task(follower.run(), name="gateway-credential-changes")

        async def credential_gauges() -> None:
            metrics.credential_changes_age.set(follower.age())

        runtime.metrics.scrape_hooks.append(credential_gauges)
        state = GatewayState(
            settings=settings,
            upstreams=upstreams,
            forwarding=proxy.Forwarding.of(
                settings,
                lambda service: metrics.upstream_saturated.labels(service=service).inc(),
                signer=signer,
            ),
            authenticator=authenticator,
            quotas=quotas,
            limiter=RateLimiter(settings.rate_limit_tracked_subjects),
            clients=RateLimiter(settings.rate_limit_tracked_subjects, ClientRateLimited),
            proxies=parse_networks(settings.trusted_proxies),
            openapi=openapi.OpenApiCache(
                build,
                ttl=settings.openapi_cache_seconds,
                retry=settings.openapi_retry_seconds,
                on_build=lambda complete: metrics.openapi_builds.labels(
                    outcome="complete" if complete else "partial"
                ).inc(),
            ),
            metrics=metrics,
            message_log=message_log,
            message_log_hashers=hashers,
            tokens=tokens,
        )
        app.state.gateway = state
        deliverer.start()
        runtime.metrics.scrape_hooks.append(deliverer.gauges)
        try:
            yield
        finally:
            runtime.metrics.scrape_hooks.remove(deliverer.gauges)
            await deliverer.stop()
            runtime.metrics.scrape_hooks.remove(credential_gauges)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            # Before the engine goes: what is buffered is written first, what is reserved given back.
            runtime.metrics.scrape_hooks.remove(quota_gauges)
            await quotas.stop()
            await message_log.stop()
            runtime.metrics.scrape_hooks.remove(message_log_gauges)
            await state.aclose()

    app = create_base_app(
        runtime,
        title="CityGrid exchange API",
        description="One door to every CityGrid service: `/api/<service>/v1/...`, authenticated and scoped.",
        extra_lifespan=gateway_lifespan,
        openapi_url=None,
        body_limits=settings.upload_limits,
    )
    # The metrics move to the internal listener: the public one answers /metrics with 404.
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) != "/metrics"
    ]
    app.state.internal_app = internal_app(runtime)
    app.state.webhooks = webhook_delivery.Webhooks(
        policy=webhook_policy, sealer=sealer, deliverer=deliverer, resolver=deliverer.resolver
    )
    # CORS right inside the request context: preflights are answered before limits and authentication,
    # and every answer, a 401 or a 413 included, carries the headers a browser needs to read it.
    context = next(
        i for i, m in enumerate(app.user_middleware) if getattr(m, "cls", None) is RequestContextMiddleware
    )
    app.user_middleware.insert(
        context + 1,
        Middleware(CorsMiddleware, origins=settings.cors_origins, max_age=settings.cors_max_age_seconds),
    )

    app.include_router(consumers_api.router)
    app.include_router(oauth_api.router)
    app.include_router(message_log_api.router)
    # Before the datasets: /exchange/v1/{name} would otherwise take /exchange/v1/subscriptions.
    app.include_router(subscriptions_api.router)
    app.include_router(exchange_api.router)
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

    async def platform_openapi(request: Request) -> Response:
        """The merged document, from memory: a hit never reaches a service."""
        state = gateway_state(request)
        state.admit(request)
        document = await state.openapi.get()
        headers = {
            "ETag": document.etag,
            "Cache-Control": f"public, max-age={int(settings.openapi_cache_seconds)}",
        }
        if _etag_matches(request.headers.get("if-none-match"), document.etag):
            return Response(status_code=304, headers=headers)
        return Response(document.body, media_type="application/json", headers=headers)

    swagger = get_swagger_ui_html(openapi_url="/openapi.json", title="CityGrid exchange API")

    async def swagger_ui(request: Request) -> Response:
        gateway_state(request).admit(request)
        return Response(
            swagger.body, media_type="text/html", headers={"Cache-Control": "public, max-age=3600"}
        )

    app.add_api_route("/openapi.json", platform_openapi, include_in_schema=False, methods=["GET"])
    app.add_api_route("/docs", swagger_ui, include_in_schema=False, methods=["GET"])
    return app


def main() -> None:
    settings = GatewaySettings()
    app = create_app(settings)
    # The gateway reads X-Forwarded-For itself, believing only CITYGRID_TRUSTED_PROXIES.
    serve(
        app,
        settings,
        internal_app=app.state.internal_app,
        internal_port=settings.internal_port,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
