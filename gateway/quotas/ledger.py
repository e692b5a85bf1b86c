"""One replica's part of every subject's quota, settled with the other replicas in ``quota_usage``.

A request is admitted from what this replica has *reserved* in memory: no database round trip per
request. The database holds, per subject and window, how much every replica together has reserved
(``used``). A replica reserves a block sized to the demand it sees (a couple of seconds' worth) and
gives back what it did not spend when the subject goes quiet, so every row says what may still be
handed out, and two replicas never hand out the same request: while the database can be reached, a
window admits no more than its limit, whatever the number of replicas. What it may admit less of is
what a replica that died was holding (at most its last block, until the window ends).

Settling is one transaction every ``sync_seconds`` for the subjects that need it (a block running
low, one to give back, a waiting request). A request that finds its block spent waits for the next
settlement (all that wait share it), which gives up after ``timeout_seconds``. A subject's first
request of each minute waits for one, since a block belongs to its window.

While the database cannot be reached (or a settlement gives up) a replica goes on from what it
holds and then admits at most what was left of the window when it last settled, divided by
``replicas``, on its own; those requests are added to the row once it can be written again. What a
replica gives back is gone from it as it is sent, whatever becomes of the settlement: a block is
never spent twice, at worst it is lost to the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.quotas.policies import (
    Allowance,
    Period,
    Standing,
    offline_share,
    reset_seconds,
    wanted,
    window_of,
)

log = logging.getLogger("gateway.quotas")

# A block not touched this long is given back; a subject still asking is re-read this often (what
# the others used shows in the headers); an exhausted window is asked again this often (another
# replica may have given some back).
IDLE_RETURN_SECONDS = 2.0
REFRESH_SECONDS = 5.0
EXHAUSTED_RECHECK_SECONDS = 1.0
FORGET_AFTER_SECONDS = 30.0
# A request that found its replica's block spent waits for at most this many settlements.
SETTLEMENTS_WAITED = 3
# What a refusal from the offline share tells the caller: the database may be back by then.
OFFLINE_RETRY_SECONDS = 5


@dataclass(eq=False)
class Entry:
    """This replica's standing in one subject's window."""

    subject: str
    period: Period
    starts: int
    ends: int
    limit: int
    granted: int = 0  # reserved for this replica so far in the window
    spent: int = 0  # of that, admitted
    offline: int = 0  # admitted while the ledger was unreachable, not yet added to the row
    offline_total: int = 0  # all those of the window (bounded by the offline share)
    used_seen: int = 0  # the row's ``used`` (every replica's reservations) at the last settlement
    exhausted: bool = False  # the last settlement found nothing left
    demand: int = 0  # requests since the last settlement, admitted or not
    waiting: int = 0  # requests waiting for a settlement to reserve for them
    settled_at: float = 0.0  # monotonic; 0: never
    stored: bool = False  # its row is known to exist

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.subject, self.period.value, self.starts)

    @property
    def allowance(self) -> int:
        return self.granted - self.spent

    def standing(self, moment: float, at_most: int | None = None) -> Standing:
        """``at_most``: what this replica will still admit alone (its offline share), when less."""
        left = self.limit - (self.used_seen - self.allowance + self.offline)
        if at_most is not None:
            left = min(left, at_most)
        return Standing(self.period, self.limit, left, reset_seconds(self.ends, moment))


class QuotaExceeded(Exception):
    """A window of the subject refuses the request (``entry``). ``reason``: ``spent`` (nothing is
    left of it until it ends), ``busy`` (others waiting took what the settlements brought: ask again
    at once) or ``offline`` (the ledger is away and this replica's share is spent)."""

    def __init__(self, entry: Entry, standings: tuple[Standing, ...], retry_after: int, reason: str) -> None:
        super().__init__(f"{entry.period} quota of {entry.limit}: {reason}")
        self.entry = entry
        self.standings = standings
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True)
class Settlement:
    """What one entry asks of the row: give back ``returned``, add ``consumed``, reserve up to ``want``."""

    entry: Entry
    returned: int
    consumed: int
    want: int
    demand: int  # the requests it was sized for (those that come while it is under way are not)


ENSURE = text(
    """
    INSERT INTO quota_usage (subject, period, starts, quota, used, last_grant)
    SELECT s, p, st, lim, 0, 0
    FROM unnest(CAST(:subjects AS text[]), CAST(:periods AS text[]), CAST(:starts AS bigint[]),
                CAST(:limits AS integer[])) AS t(s, p, st, lim)
    ORDER BY s, p, st
    ON CONFLICT (subject, period, starts) DO NOTHING
    """
)

