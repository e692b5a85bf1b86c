"""Gateway settings: upstream services, signing key, people's token verification, limits."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from citygrid.settings import ServiceSettings

# What people's tokens may be signed with: asymmetric algorithms (the gateway holds only public
# keys); HS256, a secret shared with the identity provider, only in development and tests.
ASYMMETRIC_PEOPLE_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SHARED_SECRET_ALGORITHM = "HS256"  # noqa: S105 (an algorithm name, not a secret)
SHARED_SECRET_ENVIRONMENTS = ("development", "test")
MIN_RSA_BITS = 2048

ScopeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$", max_length=64)]
RoleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
DistrictCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


class GroupGrant(BaseModel):
    """What one identity-provider group gives its members in CityGrid (``CITYGRID_PEOPLE_GROUP_MAP``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[RoleName] = Field(default_factory=list, max_length=20)
    scopes: list[ScopeName] = Field(default_factory=list, max_length=50)
    # The district the group's members work for; a person may be bound to one district at most.
    district: DistrictCode | None = None


def people_key_algorithm(pem: str) -> str:
    """The algorithm a PEM public key verifies, or ValueError for a key people's tokens may not use."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise ValueError(
            "CITYGRID_PEOPLE_JWT_KEY must be a PEM public key (RSA, EC P-256 or Ed25519)"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"CITYGRID_PEOPLE_JWT_KEY: an RSA key needs at least {MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("CITYGRID_PEOPLE_JWT_KEY must be an RSA, EC P-256 or Ed25519 public key")


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
    # People's bearer tokens come from the city's identity provider (docs/identity-provider.md):
    # its keys from its JWKS URL, or one PEM public key (the dev stack's local key).
    people_jwks_url: str = ""
    people_jwt_key: str = ""
    people_jwt_algorithms: list[str] = Field(default_factory=lambda: list(ASYMMETRIC_PEOPLE_ALGORITHMS))
    people_jwt_issuer: str = ""
    people_jwt_audience: str = "citygrid"
    # Where the token lists the person's groups (a dotted path: "realm_access.roles" for Keycloak
    # realm roles), and what each group gives; a group not in the map gives nothing, and scopes or
    # roles the token itself claims count for nothing.
    people_groups_claim: str = Field(default="groups", min_length=1, max_length=200)
    people_group_map: dict[str, GroupGrant] = Field(default_factory=dict)
    # The provider's keys are kept this long, then fetched again; a token naming a key (kid) the
    # gateway does not know triggers one fetch, at most once per people_jwks_refresh_seconds (also
    # the pause after a failed fetch).
    people_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    people_jwks_refresh_seconds: float = Field(default=10.0, ge=0)
    people_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    upstream_connect_timeout: float = 2.0
    upstream_timeout: float = 10.0
    # A call whose body is streamed (a file upload) waits this long for the service's answer instead:
    # the service answers once it has read and stored the whole file, minutes for a city's register.
    # A client that stalls mid-body is still cut off by request_body_idle_timeout.
    upstream_upload_timeout: float = Field(default=1800.0, gt=0)
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
    # Routes that take a file larger than max_body_bytes, each with its own limit (the service
    # checks its own too): public path → bytes.
    upload_limits: dict[str, int] = Field(
        default_factory=lambda: {
            "/api/case/v1/admin/grid/import": 67_108_864,
            "/api/gas/v1/cylinders/import-file": 1_073_741_824,
            "/api/gas/v1/epcis/capture": 4_194_304,
        }
    )
    # The longest answer of an owner the exchange reads whole to mask it (a page of 500 records is
    # well under it); longer ones are refused with 502 rather than held in memory.
    exchange_answer_bytes: int = Field(default=8_388_608, ge=65_536)
    # The longest a client may pause between two pieces of its request body (then 408).
    request_body_idle_timeout: float = Field(default=10.0, gt=0)

    # Every consumer's (and person's) requests per minute, and per city day (None: no daily quota),
    # unless its registration says otherwise; they hold across replicas (docs/exchange.md#quotas).
    default_rate_limit_per_minute: int = Field(default=600, ge=1)
    default_daily_quota: int | None = Field(default=None, ge=1)
    # The quota ledger: settled with the other replicas this often; a block reserved for about
    # reserve_seconds of the demand seen (at least minimum_reservation); a request whose replica holds
    # nothing waits for the next settlement. A statement of one that runs over timeout_seconds is
    # ended by the server and counts as the database away: each replica then admits what was left
    # ÷ quota_replicas per window alone.
    quota_sync_seconds: float = Field(default=0.2, gt=0)
    quota_reserve_seconds: float = Field(default=2.0, gt=0)
    quota_minimum_reservation: int = Field(default=5, ge=1)
    quota_timeout_seconds: float = Field(default=2.0, gt=0)
    quota_replicas: int = Field(default=2, ge=1)
    quota_retention_days: int = Field(default=2, ge=1)
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

    # The message log (docs/exchange.md#message-log): every call answered for a principal, chained per
    # replica under an HMAC key (required in production: without it whoever can write the table can
    # recompute the chain). Keys used before stay listed so the chains written with them still verify.
    message_log_key: str = Field(default="", repr=False)
    message_log_previous_keys: list[str] = Field(default_factory=list, repr=False)
    # Written every flush_seconds, or sooner once batch_size records wait; at most max_pending wait
    # (the database away), then calls are still answered but not recorded (counted, and said in the chain).
    message_log_flush_seconds: float = Field(default=0.1, gt=0)
    message_log_batch_size: int = Field(default=500, ge=1, le=10_000)
    message_log_max_pending: int = Field(default=50_000, ge=1)
    message_log_shutdown_seconds: float = Field(default=5.0, ge=0)
    # Whole monthly partitions older than this are dropped.
    message_log_retention_days: int = Field(default=400, ge=31)
    message_log_partition_check_seconds: float = Field(default=3600.0, gt=0)

    # Consumers' credentials (docs/exchange.md#consumers-and-credentials): every replica reads the
    # changes (a key or a consumer revoked, a grant changed) this often, and forgets what it cached.
    credential_poll_seconds: float = Field(default=1.0, gt=0, le=30)
    # How long a starting replica waits to read the recent credential changes before it serves.
    credential_start_seconds: float = Field(default=5.0, gt=0, le=60)
    # Changes are kept this long (a replica away longer reloads every key it meets).
    credential_change_retention_days: int = Field(default=7, ge=1)
    consumer_audit_retention_days: int = Field(default=1827, ge=365)
    # OAuth2 client credentials (POST /oauth/token): short-lived ES256 tokens signed with keys the
    # gateway makes itself and keeps in its database, the private half encrypted with this
    # passphrase (required in production). A new key is published at the JWKS URL
    # ``token_key_publish_seconds`` before it signs, and a key signs for ``token_key_rotation_days``.
    token_key_passphrase: str = Field(default="", repr=False)
    token_issuer: str = Field(default="citygrid-gateway", min_length=1, max_length=200)
    token_lifetime_seconds: int = Field(default=300, ge=60, le=3600)
    token_key_rotation_days: float = Field(default=30.0, gt=0)
    token_key_publish_seconds: float = Field(default=600.0, ge=0)
    token_key_check_seconds: float = Field(default=60.0, gt=0)

    # Webhook subscriptions (docs/exchange.md#subscriptions). Their signing secrets are stored sealed
    # under this key (required in production; keys used before stay listed to open older secrets).
    webhook_secret_key: str = Field(default="", repr=False)
    webhook_previous_secret_keys: list[str] = Field(default_factory=list, repr=False)
    # Targets on private, loopback or link-local addresses (SSRF) are refused except in development;
    # a test or staging deployment whose receivers are internal says so here (never in production).
    webhook_allow_private_targets: bool = False
    webhook_subscriptions_per_consumer: int = Field(default=20, ge=1, le=1000)
    # Deliveries in flight at once per replica, and per subscription per replica (a slow receiver
    # holds only its own share); the pause between looks for due deliveries when nothing woke it.
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    webhook_concurrency_per_subscription: int = Field(default=4, ge=1, le=100)
    # ... and per consumer, whatever the number of its subscriptions.
    webhook_concurrency_per_consumer: int = Field(default=8, ge=1, le=1000)
    # The ports a production target may name (what the egress network policy opens).
    webhook_ports: list[int] = Field(default_factory=lambda: [443, 8443])
    webhook_poll_seconds: float = Field(default=0.5, gt=0, le=30)
    # A receiver answers within this (connection included), or the attempt failed.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # After the n-th failure in a row: wait base × 2ⁿ⁻¹ (±20 %), at most max; a message is given up
    # after max_attempts; a subscription whose attempts failed pause_after_failures times in a row
    # pauses until its consumer resumes it.
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_max_attempts: int = Field(default=10, ge=1, le=100)
    webhook_pause_after_failures: int = Field(default=15, ge=1, le=1000)
    # A rotated secret keeps signing beside the new one this long (receivers switch without a gap).
    webhook_secret_overlap_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)
    # Messages whose deliveries are all settled are deleted after retention_days (the delivery log
    # and what a replay can send again); one still pending (its subscription paused) after
    # undelivered_days.
    webhook_retention_days: int = Field(default=7, ge=1)
    webhook_undelivered_days: int = Field(default=30, ge=1)

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
    def _people_tokens(self) -> GatewaySettings:
        algorithms = self.people_jwt_algorithms
        allowed = (*ASYMMETRIC_PEOPLE_ALGORITHMS, SHARED_SECRET_ALGORITHM)
        unknown = [name for name in algorithms if name not in allowed]
        if unknown or not algorithms:
            raise ValueError(
                f"CITYGRID_PEOPLE_JWT_ALGORITHMS takes {', '.join(allowed)}, not {unknown or '[]'}"
            )
        shared = SHARED_SECRET_ALGORITHM in algorithms
        if shared and self.environment not in SHARED_SECRET_ENVIRONMENTS:
            raise ValueError(
                "HS256 people's tokens (a shared secret) are refused outside development and tests"
            )
        if shared and len(algorithms) > 1:
            raise ValueError("HS256 is never accepted beside public-key algorithms (key confusion)")
        if self.people_jwks_url and self.people_jwt_key:
            raise ValueError("set CITYGRID_PEOPLE_JWKS_URL or CITYGRID_PEOPLE_JWT_KEY, not both")
        if not (self.people_jwks_url or self.people_jwt_key):
            return self  # people's tokens are off: API keys only
        if not self.people_jwt_issuer or not self.people_jwt_audience:
            raise ValueError(
                "people's tokens need CITYGRID_PEOPLE_JWT_ISSUER and CITYGRID_PEOPLE_JWT_AUDIENCE"
            )
        if self.people_jwks_url:
            if shared:
                raise ValueError("a JWKS holds public keys: HS256 does not go with CITYGRID_PEOPLE_JWKS_URL")
            parts = urlsplit(self.people_jwks_url)
            secure = parts.scheme == "https" or (
                parts.scheme == "http" and self.environment in SHARED_SECRET_ENVIRONMENTS
            )
            if not secure or not parts.hostname:
                raise ValueError("CITYGRID_PEOPLE_JWKS_URL must be an https:// URL")
        elif shared:
            if self.people_jwt_key.lstrip().startswith("-----BEGIN") or len(self.people_jwt_key) < 32:
                raise ValueError("an HS256 secret is a random string of 32 characters or more, not a PEM key")
        elif people_key_algorithm(self.people_jwt_key) not in algorithms:
            raise ValueError("CITYGRID_PEOPLE_JWT_KEY is not a key of CITYGRID_PEOPLE_JWT_ALGORITHMS")
        return self

    @model_validator(mode="after")
    def _refuse_unsigned_production(self) -> GatewaySettings:
        if self.environment == "production" and not self.internal_token_private_key:
            raise ValueError("CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY is required in production")
        if self.environment == "production" and len(self.message_log_key) < 32:
            raise ValueError("CITYGRID_MESSAGE_LOG_KEY (32 characters or more) is required in production")
        if self.environment == "production" and len(self.token_key_passphrase) < 32:
            raise ValueError(
                "CITYGRID_TOKEN_KEY_PASSPHRASE (32 characters or more) is required in production"
            )
        if self.environment == "production" and len(self.webhook_secret_key) < 32:
            raise ValueError("CITYGRID_WEBHOOK_SECRET_KEY (32 characters or more) is required in production")
        if self.environment == "production" and self.webhook_allow_private_targets:
            raise ValueError("CITYGRID_WEBHOOK_ALLOW_PRIVATE_TARGETS may not be set in production")
        if self.webhook_undelivered_days < self.webhook_retention_days:
            raise ValueError(
                "CITYGRID_WEBHOOK_UNDELIVERED_DAYS may not be less than CITYGRID_WEBHOOK_RETENTION_DAYS"
            )
        if self.internal_port and self.internal_port == self.port:
            raise ValueError("CITYGRID_INTERNAL_PORT must differ from CITYGRID_PORT")
        unknown = set(self.upstream_connection_limits) - set(self.upstreams)
        if unknown:
            raise ValueError(f"connection limits for services that are not upstreams: {sorted(unknown)}")
        return self

    def connections_for(self, service: str) -> int:
        return max(1, self.upstream_connection_limits.get(service, self.upstream_connections))
