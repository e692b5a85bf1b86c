"""Every replica follows ``credential_changes``: each ``credential_poll_seconds`` it reads the rows
after the last it read and forgets what it cached of them, so a key or a consumer revoked on one
replica is refused by every other within about a second, without a database query per request.

Changes are read by the id of the transaction that wrote them, up to the oldest transaction still
running (the kit's horizon reader), so one that commits after a later one is not skipped.

A replica starting reads the changes of the last token lifetime too: an access token issued before
a revocation is refused by a replica that was not running when it happened. While the database is
away no change can be made, and none is read: the replica goes on with what it knows and catches up
from its last row when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.fleet.horizon import HorizonReader, horizon
from gateway.authn import Authenticator
from gateway.models import ConsumerAudit, CredentialChange

log = logging.getLogger("gateway.consumers")

BATCH = 1000


NEW_CHANGES = text(
    "SELECT id, at, consumer_id, key_prefix, kind, txid FROM credential_changes "
    "WHERE at >= :since AND txid >= :low AND txid < :high ORDER BY txid, id LIMIT :limit"
)
# Read again on every poll: a change committed behind a long transaction elsewhere (which holds the
# horizon back) still applies within a poll. Applying a change twice changes nothing.
TRAILING = timedelta(minutes=2)


class CredentialChanges:
    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        authenticator: Authenticator,
        *,
        every_seconds: float,
        token_lifetime: timedelta,
        retention: timedelta = timedelta(days=7),
        on_poll: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.authenticator = authenticator
        self.every_seconds = every_seconds
        self.token_lifetime = token_lifetime
        self.retention = retention
        self.on_poll = on_poll
        self.started = time.monotonic()
        # Read by the id of the transaction that wrote each change, up to the oldest one still
        # running: a change that commits after a later one (ids are drawn before commit) is not
        # skipped.
        self.reader = HorizonReader(NEW_CHANGES, BATCH)
        self.cursor: int | None = None
        self.last_read: float | None = None  # monotonic time of the last poll that succeeded

    def age(self) -> float:
        """Seconds since the changes were last read (since the start, before the first read)."""
        return time.monotonic() - (self.last_read if self.last_read is not None else self.started)

    async def start(self) -> None:
        """Where to read from: the changes of the last token lifetime are applied, later ones follow
        (the horizon is taken first, so a change committing meanwhile is read by the next poll)."""
        async with self.sessions()() as session:
            cursor = await horizon(session)
            since = func.now() - self.token_lifetime - timedelta(seconds=5)
            recent = (
                await session.execute(
                    select(CredentialChange).where(CredentialChange.at >= since).order_by(CredentialChange.id)
                )
            ).scalars()
            for change in recent:
                self._apply(change)
        self.cursor = cursor
        self.last_read = time.monotonic()

    async def poll(self) -> int:
        """Apply the changes since the last read; how many (a full batch: more wait)."""
        if self.cursor is None:
            await self.start()
            return 0
        async with self.sessions()() as session:
            now = (await session.execute(select(func.now()))).scalar_one()
            read = await self.reader.read(session, low=self.cursor, since=now - self.retention)
            trailing = (
                await session.scalars(select(CredentialChange).where(CredentialChange.at >= now - TRAILING))
            ).all()
        for change in [*read.rows, *trailing]:
            self._apply(change)
        self.last_read = time.monotonic()
        self.cursor = max(self.cursor, read.cursor)
        self.authenticator.prune_token_refusals(
            (now - self.token_lifetime - timedelta(seconds=5)).timestamp()
        )
        return BATCH if read.more else len(read.rows)

    def _apply(self, change: Any) -> None:
        subject = f"consumer:{change.consumer_id}"
        if change.key_prefix is not None:
            self.authenticator.revoke_key(change.key_prefix)
        else:
            self.authenticator.forget_consumer(
                subject, change.at.timestamp(), revoked=change.kind == "consumer_revoked"
            )

    async def run(self) -> None:
        """Poll for as long as the replica runs; a failed poll is logged and tried again."""
        while True:
            try:
                while True:
                    read = await self.poll()
                    if self.on_poll is not None:
                        self.on_poll("ok")
                    if read < BATCH:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.on_poll is not None:
                    self.on_poll("failed")
                log.warning("credential changes not read (%s); retrying", error)
            await asyncio.sleep(self.every_seconds)


async def purge(
    sessions: async_sessionmaker[AsyncSession], *, change_days: int, audit_days: int, batch: int = 5000
) -> int:
    """Changes older than ``change_days`` and audit records older than ``audit_days``, a batch each."""
    removed = 0
    async with sessions() as session, session.begin():
        for model, days in ((CredentialChange, change_days), (ConsumerAudit, audit_days)):
            old = (
                select(model.id)
                .where(model.at < func.now() - timedelta(days=days))
                .order_by(model.at)
                .limit(batch)
            )
            result = await session.execute(delete(model).where(model.id.in_(old.scalar_subquery())))
            removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return removed
