"""Sending what is queued: every replica claims due deliveries and posts them, signed.

A claim takes, for subscriptions that are active and not backed off, a few due deliveries each
(``FOR UPDATE SKIP LOCKED``, so two replicas never claim the same one) and leases them past the
attempt's timeout: a replica that dies mid-attempt leaves them due again, so a message is delivered
at least once (receivers deduplicate on ``webhook-id``, the event's id). Every outcome is fenced by
the attempt it records, so a replica whose lease lapsed records nothing. One subscription per
consumer is claimed at a time, in random order, within ``per_subscription`` and ``per_consumer``
slots of this replica: a slow receiver, or a consumer with many, delays only itself.

What is sent is the event as a structured CloudEvent, its personal fields masked as the consumer's
grant says now, signed per Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; with the previous secret too while a rotation overlaps). The target's host is
resolved at every attempt and every address it gives is checked, then the checked address is the
one connected to (the ``Host`` header and TLS name stay the host's): a name that resolves to an
internal address at the moment of sending is refused, not followed. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.subscriptions import rules
from gateway.subscriptions.sealing import Sealer, SecretUnreadable

log = logging.getLogger("gateway.webhooks")

USER_AGENT: Final = "CityGrid-Webhooks/1"
CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
# A claimed delivery is due again this long after its attempt's timeout (its replica died).
LEASE_MARGIN_SECONDS: Final = 30.0
ERROR_LENGTH: Final = 300

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Policy:
    concurrency: int
    per_subscription: int
    poll_seconds: float
    timeout_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    max_attempts: int
    pause_after_failures: int
    allow_private: bool  # development, or said so outside production: receivers on internal addresses
    allow_http: bool  # outside production: plain http:// receivers
    per_consumer: int = 8
    ports: frozenset[int] | None = None  # production: the ports the egress policy opens

    @classmethod
    def of(cls, settings: GatewaySettings) -> Policy:
        return cls(
            concurrency=settings.webhook_concurrency,
            per_subscription=settings.webhook_concurrency_per_subscription,
            poll_seconds=settings.webhook_poll_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            max_attempts=settings.webhook_max_attempts,
            pause_after_failures=settings.webhook_pause_after_failures,
            allow_private=settings.environment == "development" or settings.webhook_allow_private_targets,
            allow_http=settings.environment != "production",
            per_consumer=settings.webhook_concurrency_per_consumer,
            ports=frozenset(settings.webhook_ports) if settings.environment == "production" else None,
        )

    @property
    def lease_seconds(self) -> float:
        return self.timeout_seconds + LEASE_MARGIN_SECONDS


@dataclass(frozen=True)
class Claimed:
    id: int
    subscription_id: uuid.UUID
    consumer_id: uuid.UUID
    lease: datetime  # this claim's, unique to it: every outcome is fenced by it
    attempts: int  # this one included
    url: str
    secret_sealed: str
    previous_secret_sealed: str | None  # still signing beside the current one
    audience: rules.Audience
    consumer_active: bool
    event_type: str
    event: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None
    # The gateway's own fault (a secret it cannot open): retried, never held against the receiver.
    ours: bool = False
    # A fault of this message in the gateway (it cannot be built): given up, the receiver untouched.
    broken: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# One claim: at most one subscription per consumer (in random order, so no consumer's many
# subscriptions crowd out another's), ``per_subscription`` due deliveries of each (one while it is
# failing: a probe, not a volley) and no more than its consumer's slots left on this replica,
# leased past the attempt's timeout.
_CLAIM = text(
    """
    WITH candidates AS (
        SELECT id, consumer_id, failures FROM (
            SELECT DISTINCT ON (s.consumer_id) s.id, s.consumer_id, s.failures
            FROM subscriptions s
            WHERE s.state = 'active'
              AND (s.retry_at IS NULL OR s.retry_at <= now())
              AND NOT (s.id = ANY(CAST(:busy AS uuid[])))
              AND NOT (s.consumer_id = ANY(CAST(:full AS uuid[])))
              AND EXISTS (
                  SELECT 1 FROM webhook_deliveries d
                  WHERE d.subscription_id = s.id AND d.state = 'pending' AND d.next_attempt_at <= now()
              )
            ORDER BY s.consumer_id, random()
        ) one_per_consumer
        ORDER BY random()
        LIMIT :capacity
    ), due AS (
        SELECT picked.id FROM candidates c
        CROSS JOIN LATERAL (
            SELECT d.id FROM webhook_deliveries d
            WHERE d.subscription_id = c.id AND d.state = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at, d.id
            LIMIT LEAST(
                CASE WHEN c.failures > 0 THEN 1 ELSE :per_subscription END,
                :per_consumer - COALESCE((CAST(:in_flight AS jsonb) ->> c.consumer_id::text)::int, 0)
            )
            FOR UPDATE SKIP LOCKED
        ) picked
        LIMIT :capacity
    ), claimed AS (
        UPDATE webhook_deliveries d
        SET attempts = d.attempts + 1,
            next_attempt_at = now() + make_interval(secs => :lease),
            leased_until = now() + make_interval(secs => :lease)
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.subscription_id, d.event_id, d.attempts, d.leased_until
    )
    SELECT claimed.id, claimed.subscription_id, s.consumer_id, claimed.leased_until AS lease,
           claimed.attempts, s.url, s.secret_sealed,
           CASE WHEN s.previous_until > now() THEN s.previous_secret_sealed END AS previous_secret_sealed,
           c.scopes, c.district, c.active, m.type, m.event
    FROM claimed
    JOIN subscriptions s ON s.id = claimed.subscription_id
    JOIN api_consumers c ON c.id = s.consumer_id
    JOIN webhook_messages m ON m.event_id = claimed.event_id
    """
)

# Every outcome is fenced by the claim it records (its lease, a time no other claim of the row has):
# a replica whose lease lapsed, and whose delivery another replica claimed again, records nothing.
_DELIVERED = text(
    """
    WITH settled AS (
        UPDATE webhook_deliveries
        SET state = 'delivered', delivered_at = now(), leased_until = NULL,
            last_status = :status, last_error = NULL
        WHERE id = :id AND state = 'pending' AND leased_until = :lease
        RETURNING id
    ), attempt AS (
        INSERT INTO webhook_attempts (delivery_id, status, duration_ms)
        SELECT id, :status, :duration_ms FROM settled
    )
    UPDATE subscriptions SET failures = 0, retry_at = NULL, updated_at = now()
    WHERE id = :subscription_id AND (failures <> 0 OR retry_at IS NOT NULL)
      AND EXISTS (SELECT 1 FROM settled)
    """
)

# A failed attempt: the message is retried after its own backoff (or given up after its last
# attempt), and its subscription is held back as a whole after its failures in a row, and paused
# after ``pause`` of them.
_FAILED = text(
    """
    WITH settled AS (
        UPDATE webhook_deliveries
        SET state = CASE WHEN attempts >= :max_attempts THEN 'failed' ELSE 'pending' END,
            next_attempt_at = now() + make_interval(secs => :retry_seconds), leased_until = NULL,
            last_status = :status, last_error = :error
        WHERE id = :id AND state = 'pending' AND leased_until = :lease
        RETURNING id, state
    ), attempt AS (
        INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)
        SELECT id, :status, :error, :duration_ms FROM settled
    )
    UPDATE subscriptions
    SET failures = failures + 1,
        retry_at = now() + make_interval(
            secs => LEAST(:cap, :base * power(2, LEAST(failures, 60))) * :jitter),
        state = CASE WHEN failures + 1 >= :pause THEN 'paused' ELSE state END,
        paused_reason = CASE WHEN failures + 1 >= :pause AND state = 'active'
                             THEN 'failing' ELSE paused_reason END,
        updated_at = now()
    WHERE id = :subscription_id AND EXISTS (SELECT 1 FROM settled)
    RETURNING (SELECT state FROM settled) AS delivery_state, state
    """
)

# The gateway's own fault (the subscription's secret cannot be opened): the attempt given back and
# the whole subscription held for ``hold`` (its next message would fail the same way), never counted
# towards its pause.
_DEFERRED = text(
    """
    WITH settled AS (
        UPDATE webhook_deliveries
        SET attempts = attempts - 1, leased_until = NULL, last_error = :error,
            next_attempt_at = now() + make_interval(secs => :hold)
        WHERE id = :id AND state = 'pending' AND leased_until = :lease
        RETURNING id
    ), attempt AS (
        INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)
        SELECT id, NULL, :error, :duration_ms FROM settled
    )
    UPDATE subscriptions SET retry_at = now() + make_interval(secs => :hold), updated_at = now()
    WHERE id = :subscription_id AND EXISTS (SELECT 1 FROM settled)
    """
)

# A message the gateway cannot send (it cannot be built, or its attempts were spent without an
# outcome): given up, its subscription untouched.
_BROKEN = text(
    """
    WITH settled AS (
        UPDATE webhook_deliveries
        SET state = 'failed', leased_until = NULL, last_status = NULL, last_error = :error
        WHERE id = :id AND state = 'pending' AND leased_until = :lease
        RETURNING id
    )
    INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)
    SELECT id, NULL, :error, 0 FROM settled
    """
)

# A send cut short by this replica stopping: due again at once, the attempt given back.
_RELEASED = text(
    """
    UPDATE webhook_deliveries
    SET attempts = attempts - 1, leased_until = NULL, next_attempt_at = now()
    WHERE id = :id AND state = 'pending' AND leased_until = :lease
    """
)

_DROPPED = text(
    """
    WITH settled AS (
        UPDATE webhook_deliveries
        SET state = 'dropped', leased_until = NULL, last_status = NULL, last_error = :error
        WHERE id = :id AND state = 'pending' AND leased_until = :lease
        RETURNING id
    )
    INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)
    SELECT id, NULL, :error, 0 FROM settled
    """
)

_SUBSCRIPTION_STATES = text("SELECT state, count(*) AS n FROM subscriptions GROUP BY state")
_OLDEST_DUE = text(
    """
    SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(d.next_attempt_at)), 0) AS age
    FROM subscriptions s
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at FROM webhook_deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at LIMIT 1
    ) d
    WHERE s.state = 'active' AND (s.retry_at IS NULL OR s.retry_at <= now())
    """
)


LOOKUP_SECONDS: Final = 5.0


async def resolve(host: str, port: int, executor: concurrent.futures.Executor | None = None) -> list[str]:
    """Every address ``host`` resolves to now (a literal address is itself), within five seconds."""
    literal = rules.literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        async with asyncio.timeout(LOOKUP_SECONDS):
            infos = await loop.run_in_executor(executor, lookup)
    except TimeoutError:
        raise OSError(f"no answer for {host} within {LOOKUP_SECONDS:g}s") from None
    except UnicodeError:
        raise OSError(f"{host} is not a name that resolves") from None
    return [str(info[4][0]) for info in infos]


def body_of(claimed: Claimed) -> bytes:
    """The CloudEvent as the consumer may see it, as JSON bytes (signed exactly so)."""
    event = copy.deepcopy(claimed.event)
    event["data"] = rules.masked(claimed.event_type, event.get("data") or {}, claimed.audience)
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def signature(secrets: list[str], message_id: str, at: datetime, body: bytes) -> str:
    """Standard Webhooks' ``webhook-signature``: one ``v1,<base64>`` per secret, space-separated."""
    return " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets)


