"""Prometheus metrics of one process: HTTP RED by route template, outbox, consumers, dead letters.

Each app owns its registry (no global state), so tests can build several apps in one process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("citygrid.metrics")

UNMATCHED_ROUTE = "<unmatched>"
# A gauge refreshed at scrape time gives up after this long (the scrape shows its last value).
SCRAPE_HOOK_SECONDS = 2.0

ScrapeHook = Callable[[], Awaitable[None]]
UNMEASURED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


@dataclass
class KitMetrics:
    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Run before every scrape: gauges that must be true when the thing they watch is failing
    # (the outbox backlog while NATS is down) are computed here, not by the failing loop.
    scrape_hooks: list[ScrapeHook] = field(default_factory=list)

    async def refresh(self) -> None:
        for hook in self.scrape_hooks:
            try:
                async with asyncio.timeout(SCRAPE_HOOK_SECONDS):
                    await hook()
            except Exception as error:
                log.warning("metrics: a scrape-time gauge could not be refreshed: %s", error)

    def __post_init__(self) -> None:
        r = self.registry
        self.http_requests = Counter(
            "http_requests", "HTTP requests handled.", ["service", "method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency.",
            ["service", "method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "citygrid_outbox_backlog_events", "Events committed but not yet published.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "citygrid_outbox_oldest_age_seconds", "Age of the oldest unpublished event.", registry=r
        )
        self.outbox_quarantined = Gauge(
            "citygrid_outbox_quarantined_events",
            "Events the relay gave up on after repeated refusals; kept for an admin to replay.",
            registry=r,
        )
        self.outbox_relay_active = Gauge(
            "citygrid_outbox_relay_active",
            "1 while this replica's relay holds the service's publishing lock (one replica at a time).",
            registry=r,
        )
        self.nats_connected = Gauge(
            "citygrid_nats_connected", "1 while this process is connected to NATS.", registry=r
        )
        self.outbox_published = Counter(
            "citygrid_outbox_published_events", "Events published to JetStream.", registry=r
        )
        self.consumer_pending = Gauge(
            "citygrid_consumer_pending_messages",
            "Messages in the stream not yet delivered to the durable consumer.",
            ["consumer"],
            registry=r,
        )
        self.consumer_handled = Counter(
            "citygrid_consumer_handled_events",
            "Events handled by a consumer.",
            ["consumer", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "citygrid_dead_letters", "Events given up after max_deliver.", ["consumer"], registry=r
        )
        self.job_runs = Counter("citygrid_job_runs", "Runs of periodic jobs.", ["job", "outcome"], registry=r)
        self.live_streams = Gauge(
            "citygrid_live_streams", "Clients connected to a live feed.", ["feed"], registry=r
        )
        self.live_dropped = Counter(
            "citygrid_live_dropped_clients",
            "Live-feed clients dropped for falling behind.",
            ["feed"],
            registry=r,
        )
        self.job_items = Counter("citygrid_job_items", "Items handled by periodic jobs.", ["job"], registry=r)


def route_template(scope: Scope) -> str:
    """The path template the router matched (``/v1/cases/{case_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    router = getattr(app, "router", None)
    for candidate in getattr(router, "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: KitMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMEASURED_PATHS:
            await self.app(scope, receive, send)
            return
        status = 500
        event_stream = False
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status, event_stream
            if message["type"] == "http.response.start":
                status = message["status"]
                event_stream = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", [])
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = route_template(scope)
            labels = {"service": self.metrics.service, "method": scope["method"], "route": route}
            self.metrics.http_requests.labels(status=str(status), **labels).inc()
            # An event stream lasts as long as its client stays; its duration is no latency.
            if not event_stream:
                self.metrics.http_duration.labels(**labels).observe(time.perf_counter() - started)


def metrics_endpoint(metrics: KitMetrics) -> object:
    async def serve_metrics(request: Request) -> Response:
        await metrics.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics
