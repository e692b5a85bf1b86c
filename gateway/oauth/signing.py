"""The gateway's own token-signing keys and the access tokens it signs with them.

Keys are ES256 (P-256), made by the gateway and kept in its database so every replica signs and
verifies with the same ones; the private half is PKCS#8 encrypted with ``token_key_passphrase``.
Rotation, by whichever replica takes the job's lock:

- a new key is made when the one signing is ``token_key_rotation_days`` old, and published at the
  JWKS URL ``token_key_publish_seconds`` before it starts signing, so verifiers that cache the JWKS
  know it before they meet a token of it;
- once it signs, the one before is retired: it signs nothing more, and stays published until the
  last token it signed has expired, then it is deleted.

Replicas read the keys every ``token_key_check_seconds``, and at once (at most every 10 s) when a
token names a key they do not hold. Verification needs no database round trip.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.auth import Principal
from citygrid.errors import Unauthenticated
from gateway.models import SigningKey
from gateway.quotas.policies import Allowance

log = logging.getLogger("gateway.oauth")

ALGORITHM: Final = "ES256"
AUDIENCE: Final = "citygrid-exchange"
ROTATION_LOCK: Final = 7_746_001
UNKNOWN_KID_REFRESH_SECONDS: Final = 10.0
LEEWAY_SECONDS: Final = 5


class InvalidAccessToken(Unauthenticated):
    code = "auth.invalid_credentials"


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private: ec.EllipticCurvePrivateKey | None  # None once retired: it signs nothing more
    public: ec.EllipticCurvePublicKey
    jwk: dict[str, Any]
    signs_from: datetime


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    rate_limit_per_minute: int | None
    daily_quota: int | None
    issued_at: int  # epoch seconds
    key: str | None  # the prefix of the API key it was traded for


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str
    lifetime: timedelta
    rotation: timedelta
    publish_ahead: timedelta
    passphrase: bytes


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(kid: str, public: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x),
        "y": _b64(numbers.y),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def new_key(passphrase: bytes, signs_from: datetime) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    kid = secrets.token_hex(8)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return SigningKey(
        kid=kid,
        private_pem=pem.decode(),
        public_jwk=public_jwk(kid, private.public_key()),
        signs_from=signs_from,
    )


async def rotate(session: AsyncSession, policy: TokenPolicy) -> int:
    """One look at the keys under the rotation lock: make, retire and delete as the policy says;
    returns how many keys it changed."""
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(ROTATION_LOCK))):
        return 0
    now: datetime = (await session.execute(select(func.now()))).scalar_one()
    rows = list((await session.scalars(select(SigningKey).order_by(SigningKey.signs_from))).all())
    changed = 0
    live = [row for row in rows if row.retired_at is None]
    newest = live[-1] if live else None
    if newest is None:
        # The first key signs at once: there is no token anyone could be verifying yet.
        session.add(new_key(policy.passphrase, now))
        return 1
    if newest.signs_from <= now - policy.rotation:
        session.add(new_key(policy.passphrase, now + policy.publish_ahead))
        changed += 1
    signing = [row for row in live if row.signs_from <= now]
    if signing:
        current = signing[-1]
        for older in signing[:-1]:
            older.retired_at = current.signs_from
            changed += 1
    # A retired key stays published while a token it signed may still be presented.
    gone = await session.execute(
        delete(SigningKey).where(SigningKey.retired_at < now - policy.lifetime - timedelta(minutes=5))
    )
    return changed + int(gone.rowcount or 0)  # type: ignore[attr-defined]


class TokenKeys:
    """This replica's copy of the signing keys: signs the access tokens, verifies them, serves the
    JWKS."""

    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        policy: TokenPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.clock = clock
        self._keys: dict[str, LoadedKey] = {}
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._refreshing:
            await self._load()
            self._refreshed_at = self.clock()

    async def _load(self) -> None:
        async with self.sessions()() as session:
            rows = list((await session.scalars(select(SigningKey).order_by(SigningKey.signs_from))).all())
        loaded: dict[str, LoadedKey] = {}
        for row in rows:
            try:
                loaded[row.kid] = self._loaded(row, self._keys.get(row.kid))
            except (ValueError, TypeError, jwt.PyJWTError) as error:
                # One key that does not open (another passphrase) must not stop the others.
                log.error("token key %s is left out: %s", row.kid, error)
        self._keys = loaded

    def _loaded(self, row: SigningKey, known: LoadedKey | None) -> LoadedKey:
        private = known.private if known is not None and row.retired_at is None else None
        if row.retired_at is None and private is None:
            key = serialization.load_pem_private_key(
                row.private_pem.encode(), password=self.policy.passphrase or None
            )
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"signing key {row.kid} is not an EC key")
            private = key
        public = known.public if known is not None else _public_of(row.public_jwk)
        return LoadedKey(row.kid, private, public, dict(row.public_jwk), row.signs_from)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in self._keys.values()]}

    def knows(self, kid: str) -> bool:
        return kid in self._keys

    def _signer(self, now: float) -> LoadedKey | None:
        signing = [
            key
            for key in self._keys.values()
            if key.private is not None and key.signs_from.timestamp() <= now
        ]
        return max(signing, key=lambda key: key.signs_from) if signing else None

    def issue(self, principal: Principal, allowance: Allowance, scopes: Sequence[str], key: str) -> str:
        """An access token for ``principal`` with ``scopes`` (a subset of its own), traded for the API
        key whose prefix is ``key`` (its revocation ends the token)."""
        now = self.clock()
        signer = self._signer(now)
        if signer is None or signer.private is None:
            raise TokensUnavailable("the gateway holds no signing key yet; try again shortly")
        claims: dict[str, Any] = {
            "iss": self.policy.issuer,
            "aud": AUDIENCE,
            "sub": principal.subject,
            "client_id": principal.subject.removeprefix("consumer:"),
            "name": principal.name,
            "scope": " ".join(sorted(scopes)),
            "roles": sorted(principal.roles),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.policy.lifetime.total_seconds()),
            "jti": uuid.uuid4().hex,
            "key": key,
        }
        for claim, value in (
            ("district", principal.district),
            ("unit", principal.unit),
            ("rate_limit_per_minute", allowance.per_minute),
            ("daily_quota", allowance.per_day),
        ):
            if value is not None:
                claims[claim] = value
        # RFC 9068: typed as an access token, so it is never taken for an identity token.
        return jwt.encode(
            claims, signer.private, algorithm=ALGORITHM, headers={"kid": signer.kid, "typ": "at+jwt"}
        )

    async def verify(self, token: str) -> VerifiedToken:
        """The principal a token of ours names, its limits, when it was issued and the prefix of the
        API key it was traded for; 401 otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAccessToken("the bearer token is malformed") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("typ") != "at+jwt":
            raise InvalidAccessToken("the bearer token is not an access token of this gateway")
        key = self._keys.get(kid)
        if key is None:
            await self._refresh_for_unknown_kid()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidAccessToken("the bearer token is signed with a key this gateway does not know")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.policy.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAccessToken("the access token has expired; ask /oauth/token for another") from None
        except jwt.PyJWTError:
            raise InvalidAccessToken("the access token is not valid") from None
        traded_for = claims.get("key")
        return VerifiedToken(
            principal=_principal(claims),
            rate_limit_per_minute=_positive(claims, "rate_limit_per_minute"),
            daily_quota=_positive(claims, "daily_quota"),
            issued_at=int(claims["iat"]),
            key=traded_for if isinstance(traded_for, str) else None,
        )

    async def _refresh_for_unknown_kid(self) -> None:
        """At most one read every 10 s, however many tokens name keys this replica does not hold
        (a forged ``kid`` costs the database nothing more); the database away is a 503."""
        async with self._refreshing:
            if self.clock() - self._refreshed_at < UNKNOWN_KID_REFRESH_SECONDS:
                return
            self._refreshed_at = self.clock()
            try:
                await self._load()
            except Exception as error:
                log.warning("token keys not read (%s)", error)
                raise TokensUnavailable("the gateway's token keys cannot be read now") from None


class TokensUnavailable(Unauthenticated):
    """No key signs yet (the first start, before the rotation job ran): a 503, not a 401."""

    code = "gateway.tokens_unavailable"
    status = 503
    title = "Tokens unavailable"


def _public_of(jwk_document: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    key = jwt.PyJWK.from_dict(dict(jwk_document)).key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("a signing key's public half is not an EC key")
    return key


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims["sub"]
    scope = claims.get("scope", "")
    roles = claims.get("roles", [])
    district = claims.get("district")
    unit = claims.get("unit")
    if (
        not isinstance(subject, str)
        or not subject.startswith("consumer:")
        or not isinstance(scope, str)
        or not isinstance(roles, list)
        or not all(isinstance(role, str) for role in roles)
        or not (district is None or isinstance(district, str))
        or not (unit is None or isinstance(unit, str))
    ):
        raise InvalidAccessToken("the access token's claims are malformed")
    name = claims.get("name")
    return Principal(
        subject=subject,
        kind="consumer",
        name=name if isinstance(name, str) else subject,
        roles=frozenset(roles),
        scopes=frozenset(scope.split()),
        district=district,
        unit=unit,
    )


def _positive(claims: Mapping[str, Any], claim: str) -> int | None:
    value = claims.get(claim)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