def _error(text_: str) -> str:
    return text_[:ERROR_LENGTH]


class Deliverer:
    """This replica's sender: a loop that claims what is due and a task per delivery in flight."""

    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        policy: Policy,
        sealer: Sealer,
        metrics: GatewayMetrics,
        resolver: Resolver | None = None,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._sealer = sealer
        self._metrics = metrics
        # Name lookups on threads of their own, one for every delivery slot and a few for
        # registrations: a lookup never waits in a queue behind another consumer's stalled
        # nameserver (and its timeout is its own), and the loop's default executor stays free.
        self._lookups = concurrent.futures.ThreadPoolExecutor(
            max_workers=policy.concurrency + 4, thread_name_prefix="webhook-dns"
        )
        self._resolver: Resolver = resolver or functools.partial(resolve, executor=self._lookups)
        self._stopping = False
        self._woken = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], Claimed] = {}
        self._loop_task: asyncio.Task[None] | None = None
        # The deliveries' reads and writes share the gateway's pool: a few at a time, so a burst of
        # outcomes never takes the connections its requests need. Each is one statement, atomic on
        # its own: ``sessions`` are autocommit ones (no BEGIN and COMMIT round trips around it).
        self._database = asyncio.Semaphore(4)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(policy.timeout_seconds),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the one reached
            # No connection kept: the pool knows a connection by the address it reached, and two
            # receivers behind one address must not share a TLS session made for the other's name.
            limits=httpx.Limits(max_connections=policy.concurrency, max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )

    @property
    def resolver(self) -> Resolver:
        return self._resolver

    def wake(self, _queued: int = 0) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._woken.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name="gateway-webhooks")

    async def stop(self) -> None:
        """Stop claiming (a claim under way completes, so none is lost half-read), let what is in
        flight finish within an attempt's timeout, then cancel the rest: each gives its delivery
        back, due at once for another replica."""
        self._stopping = True
        self._woken.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=LOOKUP_SECONDS)
            except TimeoutError:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        if self._in_flight:
            _, pending = await asyncio.wait(list(self._in_flight), timeout=self._policy.timeout_seconds + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()
        self._lookups.shutdown(wait=False, cancel_futures=True)

    async def run(self) -> None:
        delay = self._policy.poll_seconds
        # Slots are claimed for in batches: a claim per finished delivery would cost as much as the
        # delivery's own outcome.
        batch = max(1, self._policy.concurrency // 4)
        while not self._stopping:
            free = self._policy.concurrency - len(self._in_flight)
            claimed: list[Claimed] = []
            if free >= batch or (free > 0 and not self._in_flight):
                try:
                    claimed = await self.claim(free)
                    delay = self._policy.poll_seconds
                except Exception as error:
                    log.warning("webhooks: could not claim deliveries (%s); retrying", error)
                    delay = min(delay * 2, 5.0)
                for one in claimed:
                    task = asyncio.create_task(self.deliver(one), name=f"webhook-{one.id}")
                    self._in_flight[task] = one
                    task.add_done_callback(self._finished)
                self._metrics.webhook_in_flight.set(len(self._in_flight))
            if claimed:
                continue  # more may be due: another subscription, another consumer
            self._woken.clear()
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=delay)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._metrics.webhook_in_flight.set(len(self._in_flight))
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks: a delivery failed unexpectedly", exc_info=task.exception())
        self._woken.set()

    async def claim(self, capacity: int) -> list[Claimed]:
        in_flight = list(self._in_flight.values())
        busy = sorted({one.subscription_id for one in in_flight}, key=str)
        per_consumer: dict[uuid.UUID, int] = {}
        for one in in_flight:
            per_consumer[one.consumer_id] = per_consumer.get(one.consumer_id, 0) + 1
        full = sorted((c for c, n in per_consumer.items() if n >= self._policy.per_consumer), key=str)
        async with self._database, self._sessions()() as session:
            rows = await session.execute(
                _CLAIM,
                {
                    "busy": busy,
                    "full": full,
                    "in_flight": json.dumps({str(consumer): n for consumer, n in per_consumer.items()}),
                    "per_consumer": self._policy.per_consumer,
                    "capacity": capacity,
                    "per_subscription": self._policy.per_subscription,
                    "lease": self._policy.lease_seconds,
                },
            )
            return [
                Claimed(
                    id=row.id,
                    subscription_id=row.subscription_id,
                    consumer_id=row.consumer_id,
                    lease=row.lease,
                    attempts=row.attempts,
                    url=row.url,
                    secret_sealed=row.secret_sealed,
                    previous_secret_sealed=row.previous_secret_sealed,
                    audience=rules.Audience(frozenset(row.scopes), row.district),
                    consumer_active=row.active,
                    event_type=row.type,
                    event=row.event,
                )
                for row in rows
            ]

    def refusal(self, claimed: Claimed) -> str | None:
        """Why the consumer may no longer receive this message, as it stands now; None if it may."""
        if not claimed.consumer_active:
            return "the consumer is revoked"
        if not rules.may_receive(claimed.event_type, claimed.audience):
            return f"the consumer may no longer receive {claimed.event_type}"
        district = (claimed.event.get("data") or {}).get("district_code")
        if claimed.audience.district is not None and district != claimed.audience.district:
            return "the event is not of the consumer's district"
        return None

    async def deliver(self, claimed: Claimed) -> None:
        fence = {"id": claimed.id, "lease": claimed.lease}
        try:
            await self._deliver(claimed, fence)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The gateway's own fault with this message: given up, the receiver not blamed.
            log.exception("webhooks: delivery %s could not be made", claimed.id)
            await asyncio.shield(
                self._settle(
                    _BROKEN,
                    fence | {"error": _error(f"the gateway could not send it ({type(error).__name__})")},
                )
            )
            self._metrics.webhook_attempts.labels(outcome="given_up").inc()

    async def _deliver(self, claimed: Claimed, fence: dict[str, Any]) -> None:
        if claimed.attempts > self._policy.max_attempts:
            # Claimed before by replicas that never recorded an outcome (they stopped mid-attempt).
            await self._settle(_BROKEN, fence | {"error": "its attempts were spent without an outcome"})
            self._metrics.webhook_attempts.labels(outcome="given_up").inc()
            return
        refused = self.refusal(claimed)
        if refused is not None:
            await self._settle(_DROPPED, fence | {"error": refused})
            self._metrics.webhook_attempts.labels(outcome="dropped").inc()
            return
        started = time.perf_counter()
        try:
            answer = await self.send(claimed)
        except asyncio.CancelledError:
            # This replica is stopping: the delivery is given back, due at once elsewhere.
            await asyncio.shield(self._settle(_RELEASED, fence))
            raise
        duration = time.perf_counter() - started
        self._metrics.webhook_attempt_seconds.observe(duration)
        common = fence | {
            "subscription_id": claimed.subscription_id,
            "status": answer.status,
            "duration_ms": round(duration * 1000),
        }
        if answer.delivered:
            await asyncio.shield(self._settle(_DELIVERED, common))
            self._metrics.webhook_attempts.labels(outcome="delivered").inc()
            return
        policy = self._policy
        error = _error(answer.error or f"the receiver answered {answer.status}")
        if answer.broken:
            await asyncio.shield(self._settle(_BROKEN, fence | {"error": error}))
            self._metrics.webhook_attempts.labels(outcome="given_up").inc()
            return
        if answer.ours:
            await asyncio.shield(
                self._settle(
                    _DEFERRED,
                    common
                    | {"error": error, "hold": policy.retry_max_seconds}
                    | {"duration_ms": common["duration_ms"]},
                )
            )
            self._metrics.webhook_attempts.labels(outcome="failed").inc()
            return
        retry = rules.retry_delay(
            claimed.attempts,
            base=policy.retry_base_seconds,
            cap=policy.retry_max_seconds,
            jitter=random.uniform(0.8, 1.2),
        )
        row = await asyncio.shield(
            self._settle(
                _FAILED,
                common
                | {
                    "error": error,
                    "max_attempts": policy.max_attempts,
                    "retry_seconds": retry,
                    "cap": policy.retry_max_seconds,
                    "base": policy.retry_base_seconds,
                    "jitter": random.uniform(0.8, 1.2),
                    "pause": policy.pause_after_failures,
                },
            )
        )
        given_up = row is not None and row.delivery_state == "failed"
        self._metrics.webhook_attempts.labels(outcome="given_up" if given_up else "failed").inc()
        if row is not None and row.state == "paused":
            log.warning("webhooks: subscription %s paused after repeated failures", claimed.subscription_id)

    async def _settle(self, statement: Any, parameters: dict[str, Any]) -> Any:
        """Record an outcome; the row the statement returns (``_FAILED``'s), if any."""
        try:
            async with self._database, self._sessions()() as session:
                result = await session.execute(statement, parameters)
                return result.first() if statement is _FAILED else None
        except Exception as error:
            # Not recorded: the lease lapses and the message is sent again (at least once).
            log.warning("webhooks: the outcome of delivery %s was not recorded (%s)", parameters["id"], error)
            return None

    def _secrets(self, claimed: Claimed) -> list[str]:
        secrets = [self._sealer.open(claimed.secret_sealed)]
        if claimed.previous_secret_sealed:
            secrets.append(self._sealer.open(claimed.previous_secret_sealed))
        return secrets

    async def send(self, claimed: Claimed) -> Answer:
        """One attempt; whatever goes wrong is an answer, never an exception (a delivery always
        ends in an outcome)."""
        try:
            secrets = self._secrets(claimed)
        except (SecretUnreadable, ValueError) as error:
            log.error("webhooks: subscription %s: signing secret %s", claimed.subscription_id, error)
            return Answer(
                None, "the signing secret cannot be opened (CITYGRID_WEBHOOK_SECRET_KEY)", ours=True
            )
        try:
            target = rules.parse_target(
                claimed.url, allow_http=self._policy.allow_http, ports=self._policy.ports
            )
        except rules.TargetRefused as refused:
            return Answer(None, refused.detail)
        try:
            async with asyncio.timeout(self._policy.timeout_seconds):
                return await self._post(claimed, target, secrets)
        except TimeoutError:
            return Answer(None, f"no answer within {self._policy.timeout_seconds:g}s")
        except httpx.HTTPError as error:
            return Answer(
                None, _error(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
            )
        except Exception as error:
            log.exception("webhooks: delivery %s could not be sent", claimed.id)
            return Answer(
                None, _error(f"the gateway could not send it ({type(error).__name__})"), broken=True
            )

    async def _post(self, claimed: Claimed, target: rules.Target, secrets: list[str]) -> Answer:
        try:
            found = await self._resolver(target.host, target.port)
        except OSError as error:
            return Answer(None, _error(f"{target.host} does not resolve ({error})"))
        try:
            addresses = rules.check_addresses(target.host, found, allow_private=self._policy.allow_private)
        except rules.TargetRefused as refused:
            return Answer(None, refused.detail)
        body = body_of(claimed)
        message_id = str(claimed.event["id"])
        at = datetime.now(UTC)
        headers = {
            "host": target.host_header,
            "content-type": CONTENT_TYPE,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature(secrets, message_id, at, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        unreachable: httpx.ConnectError | None = None
        # Each checked address in turn while none takes the connection (a dual-stack host whose
        # first answer is an address family this network cannot reach).
        for address in addresses[:4]:
            request = self._client.build_request(
                "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError as error:
                unreachable = error
                continue
            await response.aclose()
            return Answer(response.status_code, None)
        assert unreachable is not None
        raise unreachable

    async def gauges(self) -> None:
        """The subscriptions by state and the oldest wait, on each scrape (small reads by index)."""
        async with self._database, self._sessions()() as session:
            states = {row.state: row.n for row in await session.execute(_SUBSCRIPTION_STATES)}
            age = await session.scalar(_OLDEST_DUE)
        for state in ("active", "paused"):
            self._metrics.webhook_subscriptions.labels(state=state).set(states.get(state, 0))
        self._metrics.webhook_oldest_due_age.set(float(age or 0))


@dataclass(frozen=True)
class Webhooks:
    """What the subscription routes need of the running gateway."""

    policy: Policy
    sealer: Sealer
    deliverer: Deliverer
    resolver: Resolver
