"""The gateway's own admin API: register, list and revoke API consumers (scope ``admin``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from citygrid.auth import ADMIN_SCOPE, MissingScope, Principal, require_city_wide
from citygrid.clock import CityTime
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from citygrid.schemas import RequestModel
from gateway.consumers import register_consumer, revoke_consumer
from gateway.models import ApiConsumer

router = APIRouter(prefix="/admin/v1", tags=["gateway admin"])

Scope = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$", max_length=64)]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class NewConsumer(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    scopes: list[Scope] = Field(max_length=50)
    roles: list[Role] = Field(default_factory=list, max_length=20)
    district: Annotated[str, StringConstraints(pattern=r"^\d{6}$")] | None = None
    unit: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = (
        Field(default=None, description="The responsible unit whose cases this consumer's handlers work on.")
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class ConsumerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[str]
    roles: list[str]
    district: str | None
    unit: str | None
    rate_limit_per_minute: int | None
    active: bool
    created_at: CityTime


class IssuedConsumer(ConsumerOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")


async def require_admin(request: Request) -> Principal:
    """The caller, when it holds the scope ``admin`` for the whole city; counted against its limit."""
    state = request.app.state.gateway
    client = state.admit(request)
    principal: Principal
    principal, per_minute = await state.authenticate(request, client)
    if not principal.has_scope(ADMIN_SCOPE):
        raise MissingScope("this needs the scope 'admin'", required_scope=ADMIN_SCOPE)
    # A district's admin would otherwise mint itself a city-wide key, or revoke another district's.
    require_city_wide(principal, "the register of API consumers")
    state.count(principal.subject, per_minute)
    return principal


@router.post("/consumers", status_code=201, operation_id="register_consumer")
async def create_consumer(body: NewConsumer, request: Request, runtime: RuntimeDep) -> IssuedConsumer:
    await require_admin(request)
    async with runtime.uow() as uow:
        consumer, plaintext = await register_consumer(
            uow.session,
            name=body.name,
            scopes=body.scopes,
            roles=body.roles,
            district=body.district,
            unit=body.unit,
            rate_limit_per_minute=body.rate_limit_per_minute,
        )
        out = ConsumerOut.model_validate(consumer)
    return IssuedConsumer(**out.model_dump(), api_key=plaintext)


@router.get("/consumers", operation_id="list_consumers")
async def list_consumers(
    request: Request, runtime: RuntimeDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[ConsumerOut]:
    await require_admin(request)
    query = select(ApiConsumer).order_by(ApiConsumer.id).limit(limit + 1)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(ApiConsumer.id > cursor_value(uuid.UUID, after))
    async with runtime.db() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return Page[ConsumerOut](
        items=[ConsumerOut.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.post("/consumers/{consumer_id}/revoke", operation_id="revoke_consumer")
async def revoke(consumer_id: uuid.UUID, request: Request, runtime: RuntimeDep) -> ConsumerOut:
    await require_admin(request)
    async with runtime.uow() as uow:
        consumer = await revoke_consumer(uow.session, consumer_id)
        out = ConsumerOut.model_validate(consumer)
    request.app.state.gateway.authenticator.forget(consumer.key_prefix)
    return out
