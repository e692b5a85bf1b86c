"""Gateway settings: upstream services, signing key, people's token verification, limits."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from citygrid.settings import ServiceSettings


def _origin(value: str, what: str) -> str:
    """``scheme://host[:port]`` in the serialised form browsers send (lower case, no path, no slash)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be http(s)://host[:port], not {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must name an origin only (no path, query or credentials): {value!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    port: int = 8000
    upstreams: dict[str, str] = Field(
        default_factory=dict, description='Service name → base URL, e.g. {"case": "http://case:8000"}.'
    )
    internal_token_private_key: str = ""
    internal_token_ttl_seconds: int = 60
    # People's bearer tokens come from the city's identity provider.
    people_jwt_key: str = ""
    people_jwt_algorithm: str = "HS256"
    people_jwt_audience: str = "citygrid"
    people_jwt_issuer: str | None = None
    upstream_connect_timeout: float = 2.0
    upstream_timeout: float = 10.0
    # Bulkheads: every upstream has a connection pool of its own, so a slow service holds only its
    # own connections. A call that waits longer than the pool timeout for one gets 503
    # gateway.upstream_saturated (Retry-After) instead of queueing behind the slow service.
    upstream_connections: int = Field(default=100, ge=1)
    upstream_connection_limits: dict[str, int] = Field(
        default_factory=dict, description="Per-service overrides of upstream_connections."
    )
    upstream_pool_timeout: float = Field(default=1.0, gt=0)
    # Event streams open at once through one gateway replica, per upstream (a pool of their own).
    upstream_event_streams: int = Field(default=1000, ge=1)
    # Request bodies up to this size are read before the upstream call (a slow sender never holds an
    # upstream connection for them, and a read may be retried); larger ones are streamed through.
    upstream_buffered_body_bytes: int = Field(default=65_536, ge=0)
    # Streamed bodies one principal may have in flight at once (each holds an upstream connection
    # while its client sends); more get 429 gateway.too_many_uploads. 0: no limit.
    upstream_streamed_bodies_per_principal: int = Field(default=8, ge=0)
    # The longest a client may pause between two pieces of its request body (then 408).
    request_body_idle_timeout: float = Field(default=10.0, gt=0)

    default_rate_limit_per_minute: int = 600
    # Before authentication, per client address (an IPv6 client by its /64) and replica; 0: off.
    client_rate_limit_per_minute: int = Field(default=12_000, ge=0)
    # API-key lookups in the database that found no valid key, per client address and replica. When
    # spent, a key that is not in the cache is refused with 429 before any lookup; 0: no limit.
    key_lookup_failures_per_minute: int = Field(default=10, ge=0)
    api_key_cache_seconds: float = 30.0
    # Prefixes the database does not know, remembered this long (a key is random: nobody tries a
    # prefix before it is issued, so this delays no new key).
    api_key_negative_cache_seconds: float = 60.0
    api_key_cache_entries: int = Field(default=10_000, ge=1)
    rate_limit_tracked_subjects: int = Field(default=100_000, ge=1)

    # Proxies in front of the gateway (CIDRs). A request from one of them is attributed to the
    # right-most address of X-Forwarded-For that is not itself a trusted proxy; any other request to
    # the socket's peer. Empty: X-Forwarded-For is never believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    # The gateway's public origin (https://api.city.example): what the services render as their host
    # (Open311 discovery). Unset: the address the gateway listens on, never the client's Host header.
    public_base_url: str = ""
    # Browser frontends allowed to call the API (origins, exact match); others get no CORS headers.
    cors_origins: list[str] = Field(default_factory=list)
    cors_max_age_seconds: int = 600

    # Open311 GETs without an api_key (services, definitions, requests; no personal data), limited per
    # client address. The GeoReport v2 standard asks no key for reads.
    open311_anonymous_reads: bool = True
    open311_anonymous_rate_limit_per_minute: int = Field(default=120, ge=1)

    # The merged OpenAPI document is rebuilt at most this often (stale while it is rebuilt); when a
    # service did not answer, it is tried again after openapi_retry_seconds.
    openapi_cache_seconds: float = Field(default=300.0, gt=0)
    openapi_retry_seconds: float = Field(default=10.0, gt=0)

    # A second listener for the operators only: /metrics (0: not served at all).
    internal_port: int = Field(default=9000, ge=0, le=65535)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(value.strip(), strict=False)) for value in values]

    @field_validator("public_base_url")
    @classmethod
    def _public_origin(cls, value: str) -> str:
        return _origin(value, "CITYGRID_PUBLIC_BASE_URL") if value.strip() else ""

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, values: list[str]) -> list[str]:
        if any(value.strip() == "*" for value in values):
            raise ValueError("CITYGRID_CORS_ORIGINS names each frontend's origin; '*' is not accepted")
        return [_origin(value, "a CORS origin") for value in values]

    @model_validator(mode="after")
    def _refuse_unsigned_production(self) -> GatewaySettings:
        if self.environment == "production" and not self.internal_token_private_key:
            raise ValueError("CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY is required in production")
        if self.internal_port and self.internal_port == self.port:
            raise ValueError("CITYGRID_INTERNAL_PORT must differ from CITYGRID_PORT")
        unknown = set(self.upstream_connection_limits) - set(self.upstreams)
        if unknown:
            raise ValueError(f"connection limits for services that are not upstreams: {sorted(unknown)}")
        return self

    def connections_for(self, service: str) -> int:
        return max(1, self.upstream_connection_limits.get(service, self.upstream_connections))
