"""People's bearer tokens, issued by the city's identity provider (docs/identity-provider.md).

A token is accepted when it is signed by one of the provider's keys with that key's own asymmetric
algorithm (``alg`` from the key, never from the token alone: no ``none``, no HS256 keyed with a
public key), names the configured issuer and audience, and carries ``exp``, ``iat`` and ``sub``.
Its groups give roles, scopes and a district through the gateway's allow-list
(``CITYGRID_PEOPLE_GROUP_MAP``); scopes or roles the token claims itself count for nothing. A
malformed claim is a 401, never a 500.

The keys come from the provider's JWKS URL, kept ``people_jwks_cache_seconds`` and fetched again
after that (a key the provider removed is refused from then on). A token naming a key the gateway
does not know triggers one fetch, at most once per ``people_jwks_refresh_seconds`` however many
such tokens arrive, so rotation needs no restart and random ``kid`` values cost the provider
nothing. While the provider is down the cached keys keep working until their time is up; then
people's tokens get 503 ``gateway.identity_provider_unavailable`` (API keys keep working).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from citygrid.auth import Principal
from citygrid.errors import DomainError, Unauthenticated
from gateway.settings import (
    MIN_RSA_BITS,
    SHARED_SECRET_ALGORITHM,
    GatewaySettings,
    GroupGrant,
    people_key_algorithm,
)

log = logging.getLogger("gateway.people")

MAX_JWKS_BYTES = 1_048_576
MAX_JWKS_KEYS = 100
MAX_GROUPS = 500
LEEWAY_SECONDS = 5
DISTRICT = re.compile(r"^\d{6}$")


class InvalidPersonToken(Unauthenticated):
    code = "auth.invalid_credentials"


class IdentityProviderUnavailable(DomainError):
    code = "gateway.identity_provider_unavailable"
    status = 503
    title = "Identity provider unavailable"


@dataclass(frozen=True)
class SigningKey:
    """One of the provider's keys, parsed once, with the one algorithm it verifies."""

    key: Any
    algorithm: str
    kid: str | None = None


class KeySource(Protocol):
    async def find(self, kid: str | None) -> SigningKey: ...

    async def aclose(self) -> None: ...


class StaticKey:
    """One configured key (a PEM public key; in development and tests also an HS256 secret)."""

    def __init__(self, settings: GatewaySettings) -> None:
        material = settings.people_jwt_key
        if SHARED_SECRET_ALGORITHM in settings.people_jwt_algorithms:
            self.key = SigningKey(material.encode(), SHARED_SECRET_ALGORITHM)
        else:
            algorithm = people_key_algorithm(material)
            self.key = SigningKey(serialization.load_pem_public_key(material.encode()), algorithm)

    async def find(self, kid: str | None) -> SigningKey:
        return self.key

    async def aclose(self) -> None:
        return None


def parse_jwks(document: object, algorithms: frozenset[str]) -> dict[str | None, SigningKey]:
    """The usable signing keys of a JWKS document by ``kid``; unusable members are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' list)")
    found: dict[str | None, SigningKey] = {}
    for member in document["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(member, dict) or member.get("use", "sig") != "sig" or member.get("kty") == "oct":
            continue
        try:
            jwk = jwt.PyJWK(member)
        except (jwt.PyJWTError, TypeError, ValueError):
            continue
        if jwk.algorithm_name not in algorithms:
            continue
        if isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size < MIN_RSA_BITS:
            continue
        kid = jwk.key_id if isinstance(jwk.key_id, str) else None
        found.setdefault(kid, SigningKey(jwk.key, jwk.algorithm_name, kid))
    if not found:
        raise ValueError("the JWK Set holds no usable signing key")
    return found


class JwksKeys:
    """The provider's keys from its JWKS URL: cached, refreshed on time and on an unknown ``kid``."""

    def __init__(
        self,
        url: str,
        *,
        algorithms: frozenset[str],
        cache_seconds: float,
        refresh_seconds: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.cache_seconds = cache_seconds
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.on_fetch = on_fetch
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"Accept": "application/json"}
        )
        self._keys: dict[str | None, SigningKey] = {}
        self._fresh_until = float("-inf")
        self._last_attempt = float("-inf")
        self._fetching: asyncio.Task[None] | None = None

    async def find(self, kid: str | None) -> SigningKey:
        now = self.clock()
        refreshed = False
        if now >= self._fresh_until:
            refreshed = await self._refresh(now)
            if self.clock() >= self._fresh_until:
                raise IdentityProviderUnavailable(
                    "the identity provider's keys cannot be fetched; retry shortly",
                    headers={"Retry-After": str(max(1, round(self.refresh_seconds)))},
                )
        key = self._lookup(kid)
        if key is None and kid is not None and not refreshed:
            await self._refresh(now)  # a new key the provider published since the last fetch
            key = self._lookup(kid)
        if key is None:
            raise InvalidPersonToken("the bearer token is not signed by a key of the identity provider")
        return key

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            # A token without kid is accepted only from a provider that publishes one key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, now: float) -> bool:
        """One fetch at a time, and none sooner than ``refresh_seconds`` after the last attempt;
        whether one was made (or awaited)."""
        if self._fetching is None:
            if now - self._last_attempt < self.refresh_seconds:
                return False
            self._last_attempt = now
            self._fetching = asyncio.create_task(self._fetch(), name="people-jwks-fetch")
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)
        return True

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._fetching is task:
            self._fetching = None

    async def _fetch(self) -> None:
        try:
            async with self.client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"the JWK Set is larger than {MAX_JWKS_BYTES} bytes")
            keys = parse_jwks(json.loads(body), self.algorithms)
        except Exception as error:  # an outside system: whatever failed, the cached keys stay
            log.warning(
                "people's keys: fetching %s failed (%s); the cached keys stay until due", self.url, error
            )
            if self.on_fetch is not None:
                self.on_fetch("failed")
            return
        self._keys = keys
        self._fresh_until = self.clock() + self.cache_seconds
        if self.on_fetch is not None:
            self.on_fetch("ok")

    async def aclose(self) -> None:
        await self.client.aclose()


