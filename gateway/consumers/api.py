"""The admin API of the consumers (scope ``admin``, city-wide): register one, change it, give it
keys and revoke them, revoke it, read its audit. Thin: each route is a call into ``service``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from citygrid.auth import Principal
from citygrid.clock import CityTime
from citygrid.masking import PII_SCOPE, mask_email, mask_name, mask_phone
from citygrid.pagination import (
    Cursor,
    Limit,
    Page,
    cursor_time,
    cursor_value,
    decode_cursor,
    encode_cursor,
)
from citygrid.problems import problem_responses
from citygrid.runtime import RuntimeDep
from citygrid.schemas import RequestModel
from contract.common import Phone
from gateway.admin import require_admin
from gateway.consumers import service
from gateway.models import ApiConsumer, ConsumerAudit, ConsumerKey

# What every admin call may answer besides its result: no admin credentials, not city-wide, an
# unknown consumer or key, a change that conflicts (a name taken, a revoked consumer), bad input.
router = APIRouter(
    prefix="/admin/v1",
    tags=["gateway admin"],
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429),
)

Scope = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$", max_length=64)]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
District = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PersonName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[A-Za-z]{2,}$", max_length=254),
]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
RateLimit = Annotated[int, Field(ge=1, le=1_000_000)]
DailyQuota = Annotated[int, Field(ge=1, le=1_000_000_000)]
KeyPrefix = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]


class ConsumerKind(StrEnum):
    DEPARTMENT = "department"  # a city department: police, housing, transport, market regulation …
    DISTRICT_CENTRE = "district_centre"  # a district's city-management centre
    VENDOR = "vendor"  # a vendor's platform (terminals, AI boxes, weighbridges)
    SYSTEM = "system"  # one of the city's own systems, an edge box


class NewConsumer(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: ConsumerKind = ConsumerKind.SYSTEM
    scopes: list[Scope] = Field(max_length=50)
    roles: list[Role] = Field(default_factory=list, max_length=20)
    district: District | None = None
    unit: Unit | None = Field(
        default=None, description="The responsible unit whose cases this consumer's handlers work on."
    )
    rate_limit_per_minute: RateLimit | None = Field(
        default=None, description="Requests per minute across every replica; None: the gateway's default."
    )
    daily_quota: DailyQuota | None = Field(
        default=None, description="Requests per city day across every replica; None: the gateway's default."
    )
    contact_name: PersonName | None = None
    contact_phone: Phone | None = None
    contact_email: Email | None = None


class ConsumerChange(RequestModel):
    """What to change; a field left out stays as it is, one given as null is cleared."""

    scopes: list[Scope] | None = Field(default=None, max_length=50)
    roles: list[Role] | None = Field(default=None, max_length=20)
    district: District | None = None
    unit: Unit | None = None
    rate_limit_per_minute: RateLimit | None = None
    daily_quota: DailyQuota | None = None
    contact_name: PersonName | None = None
    contact_phone: Phone | None = None
    contact_email: Email | None = None

    def changes(self) -> dict[str, Any]:
        given = {name: getattr(self, name) for name in self.model_fields_set}
        if given.get("scopes", []) is None or given.get("roles", []) is None:
            raise service.InvalidChange("scopes and roles are lists: give [] to clear them")
        return given


class ConsumerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    kind: ConsumerKind
    scopes: list[str]
    roles: list[str]
    district: str | None
    unit: str | None
    rate_limit_per_minute: int | None
    daily_quota: int | None
    contact_name: str | None
    contact_phone: str | None
    contact_email: str | None
    active: bool
    created_at: CityTime
    updated_at: CityTime


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    prefix: str
    label: str | None
    created_at: CityTime
    expires_at: CityTime | None
    revoked_at: CityTime | None


class IssuedConsumer(ConsumerOut):
    key_prefix: str
    api_key: str = Field(description="Shown once; only its hash is stored.")


class IssuedKey(KeyOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")


class NewKey(RequestModel):
    label: Label | None = None
    expires_at: AwareDatetime | None = Field(default=None, description="None: until revoked.")


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    at: CityTime
    actor: str
    action: str
    detail: dict[str, Any]


def consumer_out(consumer: ApiConsumer, principal: Principal) -> ConsumerOut:
    """The consumer as the caller may see it: its contact masked without ``pii:read``."""
    shown = ConsumerOut.model_validate(consumer)
    if not principal.has_scope(PII_SCOPE):
        shown.contact_name = mask_name(shown.contact_name)
        shown.contact_phone = mask_phone(shown.contact_phone)
        shown.contact_email = mask_email(shown.contact_email)
    return shown


@router.post("/consumers", status_code=201, operation_id="register_consumer")
async def create_consumer(body: NewConsumer, request: Request, runtime: RuntimeDep) -> IssuedConsumer:
    """Register a consumer with its first API key (shown once)."""
    principal = await require_admin(request)
    async with runtime.uow() as uow:
        consumer, plaintext = await service.register_consumer(
            uow.session,
            name=body.name,
            kind=body.kind.value,
            scopes=body.scopes,
            roles=body.roles,
            district=body.district,
            unit=body.unit,
            rate_limit_per_minute=body.rate_limit_per_minute,
            daily_quota=body.daily_quota,
            contact_name=body.contact_name,
            contact_phone=body.contact_phone,
            contact_email=body.contact_email,
            actor=principal.subject,
        )
        out = consumer_out(consumer, principal)
    prefix = plaintext.split("_")[1]
    return IssuedConsumer(**out.model_dump(), key_prefix=prefix, api_key=plaintext)


@router.get("/consumers", operation_id="list_consumers")
async def list_consumers(
    request: Request, runtime: RuntimeDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[ConsumerOut]:
    principal = await require_admin(request)
    async with runtime.db() as session:
        rows = await service.consumers_page(
            session, limit, cursor_value(uuid.UUID, decode_cursor(cursor, 1)[0]) if cursor else None
        )
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return Page[ConsumerOut](
        items=[consumer_out(row, principal) for row in rows[:limit]], next_cursor=next_cursor
    )


@router.get("/consumers/{consumer_id}", operation_id="get_consumer")
async def get_consumer(consumer_id: uuid.UUID, request: Request, runtime: RuntimeDep) -> ConsumerOut:
    principal = await require_admin(request)
    async with runtime.db() as session:
        consumer = await service.consumer_of(session, consumer_id)
    return consumer_out(consumer, principal)


@router.patch("/consumers/{consumer_id}", operation_id="change_consumer")
async def change_consumer(
    consumer_id: uuid.UUID, body: ConsumerChange, request: Request, runtime: RuntimeDep
) -> ConsumerOut:
    """Change what the consumer is granted or who its contact is. A changed grant holds on every
    replica within a second; the consumer's access tokens issued before are refused."""
    principal = await require_admin(request)
    async with runtime.uow() as uow:
        consumer, granted = await service.update_consumer(
            uow.session, consumer_id, body.changes(), actor=principal.subject
        )
        out = consumer_out(consumer, principal)
    if granted:
        request.app.state.gateway.authenticator.forget_consumer(
            f"consumer:{consumer_id}", consumer.updated_at.timestamp()
        )
    return out


