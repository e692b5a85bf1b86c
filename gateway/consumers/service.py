"""The register of API consumers: create one with its first key, give it more keys (a key rotates
with overlap), change it, revoke a key or the whole consumer. Every change is audited and, when it
touches what a credential grants, noted in ``credential_changes`` for every replica, all in the
caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.errors import Conflict, InvalidInput, NotFound
from gateway import keys
from gateway.models import ApiConsumer, ConsumerAudit, ConsumerKey, CredentialChange

# What a consumer's credentials grant: a change to any of them ends the tokens issued before it.
GRANTS = ("scopes", "roles", "district", "unit", "rate_limit_per_minute", "daily_quota")
# Named in the audit by field only, never by value.
PERSONAL = frozenset({"contact_name", "contact_phone", "contact_email"})
# Keys a consumer may hold at once: enough to rotate, few enough that a leaked admin key cannot
# mint an unbounded number of them.
MAX_LIVE_KEYS = 5


class ConsumerExists(Conflict):
    code = "gateway.consumer_exists"


class ConsumerNotFound(NotFound):
    code = "gateway.consumer_not_found"


class KeyNotFound(NotFound):
    code = "gateway.key_not_found"


class TooManyKeys(Conflict):
    code = "gateway.too_many_keys"


class ConsumerRevoked(Conflict):
    code = "gateway.consumer_revoked"


class KeyExpiresInThePast(InvalidInput):
    code = "gateway.key_expires_in_the_past"


class InvalidChange(InvalidInput):
    code = "gateway.invalid_change"


async def consumers_page(session: AsyncSession, limit: int, after: uuid.UUID | None) -> list[ApiConsumer]:
    """One keyset page by id, one row beyond it."""
    query = select(ApiConsumer).order_by(ApiConsumer.id).limit(limit + 1)
    if after is not None:
        query = query.where(ApiConsumer.id > after)
    return list((await session.scalars(query)).all())


async def audit(
    session: AsyncSession, consumer_id: uuid.UUID, actor: str, action: str, detail: Mapping[str, Any]
) -> None:
    session.add(ConsumerAudit(consumer_id=consumer_id, actor=actor[:200], action=action, detail=dict(detail)))


KEY_REVOKED = "key_revoked"
CONSUMER_REVOKED = "consumer_revoked"
GRANTS_CHANGED = "grants_changed"


def note_change(
    session: AsyncSession, consumer_id: uuid.UUID, kind: str, key_prefix: str | None = None
) -> None:
    """Every replica forgets the key (or all of the consumer's, and refuses its tokens) within a
    second."""
    session.add(CredentialChange(consumer_id=consumer_id, key_prefix=key_prefix, kind=kind))


def _new_key(
    consumer_id: uuid.UUID, label: str | None, expires_at: datetime | None
) -> tuple[ConsumerKey, str]:
    issued = keys.issue_key()
    return (
        ConsumerKey(
            prefix=issued.prefix,
            consumer_id=consumer_id,
            key_hash=issued.digest,
            label=label,
            expires_at=expires_at,
        ),
        issued.plaintext,
    )


async def register_consumer(
    session: AsyncSession,
    *,
    name: str,
    scopes: Iterable[str],
    roles: Iterable[str] = (),
    district: str | None = None,
    unit: str | None = None,
    rate_limit_per_minute: int | None = None,
    daily_quota: int | None = None,
    kind: str = "system",
    contact_name: str | None = None,
    contact_phone: str | None = None,
    contact_email: str | None = None,
    plaintext_key: str | None = None,
    actor: str = "system",
) -> tuple[ApiConsumer, str]:
    """Create a consumer with its first key; returns it with the key (shown once). ``plaintext_key``
    pins a known key (the development stack's)."""
    if await session.scalar(select(ApiConsumer.id).where(ApiConsumer.name == name)) is not None:
        raise ConsumerExists(f"a consumer named {name!r} exists")
    consumer = ApiConsumer(
        name=name,
        kind=kind,
        scopes=sorted(set(scopes)),
        roles=sorted(set(roles)),
        district=district,
        unit=unit,
        rate_limit_per_minute=rate_limit_per_minute,
        daily_quota=daily_quota,
        contact_name=contact_name,
        contact_phone=contact_phone,
        contact_email=contact_email,
        active=True,
    )
    session.add(consumer)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Another registration of the same name committed in between.
        raise ConsumerExists(f"a consumer named {name!r} exists") from None
    if plaintext_key is None:
        key, plaintext = _new_key(consumer.id, "first", None)
    else:
        prefix = keys.prefix_of(plaintext_key)
        if prefix is None:
            raise ValueError("the pinned key is not in cgk_<12 hex>_<secret> form")
        key = ConsumerKey(
            prefix=prefix, consumer_id=consumer.id, key_hash=keys.digest_of(plaintext_key), label="first"
        )
        plaintext = plaintext_key
    session.add(key)
    await audit(
        session,
        consumer.id,
        actor,
        "created",
        {
            "name": name,
            "kind": kind,
            **{field: getattr(consumer, field) for field in GRANTS},
            "key": key.prefix,
            "personal": sorted(f for f in PERSONAL if getattr(consumer, f) is not None),
        },
    )
    await session.flush()
    return consumer, plaintext


async def consumer_of(session: AsyncSession, consumer_id: uuid.UUID, *, lock: bool = False) -> ApiConsumer:
    query = select(ApiConsumer).where(ApiConsumer.id == consumer_id)
    if lock:
        query = query.with_for_update()
    consumer = await session.scalar(query)
    if consumer is None:
        raise ConsumerNotFound(f"no consumer {consumer_id}")
    return consumer


async def add_key(
    session: AsyncSession,
    consumer_id: uuid.UUID,
    *,
    label: str | None,
    expires_at: datetime | None,
    actor: str,
) -> tuple[ConsumerKey, str]:
    """Another key for the consumer, beside those it holds: the old one is revoked once every system
    uses the new one."""
    consumer = await consumer_of(session, consumer_id, lock=True)
    if not consumer.active:
        raise ConsumerRevoked(f"consumer {consumer_id} is revoked")
    now = await session.scalar(select(func.now()))
    if expires_at is not None and now is not None and expires_at <= now:
        raise KeyExpiresInThePast("expires_at must be in the future")
    live = await session.scalar(
        select(func.count()).where(
            ConsumerKey.consumer_id == consumer_id,
            ConsumerKey.revoked_at.is_(None),
            (ConsumerKey.expires_at.is_(None)) | (ConsumerKey.expires_at > func.now()),
        )
    )
    if (live or 0) >= MAX_LIVE_KEYS:
        raise TooManyKeys(f"a consumer holds at most {MAX_LIVE_KEYS} live keys; revoke one first")
    key, plaintext = _new_key(consumer_id, label, expires_at)
    session.add(key)
    await audit(
        session,
        consumer_id,
        actor,
        "key_added",
        {"key": key.prefix, "label": label, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    await session.flush()
    return key, plaintext


async def keys_of(session: AsyncSession, consumer_id: uuid.UUID) -> list[ConsumerKey]:
    await consumer_of(session, consumer_id)
    found = await session.scalars(
        select(ConsumerKey)
        .where(ConsumerKey.consumer_id == consumer_id)
        .order_by(ConsumerKey.created_at, ConsumerKey.prefix)
        .limit(100)
    )
    return list(found.all())


async def revoke_key(
    session: AsyncSession, consumer_id: uuid.UUID, prefix: str, *, actor: str
) -> ConsumerKey:
    key = await session.scalar(
        select(ConsumerKey)
        .where(ConsumerKey.consumer_id == consumer_id, ConsumerKey.prefix == prefix)
        .with_for_update()
    )
    if key is None:
        raise KeyNotFound(f"consumer {consumer_id} has no key {prefix}")
    if key.revoked_at is None:
        key.revoked_at = await session.scalar(select(func.now()))
        note_change(session, consumer_id, KEY_REVOKED, prefix)
        await audit(session, consumer_id, actor, "key_revoked", {"key": prefix})
    return key


async def revoke_consumer(
    session: AsyncSession, consumer_id: uuid.UUID, *, actor: str = "system"
) -> ApiConsumer:
    """The consumer and every key and token of it, at once on every replica."""
    consumer = await consumer_of(session, consumer_id, lock=True)
    if consumer.active:
        consumer.active = False
        consumer.updated_at = await session.scalar(select(func.now())) or consumer.updated_at
        note_change(session, consumer_id, CONSUMER_REVOKED)
        await audit(session, consumer_id, actor, "revoked", {})
    return consumer


async def update_consumer(
    session: AsyncSession, consumer_id: uuid.UUID, changes: Mapping[str, Any], *, actor: str
) -> tuple[ApiConsumer, bool]:
    """Change what the consumer is granted or who its contact is. A change to a grant reaches every
    replica within a second, and its tokens issued before are refused: they carry the old grants."""
    consumer = await consumer_of(session, consumer_id, lock=True)
    if not consumer.active:
        raise ConsumerRevoked(f"consumer {consumer_id} is revoked")
    changed: dict[str, Any] = {}
    for field, value in changes.items():
        if field in ("scopes", "roles") and value is not None:
            value = sorted(set(value))
        if getattr(consumer, field) != value:
            setattr(consumer, field, value)
            changed[field] = "(changed)" if field in PERSONAL else value
    granted = any(field in GRANTS for field in changed)
    if changed:
        consumer.updated_at = await session.scalar(select(func.now())) or consumer.updated_at
        if granted:
            note_change(session, consumer_id, GRANTS_CHANGED)
        await audit(session, consumer_id, actor, "changed", changed)
    return consumer, granted


async def audit_of(
    session: AsyncSession, consumer_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[ConsumerAudit]:
    await consumer_of(session, consumer_id)
    query = select(ConsumerAudit).where(ConsumerAudit.consumer_id == consumer_id)
    if after is not None:
        query = query.where(tuple_(ConsumerAudit.at, ConsumerAudit.id) > after)
    found = await session.scalars(query.order_by(ConsumerAudit.at, ConsumerAudit.id).limit(limit + 1))
    return list(found.all())