def claim_at(claims: Mapping[str, Any], path: str) -> object:
    """A claim by dotted path (``realm_access.roles``); None when any step is missing."""
    value: object = claims
    for step in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def _text(value: object, what: str, *, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise InvalidPersonToken(
            f"the bearer token's '{what}' claim must be a string of 1 to {limit} characters"
        )
    return value.strip()


class PeopleTokens:
    """Verifies people's tokens and maps their groups to CityGrid principals."""

    def __init__(self, settings: GatewaySettings, keys: KeySource) -> None:
        self.keys = keys
        self.algorithms = frozenset(settings.people_jwt_algorithms)
        self.issuer = settings.people_jwt_issuer
        self.audience = settings.people_jwt_audience
        self.groups_claim = settings.people_groups_claim
        self.group_map: dict[str, GroupGrant] = dict(settings.people_group_map)

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, on_fetch: Callable[[str], None] | None = None
    ) -> PeopleTokens | None:
        """None when people's tokens are not configured (API keys only)."""
        if settings.people_jwks_url:
            keys: KeySource = JwksKeys(
                settings.people_jwks_url,
                algorithms=frozenset(settings.people_jwt_algorithms),
                cache_seconds=settings.people_jwks_cache_seconds,
                refresh_seconds=settings.people_jwks_refresh_seconds,
                timeout=settings.people_jwks_timeout_seconds,
                on_fetch=on_fetch,
            )
        elif settings.people_jwt_key:
            keys = StaticKey(settings)
        else:
            return None
        return cls(settings, keys)

    async def principal(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidPersonToken("the bearer token is not valid: DecodeError") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidPersonToken("the bearer token is not valid: its algorithm is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise InvalidPersonToken("the bearer token is not valid: its 'kid' is not a string")
        key = await self.keys.find(kid)
        if key.algorithm != algorithm:
            raise InvalidPersonToken("the bearer token is not valid: not the algorithm of its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=LEEWAY_SECONDS,
            )
        except (jwt.PyJWTError, TypeError, ValueError) as error:
            raise InvalidPersonToken(f"the bearer token is not valid: {type(error).__name__}") from None
        return self.principal_of(claims)

    def principal_of(self, claims: Mapping[str, Any]) -> Principal:
        """The person as CityGrid sees them: roles, scopes and district from their mapped groups."""
        subject = _text(claims.get("sub"), "sub")
        name = claims.get("name")
        groups = claim_at(claims, self.groups_claim)
        if groups is None:
            groups = []
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            raise InvalidPersonToken(
                f"the bearer token's '{self.groups_claim}' claim must be a list of groups"
            )
        if not all(isinstance(group, str) and 0 < len(group) <= 256 for group in groups):
            raise InvalidPersonToken(f"the bearer token's '{self.groups_claim}' claim must list group names")
        grants = [self.group_map[group] for group in groups if group in self.group_map]
        districts = {grant.district for grant in grants if grant.district is not None}
        claimed_district = claims.get("district")
        if claimed_district is not None:
            if not isinstance(claimed_district, str) or not DISTRICT.match(claimed_district):
                raise InvalidPersonToken(
                    "the bearer token's 'district' claim must be a six-digit district code"
                )
            districts.add(claimed_district)  # a district only ever narrows what the person may reach
        if len(districts) > 1:
            raise InvalidPersonToken("the bearer token's groups name more than one district")
        return Principal(
            subject=f"person:{subject}",
            kind="person",
            name=subject if name is None else _text(name, "name"),
            roles=frozenset(role for grant in grants for role in grant.roles),
            scopes=frozenset(scope for grant in grants for scope in grant.scopes),
            district=next(iter(districts), None),
            unit=_unit_claim(claims.get("unit")),
        )

    async def aclose(self) -> None:
        await self.keys.aclose()


def _unit_claim(value: object) -> str | None:
    """The person's unit from the identity provider, or none when the claim is absent."""
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value.strip()) <= 100 and value.isprintable():
        return value.strip()
    raise InvalidPersonToken("the bearer token's 'unit' claim must be a unit code of 1 to 100 characters")