# Every replica locks the rows it settles in one order: two settling at once never deadlock.
LOCK = text(
    """
    SELECT 1 FROM quota_usage
    WHERE (subject, period, starts) IN (
        SELECT * FROM unnest(CAST(:subjects AS text[]), CAST(:periods AS text[]), CAST(:starts AS bigint[])))
    ORDER BY subject, period, starts
    FOR UPDATE
    """
)

# ``granted`` in policies.py states the same arithmetic: at most half of what is left, at most the
# want. ``taken`` is the row's reservations once this replica's return and offline use are applied;
# both SET expressions read the row as it was (and as it is after a concurrent settlement committed).
SETTLE = text(
    """
    UPDATE quota_usage AS q
    SET last_grant = CASE
            WHEN t.lim - GREATEST(0, q.used - t.returned + t.consumed) <= 0 THEN 0
            ELSE LEAST(t.want, CEIL((t.lim - GREATEST(0, q.used - t.returned + t.consumed)) / 2.0)::integer)
        END,
        used = GREATEST(0, q.used - t.returned + t.consumed) + CASE
            WHEN t.lim - GREATEST(0, q.used - t.returned + t.consumed) <= 0 THEN 0
            ELSE LEAST(t.want, CEIL((t.lim - GREATEST(0, q.used - t.returned + t.consumed)) / 2.0)::integer)
        END,
        quota = t.lim
    FROM unnest(CAST(:subjects AS text[]), CAST(:periods AS text[]), CAST(:starts AS bigint[]),
                CAST(:limits AS integer[]), CAST(:wants AS integer[]), CAST(:returned AS integer[]),
                CAST(:consumed AS integer[])) AS t(s, p, st, lim, want, returned, consumed)
    WHERE q.subject = t.s AND q.period = t.p AND q.starts = t.st
    RETURNING q.subject, q.period, q.starts, q.last_grant, q.used
    """
)


