"""``Idempotency-Key`` on creation endpoints: a replay returns the first response.

The key is scoped to the principal, fingerprinted with the request, and stored in the same
transaction as the creation it answers. A transaction-level advisory lock on the key makes a
concurrent retry wait for the first request and then replay its answer instead of creating twice.

A replay is the first response as the client would have seen it: status, body and the headers a
client goes on with (``ETag`` for its next ``If-Match``, ``Location``, the content type; see
``REPLAYED_HEADERS``), plus ``Idempotent-Replayed: true`` and the key it answers. So the caller
sets those headers *before* ``remember(…, headers=response.headers)``, inside the transaction.
Keys stored before the headers were (kit table version 2, ``upgrade_idempotency_v2``) replay
without them.

Keys are kept ``kit_retention_days`` (30 by default) after their creation, then deleted by the kit's
retention job (``citygrid.retention``, through ``ix_idempotency_keys_created_at``): a client retries
with the same key within that window or sends a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import DateTime, Integer, String, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from citygrid.db import KitBase
from citygrid.errors import DomainError

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
# The response headers a replay repeats, lower case: what a client continues with. Nothing
# per-response (Date, X-Request-ID, rate-limit counters) and nothing set by middleware.
REPLAYED_HEADERS = frozenset({"etag", "location", "content-location", "content-type", "last-modified"})


class IdempotencyKeyReused(DomainError):
    code = "idempotency.key_reused"
    status = 422
    title = "Idempotency key reused"


class InvalidIdempotencyKey(DomainError):
    code = "idempotency.invalid_key"
    status = 400
    title = "Invalid idempotency key"


class StoredResponse(KitBase):
    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[Any] = mapped_column(JSONB)
    # The replayed headers (``REPLAYED_HEADERS``), names in lower case; NULL for rows stored before.
    headers: Mapped[dict[str, str] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class Idempotency:
    """Per-request helper: ``replay()`` before creating, ``remember()`` in the same transaction."""

    def __init__(self, *, key: str | None, principal: str, fingerprint: str) -> None:
        self.key = key
        self.principal = principal
        self.fingerprint = fingerprint

    @classmethod
    async def from_request(cls, request: Request, principal: str) -> Idempotency:
        key = request.headers.get(HEADER)
        if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
            raise InvalidIdempotencyKey("Idempotency-Key must be 1–200 printable characters")
        body = await request.body()
        digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + body).hexdigest()
        return cls(key=key, principal=principal, fingerprint=digest)

    async def replay(self, session: AsyncSession) -> JSONResponse | None:
        if self.key is None:
            return None
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:lock_key, 0))"),
            {"lock_key": f"idempotency:{self.principal}:{self.key}"},
        )
        stored = await session.scalar(
            select(StoredResponse).where(
                StoredResponse.principal == self.principal, StoredResponse.key == self.key
            )
        )
        if stored is None:
            return None
        if stored.fingerprint != self.fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        headers = dict(stored.headers or {})
        media_type = headers.pop("content-type", None)
        return JSONResponse(
            stored.body,
            status_code=stored.status_code,
            media_type=media_type,
            headers={**headers, REPLAY_HEADER: "true", HEADER: self.key},
        )

    async def remember(
        self, session: AsyncSession, status_code: int, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Store the response in the caller's transaction: ``headers`` are the response's as sent
        (e.g. FastAPI's ``response.headers``), of which ``REPLAYED_HEADERS`` are kept."""
        if self.key is None:
            return
        kept = {
            name.lower(): value for name, value in (headers or {}).items() if name.lower() in REPLAYED_HEADERS
        }
        session.add(
            StoredResponse(
                principal=self.principal,
                key=self.key,
                fingerprint=self.fingerprint,
                status_code=status_code,
                body=body,
                headers=kept,
            )
        )
        await session.flush()


def upgrade_idempotency_v2() -> None:
    """Version 2 of the kit's ``idempotency_keys``: the replayed headers. A nullable column with no
    default: PostgreSQL records it in the catalogue without rewriting the table, whatever its size.

    Called from each service's migration of that name (Alembic context only). A short lock timeout
    makes the migration fail fast, to be retried, rather than queue every request behind it while
    a long transaction holds the table.
    """
    import sqlalchemy as sa
    from alembic import op

    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("idempotency_keys", sa.Column("headers", JSONB(), nullable=True))
    op.execute("SET LOCAL lock_timeout TO DEFAULT")


def downgrade_idempotency_v2() -> None:
    from alembic import op

    op.drop_column("idempotency_keys", "headers")
