"""From JetStream to the delivery queue: one durable consumer per service stream.

Every gateway replica runs the same durables, so each event is read by one of them; the kit's inbox
makes it handled once even when redelivered. An event is matched against the subscriptions that name
its type (a GIN index on ``event_types``), their consumers as they stand now, and queued once per
subscription that takes it, in the transaction that records it in the inbox. A subscription receives
the events that happened after it was created; older ones only by a replay of what it was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import event as orm_event
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from citygrid.db import UnitOfWork
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerSpec
from citygrid.natsauth import Durable, NatsIdentity
from gateway.models import WebhookDelivery, WebhookMessage
from gateway.subscriptions import rules

DOMAINS: Final = ("case", "gas", "muck", "vision", "waste")


def durable_name(domain: str) -> str:
    return f"gateway-webhooks-{domain}"


# What the gateway does on NATS (citygrid.natsauth): read every service's stream through its
# webhook durables, publish nothing. A test keeps this equal to the running app's consumers.
NATS_IDENTITY: Final = NatsIdentity(
    user="gateway",
    consumes=tuple(Durable(domain, durable_name(domain), f"{domain}.>") for domain in DOMAINS),
)

_CANDIDATES = text(
    """
    SELECT s.id, s.filters, c.scopes, c.district
    FROM subscriptions s JOIN api_consumers c ON c.id = s.consumer_id
    WHERE s.event_types @> ARRAY[CAST(:event_type AS varchar)]
      AND c.active
      AND s.created_at <= :happened
    """
)


def subscribable(event: CloudEvent) -> bool:
    return rules.subject_of(event.type) in rules.SUBSCRIBABLE


def queue_handler(on_queued: Callable[[int], None]) -> Callable[[UnitOfWork, CloudEvent], Any]:
    """The handler of every webhook durable; ``on_queued`` hears how many deliveries an event
    queued, once they are committed."""

    async def queue(uow: UnitOfWork, event: CloudEvent) -> None:
        event_type = rules.subject_of(event.type)
        candidates = await uow.session.execute(
            _CANDIDATES, {"event_type": event_type, "happened": event.time}
        )
        takers = [
            row.id
            for row in candidates
            if rules.matches(
                event_type,
                event.data,
                rules.Filters.from_json(row.filters),
                rules.Audience(frozenset(row.scopes), row.district),
            )
        ]
        if not takers:
            return
        await uow.session.execute(
            insert(WebhookMessage)
            .values(event_id=event.id, type=event_type, event=event.model_dump(mode="json"))
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        queued = await uow.session.execute(
            insert(WebhookDelivery)
            .values([{"subscription_id": taker, "event_id": event.id} for taker in takers])
            .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
            .returning(WebhookDelivery.id)
        )
        count = len(queued.all())

        def committed(_session: Any) -> None:
            on_queued(count)

        orm_event.listen(uow.session.sync_session, "after_commit", committed, once=True)

    return queue


def consumer_specs(on_queued: Callable[[int], None]) -> list[ConsumerSpec]:
    handler = queue_handler(on_queued)
    return [
        ConsumerSpec(
            name=durable.name,
            domain=durable.domain,
            subject=durable.subject,
            handler=handler,
            wants=subscribable,
            batch_size=100,
        )
        for durable in NATS_IDENTITY.consumes
    ]
