"""Gateway settings: upstream services, signing key, people's token verification, limits."""

from __future__ import annotations

from pydantic import Field, model_validator

from citygrid.settings import ServiceSettings


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
    # Event streams open at once through one gateway replica (their own upstream connections).
    upstream_event_streams: int = 1000
    default_rate_limit_per_minute: int = 600
    api_key_cache_seconds: float = 30.0
    # Open311 GETs without an api_key: refused unless the operator opts in (read-only, no personal data).
    open311_anonymous_reads: bool = False

    @model_validator(mode="after")
    def _refuse_unsigned_production(self) -> GatewaySettings:
        if self.environment == "production" and not self.internal_token_private_key:
            raise ValueError("CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY is required in production")
        return self
