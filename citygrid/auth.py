"""The internal principal: who is calling, as vouched for by the gateway.

The gateway authenticates clients, then signs a short-lived EdDSA JWT naming the principal, the one
service it is meant for (``aud``) and the one request it is for (DPoP-style): its method (``htm``)
and a SHA-256 of the path and query the service receives (``htu_s256``), plus a one-time ``jti``
for unsafe methods. Services verify it with the gateway's public key and check it against the
request in hand, so a call that did not come through the gateway gets a 401, and a token sniffed
from a read cannot be replayed as a write or on another path (``auth.token_not_for_this_request``),
nor a write's token replayed on the same replica (``auth.token_replayed``).

Keys are parsed once: the gateway holds a ``PrincipalSigner``, each service a ``PrincipalVerifier``.

District binding: a principal with a ``district`` works for that district only. Services ask
``district_scope(principal, requested)`` for the district to restrict a list to (``None``: city-wide)
and call ``require_district(principal, record_district)`` before acting on or showing one record.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import Scope

from citygrid.errors import Forbidden, Unauthenticated

PRINCIPAL_HEADER = "X-CityGrid-Principal"
# The scope of every /v1/admin/... route and of other administrative changes, in every process.
ADMIN_SCOPE = "admin"
ALGORITHM = "EdDSA"
DEFAULT_ISSUER = "citygrid-gateway"
# Methods that change nothing: their tokens carry no jti (a read may be retried with its token).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PrincipalKind = Literal["consumer", "person", "service", "anonymous"]
# Write tokens remembered per replica to refuse a replay; beyond this the oldest are forgotten.
REPLAY_MEMORY = 100_000
LEEWAY_SECONDS = 5


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    kind: PrincipalKind
    name: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    # The district (six-digit code) the principal works for; None: the whole city.
    district: str | None = None
    # The responsible unit a person or a unit's system works for; it limits them to that unit's cases.
    unit: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_any_role(self, roles: frozenset[str] | set[str]) -> bool:
        return not self.roles.isdisjoint(roles)


class MissingToken(Unauthenticated):
    code = "auth.missing_internal_token"


class InvalidToken(Unauthenticated):
    code = "auth.invalid_internal_token"


class TokenNotForThisRequest(Unauthenticated):
    code = "auth.token_not_for_this_request"


class TokenReplayed(Unauthenticated):
    code = "auth.token_replayed"


class MissingScope(Forbidden):
    code = "auth.missing_scope"


class OtherDistrict(Forbidden):
    code = "auth.other_district"


def generate_keypair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def load_private_key(pem: str | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """The gateway's signing key, parsed once; a malformed or non-Ed25519 key fails here, at startup."""
    if isinstance(pem, Ed25519PrivateKey):
        return pem
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the internal token's private key must be an Ed25519 key")
    return key


