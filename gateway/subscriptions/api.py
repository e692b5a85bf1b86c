"""``/exchange/v1/subscriptions``: a consumer's webhooks, for the consumer itself.

Only a registered consumer (an API key or a client-credentials token) holds subscriptions; each call
sees that consumer's own and is counted against its quota and recorded in the message log like any
exchange call. Thin: each route is a call into ``service``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from citygrid.auth import Principal
from citygrid.clock import within_range
from citygrid.errors import DomainError, Forbidden
from citygrid.pagination import Cursor, Limit, Page
from citygrid.problems import problem_responses
from citygrid.schemas import RequestModel
from contract.common import GUANGZHOU_DISTRICTS, CategoryCode, KnownDistrict
from gateway.models import Subscription, WebhookDelivery
from gateway.subscriptions import rules, service

T = TypeVar("T")

router = APIRouter(
    prefix="/exchange/v1/subscriptions",
    tags=["exchange subscriptions"],
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429),
)


def _subscribable(event_type: str) -> str:
    if event_type not in rules.SUBSCRIBABLE:
        raise ValueError(f"{event_type!r} is not an event type of the catalogue")
    return event_type


District = Annotated[KnownDistrict, Field(json_schema_extra={"enum": sorted(GUANGZHOU_DISTRICTS)})]
EventType = Annotated[
    str, Field(json_schema_extra={"enum": sorted(rules.SUBSCRIBABLE)}), AfterValidator(_subscribable)
]
FieldPath = Annotated[
    str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*){0,4}$", max_length=200)
]
FilterValue = (
    Annotated[str, StringConstraints(max_length=200)]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=2000)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class FiltersIn(RequestModel):
    """Every filter given must hold for an event to be sent; an empty one lets every event through."""

    districts: list[District] = Field(default_factory=list, max_length=len(GUANGZHOU_DISTRICTS))
    categories: list[CategoryCode] = Field(default_factory=list, max_length=rules.MAX_FILTER_VALUES)
    fields: dict[
        FieldPath, Annotated[list[FilterValue], Field(min_length=1, max_length=rules.MAX_FILTER_VALUES)]
    ] = Field(
        default_factory=dict,
        max_length=rules.MAX_FIELD_FILTERS,
        description="A field of the event's data (a dotted path) and the values it may have.",
        examples=[{"status": ["dispatched", "handled"]}],
    )

    def to_rules(self) -> rules.Filters:
        return rules.Filters(
            districts=frozenset(self.districts),
            categories=frozenset(self.categories),
            fields={path: tuple(values) for path, values in self.fields.items()},
        )


class NewSubscription(RequestModel):
    url: Url = Field(description="Where to POST each event: https:// (http:// outside production).")
    event_types: list[EventType] = Field(min_length=1, max_length=len(rules.SUBSCRIBABLE))
    filters: FiltersIn = Field(default_factory=FiltersIn)
    description: Description | None = None


class SubscriptionChange(RequestModel):
    url: Url | None = None
    event_types: list[EventType] | None = Field(
        default=None, min_length=1, max_length=len(rules.SUBSCRIBABLE)
    )
    filters: FiltersIn | None = None
    description: Description | None = None


class State(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"


class FiltersOut(BaseModel):
    districts: list[str]
    categories: list[str]
    fields: dict[str, list[str | int | float | bool]]


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    event_types: list[str]
    filters: FiltersOut
    description: str | None
    state: State
    paused_reason: str | None = Field(description="Why it is paused: 'failing' after repeated failures.")
    failures: int = Field(description="Attempts that failed in a row.")
    retry_at: AwareDatetime | None = Field(description="Nothing is sent before this (backing off).")
    previous_secret_until: AwareDatetime | None = Field(
        description="The secret before the last rotation signs beside the new one until then."
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime


class IssuedSubscription(SubscriptionOut):
    secret: str = Field(description="The signing secret (Standard Webhooks, whsec_…), shown this once.")


class Replay(RequestModel):
    since: Annotated[AwareDatetime, AfterValidator(within_range)] = Field(
        description="Every message queued for it since then is sent again."
    )


class Replayed(BaseModel):
    queued: int = Field(description="Settled messages queued to be sent again (at most 10,000 a call).")
    continue_from: AwareDatetime | None = Field(
        description="Set when more remain: replay again with this as since for the rest."
    )


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: AwareDatetime
    status: int | None = Field(description="The receiver's HTTP status; None: no answer (see error).")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: str = Field(description="The event's id, sent as webhook-id.")
    state: DeliveryState
    attempts: int
    next_attempt_at: AwareDatetime | None = Field(description="When it is tried next, while pending.")
    last_status: int | None
    last_error: str | None
    created_at: AwareDatetime
    delivered_at: AwareDatetime | None


class DeliveryDetail(DeliveryOut):
    recent_attempts: list[AttemptOut] = Field(description="The latest attempts, newest first (at most 50).")


def subscription_out(subscription: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=subscription.id,
        url=subscription.url,
        event_types=list(subscription.event_types),
        filters=FiltersOut.model_validate(rules.Filters.from_json(subscription.filters).to_json()),
        description=subscription.description,
        state=State(subscription.state),
        paused_reason=subscription.paused_reason,
        failures=subscription.failures,
        retry_at=subscription.retry_at,
        previous_secret_until=subscription.previous_until,
        created_at=subscription.created_at,
        updated_at=subscription.updated_at,
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    out = DeliveryOut.model_validate(delivery)
    return out if delivery.state == "pending" else out.model_copy(update={"next_attempt_at": None})


class NotAConsumer(Forbidden):
    code = "subscription.not_a_consumer"


def _consumer_id(principal: Principal) -> uuid.UUID:
    kind, _, identifier = principal.subject.partition(":")
    if kind != "consumer":
        raise NotAConsumer("webhook subscriptions belong to registered consumers (an API key or its token)")
    return uuid.UUID(identifier)


async def _as_consumer(
    request: Request,
    response: Response,
    work: Callable[[Any, Principal, uuid.UUID], Awaitable[T]],
    success: int = 200,
) -> T:
    """Authenticate, count and record the call, and run ``work`` for the calling consumer."""
    state = request.app.state.gateway
    client = state.admit(request)
    principal, allowance = await state.authenticate(request, client)
    request.state.principal = principal
    started = time.perf_counter()
    status = 500
    try:
        consumer_id = _consumer_id(principal)
        response.headers.update(await state.count(principal.subject, allowance))
        result = await work(request.app.state.kit, principal, consumer_id)
        status = success
        return result
    except DomainError as error:
        status = error.status
        raise
    finally:
        state.record_call(
            request,
            service="gateway",
            path=request.url.path,
            principal=principal,
            status=status,
            started=started,
            dataset="subscriptions",
        )


def _audience(principal: Principal) -> rules.Audience:
    return rules.Audience(frozenset(principal.scopes), principal.district)


def _allow_http(request: Request) -> bool:
    return bool(request.app.state.webhooks.policy.allow_http)


async def _reachable(request: Request, url: str) -> None:
    """The target resolves, now, to addresses this deployment may send to (checked again per send)."""
    policy = request.app.state.webhooks.policy
    target = rules.parse_target(url, allow_http=policy.allow_http, ports=policy.ports)
    try:
        found = await request.app.state.webhooks.resolver(target.host, target.port)
    except (OSError, UnicodeError, ValueError):
        raise rules.TargetRefused(f"{target.host} does not resolve") from None
    rules.check_addresses(target.host, found, allow_private=policy.allow_private)


@router.post("", status_code=201, operation_id="create_subscription")
async def create_subscription(
    body: NewSubscription, request: Request, response: Response
) -> IssuedSubscription:
    """Register a webhook for event types (with filters); its signing secret is shown once."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> IssuedSubscription:
        settings = request.app.state.gateway.settings
        wanted = service.check(
            url=body.url,
            event_types=body.event_types,
            filters=body.filters.to_rules(),
            description=body.description,
            audience=_audience(principal),
            allow_http=_allow_http(request),
            ports=request.app.state.webhooks.policy.ports,
        )
        await _reachable(request, wanted.url)
        async with kit.uow() as uow:
            subscription, secret = await service.create(
                uow.session,
                consumer_id,
                wanted,
                sealer=request.app.state.webhooks.sealer,
                limit=settings.webhook_subscriptions_per_consumer,
            )
            out = subscription_out(subscription)
        return IssuedSubscription(**out.model_dump(), secret=secret)

    return await _as_consumer(request, response, work, success=201)


