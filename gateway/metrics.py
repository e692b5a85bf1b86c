"""The gateway's own metrics, beside the kit's HTTP ones (served on the internal port only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_saturated = Counter(
            "citygrid_gateway_upstream_saturated",
            "Calls refused because the upstream's connection pool stayed full for the pool timeout.",
            ["service"],
            registry=registry,
        )
        self.refused = Counter(
            "citygrid_gateway_refused_requests",
            "Requests refused by a limit before reaching a service.",
            ["reason"],
            registry=registry,
        )
        self.key_lookups = Counter(
            "citygrid_gateway_key_lookups",
            "API-key lookups in the gateway's database, by whether they found a consumer.",
            ["outcome"],
            registry=registry,
        )
        self.openapi_builds = Counter(
            "citygrid_gateway_openapi_builds",
            "Builds of the merged OpenAPI document (each fetches every service's document once).",
            ["outcome"],
            registry=registry,
        )
        self.jwks_fetches = Counter(
            "citygrid_gateway_people_jwks_fetches",
            "Fetches of the identity provider's keys (JWKS), by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
