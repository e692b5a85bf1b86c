"""Who is calling: an API key (departments, systems) or a person's bearer JWT; and rate limits."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import jwt
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.auth import Principal
from citygrid.errors import DomainError, Unauthenticated
from gateway import keys
from gateway.models import ApiConsumer
from gateway.settings import GatewaySettings


class MissingCredentials(Unauthenticated):
    code = "auth.missing_credentials"


class InvalidCredentials(Unauthenticated):
    code = "auth.invalid_credentials"


class RateLimited(DomainError):
    code = "gateway.rate_limited"
    status = 429
    title = "Too many requests"


@dataclass(frozen=True)
class KnownKey:
    principal: Principal
    digest: str
    rate_limit_per_minute: int | None
    expires_at: float


class Authenticator:
    def __init__(self, settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._keys: dict[str, KnownKey] = {}

    async def authenticate(self, request: Request) -> tuple[Principal, int]:
        """The principal and its rate limit per minute, or 401."""
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if (
            api_key is None
            and scheme.lower() in ("apikey", "bearer")
            and credentials.startswith(keys.KEY_PREFIX)
        ):
            api_key = credentials.strip()
        if api_key is not None:
            return await self._by_api_key(api_key)
        if scheme.lower() == "bearer" and credentials:
            return self._by_person_token(credentials.strip()), self.settings.default_rate_limit_per_minute
        raise MissingCredentials("send an API key (X-API-Key) or a bearer token")

    async def authenticate_key(self, plaintext: str) -> tuple[Principal, int]:
        """An API key sent some other way than the headers (Open311's ``api_key`` field)."""
        return await self._by_api_key(plaintext)

    async def _by_api_key(self, plaintext: str) -> tuple[Principal, int]:
        prefix = keys.prefix_of(plaintext)
        if prefix is None:
            raise InvalidCredentials("the API key is malformed")
        known = self._keys.get(prefix)
        if known is None or known.expires_at < time.monotonic():
            known = await self._load(prefix)
        if known is None or not keys.matches(plaintext, known.digest):
            raise InvalidCredentials("the API key is not valid")
        limit = known.rate_limit_per_minute or self.settings.default_rate_limit_per_minute
        return known.principal, limit

    async def _load(self, prefix: str) -> KnownKey | None:
        async with self.sessions() as session:
            consumer = await session.scalar(
                select(ApiConsumer).where(ApiConsumer.key_prefix == prefix, ApiConsumer.active.is_(True))
            )
        if consumer is None:
            self._keys.pop(prefix, None)
            return None
        known = KnownKey(
            principal=Principal(
                subject=f"consumer:{consumer.id}",
                kind="consumer",
                name=consumer.name,
                roles=frozenset(consumer.roles),
                scopes=frozenset(consumer.scopes),
                district=consumer.district,
                unit=consumer.unit,
            ),
            digest=consumer.key_hash,
            rate_limit_per_minute=consumer.rate_limit_per_minute,
            expires_at=time.monotonic() + self.settings.api_key_cache_seconds,
        )
        self._keys[prefix] = known
        return known

    def forget(self, prefix: str) -> None:
        self._keys.pop(prefix, None)

    def _by_person_token(self, token: str) -> Principal:
        if not self.settings.people_jwt_key:
            raise InvalidCredentials("bearer tokens for people are not configured on this gateway")
        try:
            claims = jwt.decode(
                token,
                self.settings.people_jwt_key,
                algorithms=[self.settings.people_jwt_algorithm],
                audience=self.settings.people_jwt_audience,
                issuer=self.settings.people_jwt_issuer,
                options={"require": ["exp", "sub"]},
                leeway=5,
            )
        except jwt.PyJWTError as error:
            raise InvalidCredentials(f"the bearer token is not valid: {type(error).__name__}") from None
        scopes = claims.get("scopes") or str(claims.get("scope", "")).split()
        return Principal(
            subject=f"person:{claims['sub']}",
            kind="person",
            name=str(claims.get("name") or claims["sub"]),
            roles=frozenset(str(role) for role in claims.get("roles", [])),
            scopes=frozenset(str(scope) for scope in scopes),
            district=claims.get("district"),
            unit=_unit_claim(claims.get("unit")),
        )


def _unit_claim(value: object) -> str | None:
    """The person's unit from the identity provider, or none when the claim is absent or unusable."""
    if isinstance(value, str) and 0 < len(value.strip()) <= 100:
        return value.strip()
    if value is None:
        return None
    raise InvalidCredentials("the bearer token's 'unit' claim must be a unit code of 1 to 100 characters")


class RateLimiter:
    """Token bucket per principal, in this replica's memory (a limit of N/min per replica)."""

    def __init__(self, max_tracked: int = 100_000) -> None:
        self.max_tracked = max_tracked
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, subject: str, per_minute: int, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        capacity = float(per_minute)
        tokens, updated = self._buckets.get(subject, (capacity, moment))
        tokens = min(capacity, tokens + (moment - updated) * per_minute / 60.0)
        if tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - tokens) * 60.0 / per_minute))
            self._buckets[subject] = (tokens, moment)
            raise RateLimited(
                f"over {per_minute} requests per minute",
                headers={"Retry-After": str(retry_after)},
                retry_after_seconds=retry_after,
            )
        if len(self._buckets) >= self.max_tracked and subject not in self._buckets:
            self._buckets.clear()
        self._buckets[subject] = (tokens - 1.0, moment)
