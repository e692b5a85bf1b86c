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

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import transaction_time
from citygrid.errors import Conflict, NotFound
from citygrid.pagination import cursor_time, cursor_value, decode_cursor, encode_cursor
from gateway.models import ApiConsumer, Subscription, WebhookAttempt, WebhookDelivery
from gateway.subscriptions import rules
from gateway.subscriptions.sealing import Sealer, new_secret

ATTEMPTS_SHOWN = 50


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
) -> Wanted:
    """The request as a subscription may hold it, or the 4xx that says why not (no I/O but none)."""
    rules.parse_target(url, allow_http=allow_http)
    checked_types = rules.check_event_types(event_types, audience)
    rules.check_districts(filters, audience)
    rules.check_fields(filters, checked_types)
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
    """The subscription and its delivery log (what is in flight is not recorded, and not retried)."""
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


async def replay(session: AsyncSession, subscription: Subscription, since: datetime) -> int:
    """Send again every message queued for the subscription since ``since`` (within retention),
    whatever became of it: due now, with its attempts counted afresh. How many were queued again."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.subscription_id == subscription.id,
            WebhookDelivery.created_at >= since,
            # One in flight is left to finish: it is sent, or retried, anyway.
            WebhookDelivery.state != "pending",
        )
        .values(state="pending", attempts=0, next_attempt_at=func.now(), last_error=None, delivered_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
            < (cursor_time(at), cursor_value(int, after))
        )
    found = list((await session.scalars(query)).all())
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], encode_cursor(last.created_at.isoformat(), last.id)


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
    sessions: Any, *, retention: timedelta, undelivered: timedelta, batch_size: int = 5000
) -> int:
    """Delete, a batch at a time, the messages past retention whose deliveries are all settled, and
    any past ``undelivered`` (their deliveries and attempts go with them)."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            text(
                """
                DELETE FROM webhook_messages WHERE event_id IN (
                    SELECT m.event_id FROM webhook_messages m
                    WHERE m.created_at < now() - make_interval(secs => :undelivered)
                       OR (m.created_at < now() - make_interval(secs => :retention)
                           AND NOT EXISTS (
                               SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = m.event_id AND d.state = 'pending'))
                    ORDER BY m.created_at
                    LIMIT :batch
                    FOR UPDATE SKIP LOCKED
                )
                """
            ),
            {
                "retention": retention.total_seconds(),
                "undelivered": undelivered.total_seconds(),
                "batch": batch_size,
            },
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
