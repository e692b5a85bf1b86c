"""The internal principal: who is calling, as vouched for by the gateway.

The gateway authenticates clients, then signs a short-lived EdDSA JWT naming the principal and the
one service it is meant for (``aud``). Services verify it with the gateway's public key and refuse
any call without a valid one, so a request that did not come through the gateway gets a 401.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from citygrid.errors import Forbidden, Unauthenticated

PRINCIPAL_HEADER = "X-CityGrid-Principal"
# The scope of every /v1/admin/... route and of other administrative changes, in every process.
ADMIN_SCOPE = "admin"
ALGORITHM = "EdDSA"
PrincipalKind = Literal["consumer", "person", "service"]


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    kind: PrincipalKind
    name: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
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


class MissingScope(Forbidden):
    code = "auth.missing_scope"


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


def sign_principal(
    principal: Principal,
    *,
    private_key: str,
    audience: str,
    issuer: str = "citygrid-gateway",
    ttl_seconds: int = 60,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": principal.subject,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "kind": principal.kind,
        "name": principal.name,
        "roles": sorted(principal.roles),
        "scopes": sorted(principal.scopes),
        "district": principal.district,
        "unit": principal.unit,
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM)


class PrincipalVerifier:
    def __init__(self, *, public_key: str, audience: str, issuer: str = "citygrid-gateway") -> None:
        self.public_key = public_key
        self.audience = audience
        self.issuer = issuer

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise MissingToken("this service is reached only through the gateway")
        if not self.public_key:
            raise InvalidToken("this service has no key to verify the gateway's token")
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                leeway=5,
            )
            return Principal(
                subject=claims["sub"],
                kind=claims["kind"],
                name=claims.get("name") or claims["sub"],
                roles=frozenset(claims.get("roles") or ()),
                scopes=frozenset(claims.get("scopes") or ()),
                district=claims.get("district"),
                unit=claims.get("unit"),
            )
        except (jwt.PyJWTError, KeyError, ValidationError) as error:
            raise InvalidToken(f"internal token rejected: {type(error).__name__}") from None


async def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    verifier: PrincipalVerifier = request.app.state.kit.verifier
    principal = verifier.verify(request.headers.get(PRINCIPAL_HEADER))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise MissingScope(f"this needs the scope '{scope}'", required_scope=scope)


def load_private_key(pem: str) -> str:
    """Fail early on a malformed key rather than at the first request."""
    serialization.load_pem_private_key(pem.encode(), password=None)
    return pem