@router.get("", operation_id="list_subscriptions")
async def list_subscriptions(
    request: Request, response: Response, limit: Limit = 50, cursor: Cursor = None
) -> Page[SubscriptionOut]:
    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> Page[SubscriptionOut]:
        async with kit.db() as session:
            found, next_cursor = await service.page(session, consumer_id, limit, cursor)
        return Page[SubscriptionOut](items=[subscription_out(row) for row in found], next_cursor=next_cursor)

    return await _as_consumer(request, response, work)


@router.get("/{subscription_id}", operation_id="get_subscription")
async def get_subscription(
    subscription_id: uuid.UUID, request: Request, response: Response
) -> SubscriptionOut:
    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> SubscriptionOut:
        async with kit.db() as session:
            return subscription_out(await service.subscription_of(session, consumer_id, subscription_id))

    return await _as_consumer(request, response, work)


@router.patch("/{subscription_id}", operation_id="change_subscription")
async def change_subscription(
    subscription_id: uuid.UUID, body: SubscriptionChange, request: Request, response: Response
) -> SubscriptionOut:
    """Change where it goes, what it takes or its filters; checked as a new one is."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> SubscriptionOut:
        async with kit.uow() as uow:
            current = await service.subscription_of(uow.session, consumer_id, subscription_id, lock=True)
            stored = rules.Filters.from_json(current.filters)
            wanted = service.check(
                url=body.url if body.url is not None else current.url,
                event_types=body.event_types if body.event_types is not None else current.event_types,
                filters=body.filters.to_rules() if body.filters is not None else stored,
                description=body.description
                if "description" in body.model_fields_set
                else current.description,
                audience=_audience(principal),
                allow_http=_allow_http(request),
                ports=request.app.state.webhooks.policy.ports,
            )
            if wanted.url != current.url:
                await _reachable(request, wanted.url)
            return subscription_out(await service.change(uow.session, current, wanted))

    return await _as_consumer(request, response, work)


@router.delete("/{subscription_id}", status_code=204, operation_id="delete_subscription")
async def delete_subscription(subscription_id: uuid.UUID, request: Request, response: Response) -> Response:
    """Delete it and its delivery log."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> None:
        async with kit.uow() as uow:
            await service.remove(
                uow.session, await service.subscription_of(uow.session, consumer_id, subscription_id)
            )

    await _as_consumer(request, response, work, success=204)
    return Response(status_code=204, headers=dict(response.headers))


