"""Registering API consumers: issue a key once, keep only its hash."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.errors import Conflict, NotFound
from gateway import keys
from gateway.models import ApiConsumer


class ConsumerExists(Conflict):
    code = "gateway.consumer_exists"


class ConsumerNotFound(NotFound):
    code = "gateway.consumer_not_found"


async def register_consumer(
    session: AsyncSession,
    *,
    name: str,
    scopes: Iterable[str],
    roles: Iterable[str] = (),
    district: str | None = None,
    unit: str | None = None,
    rate_limit_per_minute: int | None = None,
    plaintext_key: str | None = None,
) -> tuple[ApiConsumer, str]:
    """Create a consumer and return it with its key (shown once). ``plaintext_key`` pins a known key."""
    if await session.scalar(select(ApiConsumer.id).where(ApiConsumer.name == name)) is not None:
        raise ConsumerExists(f"a consumer named {name!r} exists")
    if plaintext_key is None:
        issued = keys.issue_key()
        plaintext, prefix, digest = issued.plaintext, issued.prefix, issued.digest
    else:
        found = keys.prefix_of(plaintext_key)
        if found is None:
            raise ValueError("the pinned key is not in cgk_<12 hex>_<secret> form")
        plaintext, prefix, digest = plaintext_key, found, keys.digest_of(plaintext_key)
    consumer = ApiConsumer(
        name=name,
        key_prefix=prefix,
        key_hash=digest,
        scopes=sorted(set(scopes)),
        roles=sorted(set(roles)),
        district=district,
        unit=unit,
        rate_limit_per_minute=rate_limit_per_minute,
        active=True,
    )
    session.add(consumer)
    await session.flush()
    return consumer, plaintext


async def revoke_consumer(session: AsyncSession, consumer_id: uuid.UUID) -> ApiConsumer:
    consumer = await session.get(ApiConsumer, consumer_id)
    if consumer is None:
        raise ConsumerNotFound(f"no consumer {consumer_id}")
    consumer.active = False
    return consumer
