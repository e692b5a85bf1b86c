"""A consumer's subscriptions: register one (its secret shown once), change it, pause and resume it,
rotate its secret with overlap, replay what it was sent since a point in time, read its delivery log.

Every function works on the caller's session and transaction and on the calling consumer's own
subscriptions only: another consumer's subscription is not found, not forbidden.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.clock import EARLIEST
from citygrid.db import transaction_time
from citygrid.errors import Conflict, NotFound
from citygrid.pagination import cursor_time, cursor_value, decode_cursor, encode_cursor
from gateway.models import ApiConsumer, Subscription, WebhookAttempt, WebhookDelivery
from gateway.subscriptions import rules
from gateway.subscriptions.sealing import Sealer, new_secret

ATTEMPTS_SHOWN = 50
REPLAY_BATCH = 10_000
MAX_DELIVERY_ID = 2**63 - 1


class SubscriptionNotFound(NotFound):
    code = "subscription.not_found"


class DeliveryNotFound(NotFound):
    code = "subscription.delivery_not_found"


class LimitReached(Conflict):
    code = "subscription.limit_reached"


@dataclass(frozen=True)
class Wanted:
    """What a subscription asks for, checked (``rules``)."""

    url: str
    event_types: list[str]
    filters: rules.Filters
    description: str | None


def check(
    *,
    url: str,
    event_types: Sequence[str],
    filters: rules.Filters,
    description: str | None,
    audience: rules.Audience,
    allow_http: bool,
    ports: frozenset[int] | None = None,
) -> Wanted:
    """The request as a subscription may hold it, or the 4xx that says why not (no I/O)."""
    rules.parse_target(url, allow_http=allow_http, ports=ports)
    checked_types = rules.check_event_types(event_types, audience)
    rules.check_districts(filters, audience)
    rules.check_fields(filters, checked_types, audience)
    return Wanted(url.strip(), checked_types, filters, description)


async def create(
    session: AsyncSession, consumer_id: uuid.UUID, wanted: Wanted, *, sealer: Sealer, limit: int
) -> tuple[Subscription, str]:
    """A new subscription and its signing secret (shown once; stored sealed)."""
    # The consumer's row locked: two registrations at once cannot both pass the limit.
    await session.execute(
        select(ApiConsumer.id).where(ApiConsumer.id == consumer_id).with_for_update(key_share=True)
    )
    held = await session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.consumer_id == consumer_id)
    )
    if (held or 0) >= limit:
        raise LimitReached(f"a consumer holds at most {limit} subscriptions; delete one first")
    secret = new_secret()
    subscription = Subscription(
        consumer_id=consumer_id,
        url=wanted.url,
        event_types=wanted.event_types,
        filters=wanted.filters.to_json(),
        description=wanted.description,
        secret_sealed=sealer.seal(secret),
    )
    session.add(subscription)
    await session.flush()
    await session.refresh(subscription)
    return subscription, secret


async def subscription_of(
    session: AsyncSession, consumer_id: uuid.UUID, subscription_id: uuid.UUID, *, lock: bool = False
) -> Subscription:
    query = select(Subscription).where(
        Subscription.id == subscription_id, Subscription.consumer_id == consumer_id
    )
    if lock:
        query = query.with_for_update()
    found = await session.scalar(query)
    if found is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id} of this consumer")
    return found


async def page(
    session: AsyncSession, consumer_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Subscription], str | None]:
    """The consumer's subscriptions, newest first (at most ``webhook_subscriptions_per_consumer``)."""
    query = (
        select(Subscription)
        .where(Subscription.consumer_id == consumer_id)
        .order_by(Subscription.created_at.desc(), Subscription.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        at, after = decode_cursor(cursor, 2)
        query = query.where(
            tuple_(Subscription.created_at, Subscription.id)
            < (cursor_time(at), cursor_value(uuid.UUID, after))
        )
    found = list((await session.scalars(query)).all())
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], encode_cursor(last.created_at.isoformat(), str(last.id))


async def change(session: AsyncSession, subscription: Subscription, wanted: Wanted) -> Subscription:
    subscription.url = wanted.url
    subscription.event_types = wanted.event_types
    subscription.filters = wanted.filters.to_json()
    subscription.description = wanted.description
    subscription.updated_at = func.now()
    await session.flush()
    await session.refresh(subscription)
    return subscription


async def remove(session: AsyncSession, subscription: Subscription) -> None:
    """The subscription and its delivery log (what is in flight is not recorded, and not retried).
    Its deliveries go first: a settle locks a delivery, then its subscription, and so does this."""
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id))
    await session.execute(delete(Subscription).where(Subscription.id == subscription.id))


async def pause(session: AsyncSession, subscription: Subscription) -> Subscription:
    """Nothing is sent while paused; what matches is still queued, and sent on resume."""
    subscription.state = "paused"
    subscription.paused_reason = "paused by its consumer"
    subscription.updated_at = func.now()
    await session.flush()
    await session.refresh(subscription)
    return subscription


async def resume(session: AsyncSession, subscription: Subscription) -> Subscription:
    """Active again, its failures forgotten: what is queued is sent at once."""
    subscription.state = "active"
    subscription.paused_reason = None
    subscription.failures = 0
    subscription.retry_at = None
    subscription.updated_at = func.now()
    await session.flush()
    await session.execute(_DUE_NOW, {"id": subscription.id, "since": EARLIEST, "limit": REPLAY_BATCH})
    await session.refresh(subscription)
    return subscription