@router.post("/consumers/{consumer_id}/revoke", operation_id="revoke_consumer")
async def revoke(consumer_id: uuid.UUID, request: Request, runtime: RuntimeDep) -> ConsumerOut:
    """Revoke the consumer, every key and every token of it, on every replica within a second."""
    principal = await require_admin(request)
    async with runtime.uow() as uow:
        consumer = await service.revoke_consumer(uow.session, consumer_id, actor=principal.subject)
        out = consumer_out(consumer, principal)
    request.app.state.gateway.authenticator.forget_consumer(
        f"consumer:{consumer_id}", consumer.updated_at.timestamp(), revoked=True
    )
    return out


@router.get("/consumers/{consumer_id}/keys", operation_id="list_consumer_keys")
async def list_keys(consumer_id: uuid.UUID, request: Request, runtime: RuntimeDep) -> list[KeyOut]:
    """The consumer's keys, oldest first, by prefix (never the key)."""
    await require_admin(request)
    async with runtime.db() as session:
        found = await service.keys_of(session, consumer_id)
    return [KeyOut.model_validate(key) for key in found]


@router.post("/consumers/{consumer_id}/keys", status_code=201, operation_id="add_consumer_key")
async def add_key(consumer_id: uuid.UUID, body: NewKey, request: Request, runtime: RuntimeDep) -> IssuedKey:
    """Another key beside the consumer's others (at most five live): move its systems to it, then
    revoke the old one."""
    principal = await require_admin(request)
    async with runtime.uow() as uow:
        key, plaintext = await service.add_key(
            uow.session, consumer_id, label=body.label, expires_at=body.expires_at, actor=principal.subject
        )
        out = KeyOut.model_validate(key)
    return IssuedKey(**out.model_dump(), api_key=plaintext)


@router.post("/consumers/{consumer_id}/keys/{prefix}/revoke", operation_id="revoke_consumer_key")
async def revoke_key(
    consumer_id: uuid.UUID, prefix: KeyPrefix, request: Request, runtime: RuntimeDep
) -> KeyOut:
    """Revoke one key, on every replica within a second; the consumer's other keys go on working."""
    principal = await require_admin(request)
    async with runtime.uow() as uow:
        key: ConsumerKey = await service.revoke_key(uow.session, consumer_id, prefix, actor=principal.subject)
        out = KeyOut.model_validate(key)
    request.app.state.gateway.authenticator.revoke_key(prefix)
    return out


@router.get("/consumers/{consumer_id}/audit", operation_id="consumer_audit")
async def consumer_audit(
    consumer_id: uuid.UUID, request: Request, runtime: RuntimeDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[AuditOut]:
    """Every change to the consumer, oldest first: who, when, what (personal fields by name only)."""
    await require_admin(request)
    after: tuple[datetime, uuid.UUID] | None = None
    if cursor:
        at, record = decode_cursor(cursor, 2)
        after = (cursor_time(at), cursor_value(uuid.UUID, record))
    async with runtime.db() as session:
        rows: list[ConsumerAudit] = await service.audit_of(session, consumer_id, limit, after)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.at.isoformat(), str(last.id))
    return Page[AuditOut](
        items=[AuditOut.model_validate(row) for row in rows[:limit]], next_cursor=next_cursor
    )
