"""Who is calling: an API key (departments, systems), an access token the gateway issued for one
(``gateway.oauth``), or a person's bearer JWT; and rate limits.

People's tokens are the identity provider's (``gateway.people``): public keys from its JWKS,
groups mapped to CityGrid roles and scopes through the gateway's allow-list. A bearer token is the
gateway's own when it names the gateway as its issuer.

Revocation: the replica that revokes forgets at once; every other replica reads the change from
``credential_changes`` within ``credential_poll_seconds`` (``gateway.consumers.changes``), forgets
the key, and refuses the consumer's access tokens issued up to that second.

An authentication flood costs no database query per request: valid keys are cached, unknown key
prefixes are remembered for a while (bounded LRUs both), concurrent lookups of one prefix share one
query, and each client address may make only so many lookups that find nothing before it is told to
slow down (429), while the keys this replica already knows keep working (re-checking one when its
cache entry is due costs no budget).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import jwt
from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.auth import Principal
from citygrid.errors import DomainError, Unauthenticated
from gateway import keys
from gateway.models import ApiConsumer, ConsumerKey
from gateway.oauth.signing import TokenKeys
from gateway.people import PeopleTokens
from gateway.quotas.policies import Allowance, Period, Standing, headers
from gateway.settings import GatewaySettings

K = TypeVar("K")
V = TypeVar("V")


class MissingCredentials(Unauthenticated):
    code = "auth.missing_credentials"


class InvalidCredentials(Unauthenticated):
    code = "auth.invalid_credentials"


class RateLimited(DomainError):
    code = "gateway.rate_limited"
    status = 429
    title = "Too many requests"
    template: ClassVar[str] = "over {per_minute} requests per minute"


class DailyQuotaExhausted(RateLimited):
    """The subject's requests of the city day are spent (every replica together)."""

    code = "gateway.daily_quota_exhausted"
    title = "Daily quota exhausted"
    template = "the daily quota of {per_minute} requests is spent"


class ClientRateLimited(RateLimited):
    """Too many requests from one client address, whoever it claims to be (checked before authentication)."""

    code = "gateway.client_rate_limited"
    template = "over {per_minute} requests per minute from your address"


class AuthenticationThrottled(RateLimited):
    """Too many API keys from one client address that the database did not know."""

    code = "gateway.auth_throttled"
    title = "Too many failed authentications"
    template = "over {per_minute} unknown API keys per minute from your address"


class LruCache(Generic[K, V]):
    """At most ``max_entries`` values, each until its expiry; the least recently used goes first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, expires_at: float) -> None:
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Quota:
    """Where a subject stands after a request counted here: the ``RateLimit`` response fields."""

    limit: int
    remaining: int
    reset_seconds: int  # until the whole allowance is back

    def headers(self) -> dict[str, str]:
        return headers((Standing(Period.MINUTE, self.limit, self.remaining, self.reset_seconds),))


class RateLimiter:
    """Token bucket per subject, in this replica's memory (a limit of N/min per replica): for client
    addresses before authentication and anonymous Open311 reads. Consumers' quotas hold across
    replicas instead (``gateway.quotas``).

    At most ``max_tracked`` subjects are kept; the one idle longest is forgotten first (its bucket
    has refilled the most), so a flood of new subjects never resets everyone else's buckets.
    """

    def __init__(self, max_tracked: int = 100_000, error: type[RateLimited] = RateLimited) -> None:
        self.max_tracked = max_tracked
        self.error = error
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, subject: str, per_minute: int, moment: float) -> float:
        tokens, updated = self._buckets.get(subject, (float(per_minute), moment))
        return min(float(per_minute), tokens + max(0.0, moment - updated) * per_minute / 60.0)

    def _store(self, subject: str, tokens: float, moment: float) -> None:
        self._buckets[subject] = (tokens, moment)
        self._buckets.move_to_end(subject)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)

    def check(self, subject: str, per_minute: int, now: float | None = None) -> Quota:
        """Count one request, or raise the limiter's 429 with ``Retry-After``."""
        moment = time.monotonic() if now is None else now
        tokens = self._tokens(subject, per_minute, moment)
        if tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - tokens) * 60.0 / per_minute))
            self._store(subject, tokens, moment)
            quota = Quota(per_minute, 0, math.ceil((per_minute - tokens) * 60.0 / per_minute))
            raise self.error(
                self.error.template.format(per_minute=per_minute),
                headers={"Retry-After": str(retry_after), **quota.headers()},
                retry_after_seconds=retry_after,
            )
        tokens -= 1.0
        self._store(subject, tokens, moment)
        return Quota(per_minute, math.floor(tokens), math.ceil((per_minute - tokens) * 60.0 / per_minute))

    def refund(self, subject: str, per_minute: int, now: float | None = None) -> None:
        """Give back the token of a request that turned out not to count."""
        moment = time.monotonic() if now is None else now
        if subject in self._buckets:
            self._store(
                subject, min(float(per_minute), self._tokens(subject, per_minute, moment) + 1.0), moment
            )


