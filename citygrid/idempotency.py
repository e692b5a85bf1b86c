"""``Idempotency-Key`` on creation endpoints: a replay returns the first response.

The key is scoped to the principal, fingerprinted with the request, and stored in the same
transaction as the creation it answers. A transaction-level advisory lock on the key makes a
concurrent retry wait for the first request and then replay its answer instead of creating twice.

Keys are kept ``kit_retention_days`` (30 by default) after their creation, then deleted by the kit's
retention job (``citygrid.retention``, through ``ix_idempotency_keys_created_at``): a client retries
with the same key within that window or sends a new one.
"""

from __future__ import annotations

import hashlib
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
        return JSONResponse(stored.body, status_code=stored.status_code, headers={REPLAY_HEADER: "true"})

    async def remember(self, session: AsyncSession, status_code: int, body: Any) -> None:
        if self.key is None:
            return
        session.add(
            StoredResponse(
                principal=self.principal,
                key=self.key,
                fingerprint=self.fingerprint,
                status_code=status_code,
                body=body,
            )
        )
        await session.flush()