async def settle(
    session: AsyncSession, settlements: list[Settlement], timeout_seconds: float = 2.0
) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Apply ``settlements`` in one transaction: for each row, what was granted and its ``used`` now.

    The server ends a statement that runs (or waits for a lock) longer than ``timeout_seconds``:
    the connection comes back clean, where a cancellation from this side could leave it mid-query."""
    milliseconds = str(max(1, int(timeout_seconds * 1000)))
    await session.execute(
        text("SELECT set_config('statement_timeout', :ms, true), set_config('lock_timeout', :ms, true)"),
        {"ms": milliseconds},
    )
    ordered = sorted(settlements, key=lambda s: s.entry.key)
    keys = {
        "subjects": [s.entry.subject for s in ordered],
        "periods": [s.entry.period.value for s in ordered],
        "starts": [s.entry.starts for s in ordered],
    }
    fresh = [s for s in ordered if not s.entry.stored]
    if fresh:
        await session.execute(
            ENSURE,
            {
                "subjects": [s.entry.subject for s in fresh],
                "periods": [s.entry.period.value for s in fresh],
                "starts": [s.entry.starts for s in fresh],
                "limits": [s.entry.limit for s in fresh],
            },
        )
    await session.execute(LOCK, keys)
    rows = await session.execute(
        SETTLE,
        keys
        | {
            "limits": [s.entry.limit for s in ordered],
            "wants": [s.want for s in ordered],
            "returned": [s.returned for s in ordered],
            "consumed": [s.consumed for s in ordered],
        },
    )
    return {(row.subject, row.period, row.starts): (row.last_grant, row.used) for row in rows}


class QuotaLedger:
    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        *,
        sync_seconds: float = 0.2,
        reserve_seconds: float = 2.0,
        minimum_reservation: int = 5,
        timeout_seconds: float = 2.0,
        replicas: int = 2,
        on_settle: Callable[[str, float], None] | None = None,
        on_offline_admit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.sync_seconds = sync_seconds
        self.reserve_seconds = reserve_seconds
        self.minimum_reservation = minimum_reservation
        self.timeout_seconds = timeout_seconds
        self.replicas = replicas
        self.on_settle = on_settle
        self.on_offline_admit = on_offline_admit
        self.clock = clock
        self.monotonic = monotonic
        self.reachable = True
        self._entries: dict[tuple[str, str, int], Entry] = {}
        self._waiters: list[asyncio.Future[bool]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._day = (0, 0)

    @property
    def settlement_deadline(self) -> float:
        """The longest a settlement may take: its three statements each bounded by the server's
        timeouts, and a second to connect. Past it the network hangs; waiters and ``stop`` wait it out."""
        return 3 * self.timeout_seconds + 1.0

    @property
    def windows(self) -> int:
        return len(self._entries)

    # --- the request path ------------------------------------------------------------------------

    async def admit(self, subject: str, allowance: Allowance) -> tuple[Standing, ...]:
        """Count one request of ``subject`` in each of its windows, or raise ``QuotaExceeded``."""
        moment = self.clock()
        entries = self._entries_of(subject, allowance, moment, [])
        rounds = 0
        while not all(entry.allowance > 0 for entry in entries):
            exhausted = [entry for entry in entries if entry.allowance <= 0 and entry.exhausted]
            if exhausted:
                # The window that ends last is the one to wait for (a spent day outlasts a minute).
                latest = max(exhausted, key=lambda entry: entry.ends)
                raise self._exceeded(latest, entries, moment, reset_seconds(latest.ends, moment), "spent")
            if rounds == SETTLEMENTS_WAITED:
                # Others waiting took what each settlement brought: this one may ask again at once.
                blocked = next(entry for entry in entries if entry.allowance <= 0)
                raise self._exceeded(blocked, entries, moment, 1, "busy")
            # While the database is away the settling loop keeps trying on its own: a request does
            # not add an attempt of its own.
            if not self.reachable:
                return self._admit_offline(entries, moment)
            for entry in entries:
                entry.waiting += 1
            try:
                reached = await self._next_settlement()
            finally:
                for entry in entries:
                    entry.waiting -= 1
            if not reached:
                return self._admit_offline(entries, moment)
            rounds += 1
            # A window may have ended meanwhile: count in the one the request is answered in.
            moment = self.clock()
            entries = self._entries_of(subject, allowance, moment, entries)
        for entry in entries:
            entry.spent += 1
        return tuple(entry.standing(moment) for entry in entries)

    def _entries_of(
        self, subject: str, allowance: Allowance, moment: float, seen: list[Entry]
    ) -> list[Entry]:
        entries = [self._entry(subject, period, limit, moment) for period, limit in allowance.policies()]
        for entry in entries:
            if not any(entry is other for other in seen):
                entry.demand += 1
        return entries

    def _admit_offline(self, entries: list[Entry], moment: float) -> tuple[Standing, ...]:
        for entry in entries:
            if entry.allowance <= 0 and entry.offline_total >= self._offline_share(entry):
                raise QuotaExceeded(
                    entry,
                    tuple(e.standing(moment, self._left_offline(e)) for e in entries),
                    OFFLINE_RETRY_SECONDS,
                    "offline",
                )
        for entry in entries:
            if entry.allowance > 0:
                entry.spent += 1
            else:
                entry.offline += 1
                entry.offline_total += 1
        if self.on_offline_admit is not None:
            self.on_offline_admit()
        return tuple(entry.standing(moment, self._left_offline(entry)) for entry in entries)

    def _left_offline(self, entry: Entry) -> int:
        """What this replica will still admit in the window while it counts alone."""
        return entry.allowance + max(0, self._offline_share(entry) - entry.offline_total)

    def _offline_share(self, entry: Entry) -> int:
        """What is left of the window as last seen, split among the replicas."""
        return offline_share(max(0, entry.limit - entry.used_seen), self.replicas)

    def _exceeded(
        self, entry: Entry, entries: list[Entry], moment: float, retry_after: int, reason: str
    ) -> QuotaExceeded:
        return QuotaExceeded(entry, tuple(e.standing(moment) for e in entries), retry_after, reason)

    def _entry(self, subject: str, period: Period, limit: int, moment: float) -> Entry:
        if period is Period.DAY:
            if not self._day[0] <= moment < self._day[1]:
                self._day = window_of(Period.DAY, moment)
            starts, ends = self._day
        else:
            starts, ends = window_of(period, moment)
        key = (subject, period.value, starts)
        entry = self._entries.get(key)
        if entry is None:
            entry = Entry(subject, period, starts, ends, limit)
            self._entries[key] = entry
        elif entry.limit != limit:
            entry.limit = limit  # its grant changed: the next settlement applies the new limit
            entry.exhausted = False
        return entry

    async def _next_settlement(self) -> bool:
        """Wait for the next settlement to start and end: whether it reached the database. One that
        has not ended within its own timeout (a rollback on a dead connection can hang) counts as not."""
        if self._stopped:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            return await asyncio.wait_for(
                asyncio.shield(waiter), self.settlement_deadline + self.sync_seconds
            )
        except TimeoutError:
            return False

    # --- settling --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-quota-ledger")

    async def stop(self) -> None:
        """Stop settling, then give back every block held (another replica may spend it at once).

        A settlement under way is let finish (within its timeout): cancelled in its COMMIT it would
        leave unknown whether what it gave back was given."""
        self._stopped = True
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), self.settlement_deadline + self.sync_seconds
                )
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        # Requests still waiting are answered from this replica's offline share.
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)
        held = [entry for entry in self._entries.values() if entry.allowance > 0 or entry.offline]
        if held:
            with contextlib.suppress(Exception):
                await self._settle([Settlement(e, e.allowance, e.offline, 0, e.demand) for e in held])

    async def _run(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_seconds)
            self._wake.clear()
            if self._stopped:
                return
            try:
                await self.settle_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("quota ledger: a settlement failed")

    async def settle_now(self) -> bool:
        """One settlement of every entry that needs one; wakes the requests waiting for it."""
        waiters, self._waiters = self._waiters, []
        reached = False
        try:
            due = self._due(self.clock(), self.monotonic())
            reached = await self._settle(due) if due else True
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(reached)
        return reached

    def _due(self, moment: float, now: float) -> list[Settlement]:
        due: list[Settlement] = []
        for key, entry in list(self._entries.items()):
            if entry.ends <= moment:
                del self._entries[key]  # its window is over: nothing held in it matters any more
                continue
            since = now - entry.settled_at
            # A window never settled has seen its demand in no time at all: rate it over the
            # refresh period, not since the epoch.
            rate = entry.demand / max(self.sync_seconds, min(since, REFRESH_SECONDS))
            asking = (entry.demand > 0 or entry.waiting > 0) and entry.allowance <= 0
            if entry.exhausted and asking and since < EXHAUSTED_RECHECK_SECONDS:
                continue
            running_low = entry.demand > 0 and entry.allowance < rate * 2 * self.sync_seconds
            idle_holding = entry.demand == 0 and entry.allowance > 0 and since >= IDLE_RETURN_SECONDS
            stale = entry.demand > 0 and since >= REFRESH_SECONDS
            if asking or running_low or idle_holding or stale or entry.offline:
                if entry.demand > 0 or entry.waiting > 0:
                    # Topped up to what the demand needs; the block keeps being spent meanwhile.
                    least = self.minimum_reservation + max(entry.demand, entry.waiting)
                    need = wanted(rate, self.reserve_seconds, least, entry.limit)
                    due.append(
                        Settlement(entry, 0, entry.offline, max(0, need - entry.allowance), entry.demand)
                    )
                else:
                    due.append(Settlement(entry, entry.allowance, entry.offline, 0, 0))
            elif not (entry.demand or entry.waiting or entry.allowance) and since >= FORGET_AFTER_SECONDS:
                del self._entries[key]
        return due

    async def _settle(self, due: list[Settlement]) -> bool:
        # What is given back is gone from here the moment it is sent, whatever becomes of the
        # settlement: one that fails in its COMMIT may have committed, and a block counted twice would
        # let its requests through twice. Lost, it only makes the window admit that much less.
        for settlement in due:
            settlement.entry.granted -= settlement.returned
        started = time.perf_counter()
        try:
            # The server's own timeouts end a slow settlement; this one only a network that hangs.
            async with asyncio.timeout(self.settlement_deadline):
                async with self.sessions()() as session, session.begin():
                    results = await settle(session, due, self.timeout_seconds)
        except Exception as error:
            if self.reachable:
                log.warning("quota ledger: the database cannot be reached (%s); admitting shares", error)
            self.reachable = False
            if self.on_settle is not None:
                self.on_settle("failed", time.perf_counter() - started)
            return False
        now = self.monotonic()
        for settlement in due:
            entry = settlement.entry
            grant, used = results.get(entry.key, (0, entry.used_seen))
            entry.stored = True
            entry.granted += grant
            entry.offline -= settlement.consumed
            entry.used_seen = used
            entry.exhausted = grant == 0 and settlement.want > 0 and entry.allowance <= 0
            entry.demand -= settlement.demand
            entry.settled_at = now
        if not self.reachable:
            log.info("quota ledger: the database is back")
        self.reachable = True
        if self.on_settle is not None:
            self.on_settle("ok", time.perf_counter() - started)
        return True


async def purge(
    sessions: async_sessionmaker[AsyncSession], *, older_than_seconds: int, batch: int = 5000
) -> int:
    """Delete the rows of windows that started more than ``older_than_seconds`` ago, a batch at a time."""
    cutoff = int(time.time()) - older_than_seconds
    async with sessions() as session, session.begin():
        result = await session.execute(
            text(
                """
                DELETE FROM quota_usage WHERE ctid = ANY (ARRAY(
                    SELECT ctid FROM quota_usage WHERE starts < :cutoff LIMIT :batch))
                """
            ),
            {"cutoff": cutoff, "batch": batch},
        )
    return int(getattr(result, "rowcount", 0) or 0)