async def rotate_secret(
    session: AsyncSession, subscription: Subscription, *, sealer: Sealer, overlap: timedelta
) -> tuple[Subscription, str]:
    """A new secret; the one before keeps signing beside it for ``overlap``."""
    secret = new_secret()
    now = await transaction_time(session)
    subscription.previous_secret_sealed = subscription.secret_sealed
    subscription.previous_until = now + overlap
    subscription.secret_sealed = sealer.seal(secret)
    subscription.updated_at = now
    await session.flush()
    await session.refresh(subscription)
    return subscription, secret


# What is queued and not in a replica's hands: due now, its backoff forgotten. The soonest
# ``limit`` of them (by the index of due deliveries), so a resume after days of queueing stays one
# short statement; the rest come due by their own backoff, an hour at most.
_DUE_NOW = text(
    """
    UPDATE webhook_deliveries SET next_attempt_at = now()
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE subscription_id = :id AND state = 'pending' AND next_attempt_at > now()
          AND created_at >= :since AND (leased_until IS NULL OR leased_until <= now())
        ORDER BY next_attempt_at
        LIMIT :limit
    )
    """
)
# A replay's batch: the oldest settled deliveries since the point asked for, queued again.
_REPLAYED = text(
    """
    WITH batch AS (
        SELECT id, created_at FROM webhook_deliveries
        WHERE subscription_id = :id AND created_at >= :since AND state <> 'pending'
        ORDER BY created_at, id
        LIMIT :limit
        FOR UPDATE
    ), queued AS (
        UPDATE webhook_deliveries d
        SET state = 'pending', attempts = 0, next_attempt_at = now(), leased_until = NULL,
            last_error = NULL, delivered_at = NULL
        FROM batch WHERE d.id = batch.id
        RETURNING d.created_at
    )
    SELECT count(*) AS queued, max(created_at) AS last FROM queued
    """
)


@dataclass(frozen=True)
class Replayed:
    queued: int
    # Set when the batch was full: replay again from there for the rest.
    continue_from: datetime | None


async def replay(
    session: AsyncSession, subscription: Subscription, since: datetime, *, limit: int = REPLAY_BATCH
) -> Replayed:
    """Send again every message queued for the subscription since ``since`` (within retention),
    whatever became of it: due now, with its attempts counted afresh; what is still pending is made
    due now. At most ``limit`` settled ones per call, oldest first."""
    await session.execute(_DUE_NOW, {"id": subscription.id, "since": since, "limit": limit})
    row = (await session.execute(_REPLAYED, {"id": subscription.id, "since": since, "limit": limit})).one()
    queued = int(row.queued)
    return Replayed(queued, row.last if queued >= limit else None)


async def deliveries_page(
    session: AsyncSession,
    subscription: Subscription,
    *,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """The delivery log, newest first, with each message's type."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit + 1)
    )
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    if cursor:
        at, after = decode_cursor(cursor, 2)
        query = query.where(
            tuple_(WebhookDelivery.created_at, WebhookDelivery.id)
            < (cursor_time(at), cursor_value(_delivery_id, after))
        )
    found = list((await session.scalars(query)).all())
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], encode_cursor(last.created_at.isoformat(), last.id)


def _delivery_id(raw: Any) -> int:
    value = int(raw)
    if isinstance(raw, bool) or not 1 <= value <= MAX_DELIVERY_ID:
        raise ValueError("not a delivery id")
    return value


async def delivery_of(
    session: AsyncSession, subscription: Subscription, delivery_id: int
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    delivery = await session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == subscription.id
        )
    )
    if delivery is None:
        raise DeliveryNotFound(f"no delivery {delivery_id} of this subscription")
    attempts = (
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id.desc())
            .limit(ATTEMPTS_SHOWN)
        )
    ).all()
    return delivery, list(attempts)


async def purge(
    sessions: Any, *, retention: timedelta, undelivered: timedelta, batch_size: int = 1000
) -> int:
    """Delete, a batch at a time, the messages past retention whose deliveries are all settled, and
    any past ``undelivered``, with their deliveries and attempts (each table by its index, in the
    order a cascade would, so no statement grows with a message's history)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            text(
                """
                WITH doomed AS (
                    SELECT m.event_id,
                           m.created_at < now() - make_interval(secs => :undelivered) AS abandoned
                    FROM webhook_messages m
                    WHERE m.created_at < now() - make_interval(secs => :undelivered)
                       OR (m.created_at < now() - make_interval(secs => :retention)
                           AND NOT EXISTS (
                               SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = m.event_id AND d.state = 'pending'))
                    ORDER BY m.created_at
                    LIMIT :batch
                    FOR UPDATE SKIP LOCKED
                ), deliveries AS (
                    -- Locked, and read as they are now: one a replay queued again since the
                    -- snapshot shows as pending here, and keeps its message.
                    SELECT d.id, d.event_id, d.state FROM webhook_deliveries d
                    JOIN doomed USING (event_id)
                    FOR UPDATE OF d
                ), gone AS (
                    SELECT doomed.event_id FROM doomed
                    WHERE doomed.abandoned OR NOT EXISTS (
                        SELECT 1 FROM deliveries
                        WHERE deliveries.event_id = doomed.event_id AND deliveries.state = 'pending')
                ), attempts_gone AS (
                    DELETE FROM webhook_attempts a USING deliveries JOIN gone USING (event_id)
                    WHERE a.delivery_id = deliveries.id
                ), deliveries_gone AS (
                    DELETE FROM webhook_deliveries d USING deliveries JOIN gone USING (event_id)
                    WHERE d.id = deliveries.id
                )
                DELETE FROM webhook_messages m USING gone WHERE m.event_id = gone.event_id
                """
            ),
            {
                "retention": retention.total_seconds(),
                "undelivered": undelivered.total_seconds(),
                "batch": batch_size,
            },
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