def load_public_key(pem: str | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(pem, Ed25519PublicKey):
        return pem
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the internal token's public key must be an Ed25519 key")
    return key


def target_digest(target: str | bytes) -> str:
    """What ``htu_s256`` holds: the SHA-256 of the path and query, base64url without padding.

    A digest rather than the target itself keeps the header small whatever the query's length.
    """
    raw = target.encode("latin-1") if isinstance(target, str) else target
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class RequestTarget:
    """The request a token must be for: its method and the raw path and query as received."""

    method: str
    target: bytes

    @classmethod
    def of(cls, scope: Scope) -> RequestTarget:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        return cls(str(scope["method"]).upper(), raw_path + b"?" + query if query else raw_path)


class PrincipalSigner:
    """Signs principals with the gateway's key, parsed once (not on every request)."""

    def __init__(
        self,
        *,
        private_key: str | Ed25519PrivateKey,
        issuer: str = DEFAULT_ISSUER,
        ttl_seconds: int = 60,
    ) -> None:
        self.key = load_private_key(private_key)
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds

    def sign(
        self,
        principal: Principal,
        *,
        audience: str,
        request: RequestTarget | None = None,
        ttl_seconds: int | None = None,
        now: float | None = None,
        issuer: str | None = None,
    ) -> str:
        """``request`` binds the token to one call (the gateway always gives it); a token without
        it is accepted only by services in development and tests."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": principal.subject,
            "iat": issued,
            "exp": issued + (self.ttl_seconds if ttl_seconds is None else ttl_seconds),
            "kind": principal.kind,
            "name": principal.name,
            "roles": sorted(principal.roles),
            "scopes": sorted(principal.scopes),
            "district": principal.district,
            "unit": principal.unit,
        }
        if request is not None:
            claims["htm"] = request.method.upper()
            claims["htu_s256"] = target_digest(request.target)
            if claims["htm"] not in SAFE_METHODS:
                claims["jti"] = secrets.token_urlsafe(16)
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)


def sign_principal(
    principal: Principal,
    *,
    private_key: str | Ed25519PrivateKey,
    audience: str,
    issuer: str = DEFAULT_ISSUER,
    ttl_seconds: int = 60,
    now: float | None = None,
    request: RequestTarget | None = None,
) -> str:
    """One token (tests, tools); a process that signs many holds a ``PrincipalSigner``."""
    signer = PrincipalSigner(private_key=private_key, issuer=issuer, ttl_seconds=ttl_seconds)
    return signer.sign(principal, audience=audience, request=request, now=now)


class PrincipalVerifier:
    """Verifies the gateway's tokens with its public key, parsed once.

    ``require_binding``: a token must name the request it arrives with (production; development
    and tests also take the unbound tokens their tools sign). Writes' ``jti`` are remembered until
    their token expires, at most ``replay_memory`` of them (per replica: a replay to another
    replica is not seen, which the 60 s lifetime and the request binding bound).
    """

    def __init__(
        self,
        *,
        public_key: str | Ed25519PublicKey,
        audience: str,
        issuer: str = DEFAULT_ISSUER,
        require_binding: bool = True,
        replay_memory: int = REPLAY_MEMORY,
    ) -> None:
        self.key = load_public_key(public_key) if public_key else None
        self.audience = audience
        self.issuer = issuer
        self.require_binding = require_binding
        self.replay_memory = replay_memory
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, token: str | None, request: RequestTarget | None = None) -> Principal:
        """The principal, or 401. With ``request``, the token must be bound to it."""
        if not token:
            raise MissingToken("this service is reached only through the gateway")
        if self.key is None:
            raise InvalidToken("this service has no key to verify the gateway's token")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                leeway=LEEWAY_SECONDS,
            )
            principal = Principal(
                subject=claims["sub"],
                kind=claims["kind"],
                name=claims.get("name") or claims["sub"],
                roles=frozenset(claims.get("roles") or ()),
                scopes=frozenset(claims.get("scopes") or ()),
                district=claims.get("district"),
                unit=claims.get("unit"),
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValidationError) as error:
            raise InvalidToken(f"internal token rejected: {type(error).__name__}") from None
        if request is not None:
            self._check_binding(claims, request)
        return principal

    def _check_binding(self, claims: dict[str, Any], request: RequestTarget) -> None:
        method, digest, jti = claims.get("htm"), claims.get("htu_s256"), claims.get("jti")
        if method is None and digest is None and jti is None:
            if self.require_binding:
                raise TokenNotForThisRequest("the internal token names no request")
            return
        if method != request.method or digest != target_digest(request.target):
            raise TokenNotForThisRequest("the internal token was issued for another request")
        if request.method in SAFE_METHODS:
            return
        if not isinstance(jti, str) or not jti:
            raise TokenNotForThisRequest("a change needs a one-time internal token (jti)")
        now = time.time()
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.replay_memory:
                break
            del self._seen[oldest]
        if jti in self._seen:
            raise TokenReplayed("this internal token was used already")
        self._seen[jti] = float(claims["exp"]) + LEEWAY_SECONDS


async def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    verifier: PrincipalVerifier = request.app.state.kit.verifier
    principal = verifier.verify(request.headers.get(PRINCIPAL_HEADER), RequestTarget.of(request.scope))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise MissingScope(f"this needs the scope '{scope}'", required_scope=scope)


def district_scope(principal: Principal, requested: str | None = None) -> str | None:
    """The district a list or a figure is restricted to: the principal's own when it is bound to
    one (a client's ``?district=`` naming another is refused, 403 ``auth.other_district``), else the
    client's filter; ``None``: the whole city. A service adds ``WHERE district_code = :district``
    whenever this is not ``None``."""
    if principal.district is None:
        return requested
    if requested is not None:
        require_district(principal, requested)
    return principal.district


def require_district(principal: Principal, district_code: str | None) -> None:
    """403 ``auth.other_district`` unless the principal may act on (or see) a record of this
    district. A district-bound principal is refused a record with no district at all."""
    if principal.district is not None and district_code != principal.district:
        raise OtherDistrict(
            f"this principal works for district {principal.district} only",
            district=principal.district,
        )


def require_city_wide(principal: Principal, what: str) -> None:
    """403 ``auth.other_district`` for a district-bound principal: ``what`` (a catalogue, the city's
    calendars, an engine's feed) belongs to the whole city, not to one district."""
    if principal.district is not None:
        raise OtherDistrict(
            f"{what} is the whole city's; this principal works for district {principal.district} only",
            district=principal.district,
        )