def _state_change(
    subscription_id: uuid.UUID,
    request: Request,
    response: Response,
    change: Callable[[Any, Subscription], Awaitable[Subscription]],
) -> Awaitable[SubscriptionOut]:
    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> SubscriptionOut:
        async with kit.uow() as uow:
            current = await service.subscription_of(uow.session, consumer_id, subscription_id, lock=True)
            return subscription_out(await change(uow.session, current))

    return _as_consumer(request, response, work)


@router.post("/{subscription_id}/pause", operation_id="pause_subscription")
async def pause_subscription(
    subscription_id: uuid.UUID, request: Request, response: Response
) -> SubscriptionOut:
    """Stop sending; matching events are still queued and sent on resume."""
    return await _state_change(subscription_id, request, response, service.pause)


@router.post("/{subscription_id}/resume", operation_id="resume_subscription")
async def resume_subscription(
    subscription_id: uuid.UUID, request: Request, response: Response
) -> SubscriptionOut:
    """Send again, its failures forgotten (after an automatic pause too): what is queued goes at once."""
    return await _state_change(subscription_id, request, response, service.resume)


@router.post("/{subscription_id}/secret/rotate", operation_id="rotate_subscription_secret")
async def rotate_secret(
    subscription_id: uuid.UUID, request: Request, response: Response
) -> IssuedSubscription:
    """A new signing secret (shown once); the one before signs beside it for the overlap
    (``webhook-signature`` then carries both)."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> IssuedSubscription:
        settings = request.app.state.gateway.settings
        async with kit.uow() as uow:
            current = await service.subscription_of(uow.session, consumer_id, subscription_id, lock=True)
            rotated, secret = await service.rotate_secret(
                uow.session,
                current,
                sealer=request.app.state.webhooks.sealer,
                overlap=timedelta(seconds=settings.webhook_secret_overlap_seconds),
            )
            out = subscription_out(rotated)
        return IssuedSubscription(**out.model_dump(), secret=secret)

    return await _as_consumer(request, response, work)


@router.post("/{subscription_id}/replay", status_code=202, operation_id="replay_subscription")
async def replay(subscription_id: uuid.UUID, body: Replay, request: Request, response: Response) -> Replayed:
    """Send again every message queued for it since a point in time (kept for
    ``CITYGRID_WEBHOOK_RETENTION_DAYS``), delivered or not."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> Replayed:
        async with kit.uow() as uow:
            current = await service.subscription_of(uow.session, consumer_id, subscription_id, lock=True)
            replayed = await service.replay(uow.session, current, body.since)
        request.app.state.webhooks.deliverer.wake()
        return Replayed(queued=replayed.queued, continue_from=replayed.continue_from)

    return await _as_consumer(request, response, work, success=202)


@router.get("/{subscription_id}/deliveries", operation_id="list_subscription_deliveries")
async def list_deliveries(
    subscription_id: uuid.UUID,
    request: Request,
    response: Response,
    state: DeliveryState | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DeliveryOut]:
    """The delivery log, newest first."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> Page[DeliveryOut]:
        async with kit.db() as session:
            current = await service.subscription_of(session, consumer_id, subscription_id)
            found, next_cursor = await service.deliveries_page(
                session, current, state=state.value if state else None, limit=limit, cursor=cursor
            )
        return Page[DeliveryOut](items=[delivery_out(row) for row in found], next_cursor=next_cursor)

    return await _as_consumer(request, response, work)


@router.get("/{subscription_id}/deliveries/{delivery_id}", operation_id="get_subscription_delivery")
async def get_delivery(
    subscription_id: uuid.UUID, delivery_id: DeliveryId, request: Request, response: Response
) -> DeliveryDetail:
    """One delivery and its latest attempts."""

    async def work(kit: Any, principal: Principal, consumer_id: uuid.UUID) -> DeliveryDetail:
        async with kit.db() as session:
            current = await service.subscription_of(session, consumer_id, subscription_id)
            delivery, attempts = await service.delivery_of(session, current, delivery_id)
        return DeliveryDetail(
            **delivery_out(delivery).model_dump(),
            recent_attempts=[AttemptOut.model_validate(attempt) for attempt in attempts],
        )

    return await _as_consumer(request, response, work)