@dataclass(frozen=True)
class KnownKey:
    principal: Principal
    digest: str
    rate_limit_per_minute: int | None
    daily_quota: int | None
    fresh_until: float  # then it is looked up again (a revocation elsewhere shows within this)
    expires_at: float | None  # the key's own expiry (wall clock), None: until revoked


# A key seen valid is remembered this long past its freshness: re-checking it needs no lookup
# budget, so a flood from its address cannot lock out a key this replica already knew.
KNOWN_KEY_MEMORY_SECONDS = 86_400.0


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[str], None] | None = None,
        people: PeopleTokens | None = None,
        tokens: TokenKeys | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.wall_clock = wall_clock
        self.on_lookup = on_lookup
        self.people = people
        self.tokens = tokens
        # The prefixes this replica holds of each consumer, and the second up to which each changed
        # consumer's access tokens are refused (kept for as long as a token lives).
        self._prefixes: dict[str, set[str]] = {}
        # Access tokens refused: of a consumer, those issued up to a second (infinity once it is
        # revoked); of a key, every one it was traded for. Each held for one token lifetime.
        self._tokens_not_before: dict[str, tuple[float, float]] = {}
        self._revoked_keys: dict[str, float] = {}
        # Bumped by every forget: a lookup that a forget overtook does not cache what it read.
        self._forgets = 0
        self._known: LruCache[str, KnownKey] = LruCache(settings.api_key_cache_entries)
        self._unknown: LruCache[str, bool] = LruCache(settings.api_key_cache_entries)
        self._lookups: dict[str, asyncio.Task[KnownKey | None]] = {}
        self.failures = RateLimiter(settings.rate_limit_tracked_subjects, AuthenticationThrottled)

    def allowance(self, per_minute: int | None, per_day: int | None) -> Allowance:
        return Allowance(
            per_minute or self.settings.default_rate_limit_per_minute,
            per_day if per_day is not None else self.settings.default_daily_quota,
        )

    async def authenticate(self, request: Request, client: str = "") -> tuple[Principal, Allowance]:
        """The principal and its allowance, or 401. ``client`` is the caller's address key."""
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
            return await self._by_api_key(api_key, client)
        if scheme.lower() == "bearer" and credentials:
            token = credentials.strip()
            if self.tokens is not None and self._is_ours(token):
                return await self._by_access_token(token)
            return await self._by_person_token(token), self.allowance(None, None)
        raise MissingCredentials("send an API key (X-API-Key) or a bearer token")

    async def authenticate_key(self, plaintext: str, client: str = "") -> tuple[Principal, Allowance]:
        """An API key sent some other way than the headers (Open311's ``api_key`` field)."""
        return await self._by_api_key(plaintext, client)

    async def _by_api_key(self, plaintext: str, client: str) -> tuple[Principal, Allowance]:
        prefix = keys.prefix_of(plaintext)
        if prefix is None:
            raise InvalidCredentials("the API key is malformed")
        now = self.clock()
        known = self._known.get(prefix, now)
        if known is None or known.fresh_until <= now:
            if known is None and self._unknown.get(prefix, now):
                raise InvalidCredentials("the API key is not valid")
            # A key that matched when last seen is re-checked without spending the address's budget.
            vouched = known is not None and keys.matches(plaintext, known.digest)
            known = await self._lookup(prefix, client, budgeted=not vouched)
        if known is None or not keys.matches(plaintext, known.digest):
            raise InvalidCredentials("the API key is not valid")
        if known.expires_at is not None and known.expires_at <= self.wall_clock():
            raise InvalidCredentials("the API key has expired")
        return known.principal, self.allowance(known.rate_limit_per_minute, known.daily_quota)

    async def _lookup(
        self, prefix: str, client: str, *, budgeted: bool = True, fresh: bool = False
    ) -> KnownKey | None:
        """One database lookup per prefix at a time (a ``fresh`` one of its own, started now); a
        lookup that finds nothing costs the client."""
        running = None if fresh else self._lookups.get(prefix)
        if running is not None:
            return await asyncio.shield(running)
        budget = self.settings.key_lookup_failures_per_minute if budgeted else 0
        if budget:
            self.failures.check(client, budget)
        task = asyncio.create_task(self._load(prefix), name=f"api-key-lookup-{prefix}")
        if not fresh:
            self._lookups[prefix] = task
            task.add_done_callback(lambda _: self._lookups.pop(prefix, None))
        known = await asyncio.shield(task)
        if known is not None and budget:
            self.failures.refund(client, budget)
        return known

    async def authenticate_key_fresh(self, plaintext: str, client: str) -> tuple[Principal, Allowance, str]:
        """An API key checked against the database now, not this replica's cache: what a token is
        minted from must not be a grant another replica has already changed. The key's prefix too."""
        prefix = keys.prefix_of(plaintext)
        if prefix is None:
            raise InvalidCredentials("the API key is malformed")
        known = await self._lookup(prefix, client, fresh=True)
        if known is None or not keys.matches(plaintext, known.digest):
            raise InvalidCredentials("the API key is not valid")
        if known.expires_at is not None and known.expires_at <= self.wall_clock():
            raise InvalidCredentials("the API key has expired")
        return known.principal, self.allowance(known.rate_limit_per_minute, known.daily_quota), prefix

    async def _load(self, prefix: str) -> KnownKey | None:
        generation = self._forgets
        async with self.sessions() as session:
            found = (
                await session.execute(
                    select(ApiConsumer, ConsumerKey)
                    .join(ConsumerKey, ConsumerKey.consumer_id == ApiConsumer.id)
                    .where(
                        ConsumerKey.prefix == prefix,
                        ConsumerKey.revoked_at.is_(None),
                        (ConsumerKey.expires_at.is_(None)) | (ConsumerKey.expires_at > func.now()),
                        ApiConsumer.active.is_(True),
                    )
                )
            ).first()
        now = self.clock()
        consumer, key = found if found is not None else (None, None)
        if self.on_lookup is not None:
            self.on_lookup("unknown" if consumer is None else "found")
        if consumer is None or key is None:
            self._known.pop(prefix)
            self._unknown.put(prefix, True, now + self.settings.api_key_negative_cache_seconds)
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
            digest=key.key_hash,
            rate_limit_per_minute=consumer.rate_limit_per_minute,
            daily_quota=consumer.daily_quota,
            fresh_until=now + self.settings.api_key_cache_seconds,
            expires_at=key.expires_at.timestamp() if key.expires_at is not None else None,
        )
        if generation != self._forgets:
            return known  # a forget came while this was read: answered, not cached
        self._prefixes.setdefault(known.principal.subject, set()).add(prefix)
        self._unknown.pop(prefix)
        self._known.put(
            prefix, known, now + max(KNOWN_KEY_MEMORY_SECONDS, self.settings.api_key_cache_seconds)
        )
        return known

    def forget(self, prefix: str) -> None:
        self._forgets += 1
        self._known.pop(prefix)

    def revoke_key(self, prefix: str) -> None:
        """The key is looked up again, and every access token traded for it is refused."""
        self.forget(prefix)
        self._revoked_keys[prefix] = self.wall_clock()

    def forget_consumer(self, subject: str, changed_at: float, *, revoked: bool = False) -> None:
        """Every key of the consumer is looked up again, and its access tokens issued up to the
        second of the change are refused (all of them once it is revoked): they carry what it was
        granted before."""
        self._forgets += 1
        for prefix in self._prefixes.pop(subject, set()):
            self._known.pop(prefix)
        up_to, _ = self._tokens_not_before.get(subject, (0.0, 0.0))
        self._tokens_not_before[subject] = (
            math.inf if revoked else max(up_to, changed_at),
            self.wall_clock(),
        )

    def prune_token_refusals(self, older_than: float) -> None:
        """Forget refusals recorded before any token still valid was issued."""
        for subject, (_, recorded) in list(self._tokens_not_before.items()):
            if recorded < older_than:
                del self._tokens_not_before[subject]
        for prefix, recorded in list(self._revoked_keys.items()):
            if recorded < older_than:
                del self._revoked_keys[prefix]

    def _is_ours(self, token: str) -> bool:
        assert self.tokens is not None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.tokens.policy.issuer

    async def _by_access_token(self, token: str) -> tuple[Principal, Allowance]:
        assert self.tokens is not None
        verified = await self.tokens.verify(token)
        principal, issued_at, key = verified.principal, verified.issued_at, verified.key
        refused = self._tokens_not_before.get(principal.subject)
        if refused is not None and (refused[0] == math.inf or issued_at <= math.floor(refused[0])):
            raise InvalidCredentials("the access token was revoked; ask /oauth/token for another")
        if key is not None and key in self._revoked_keys:
            raise InvalidCredentials("the key this access token was issued for is revoked")
        return principal, self.allowance(verified.rate_limit_per_minute, verified.daily_quota)

    async def _by_person_token(self, token: str) -> Principal:
        if self.people is None:
            raise InvalidCredentials("bearer tokens for people are not configured on this gateway")
        return await self.people.principal(token)

    async def aclose(self) -> None:
        if self.people is not None:
            await self.people.aclose()
