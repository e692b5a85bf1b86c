"""Group commit of positions: reports from every connection and request of this replica gathered into
one COPY per ``max_wait`` (or ``max_rows``), each caller answered once its rows are committed.

A terminal's report is acknowledged only after this returns, so nothing acknowledged is lost; when the
database is down every waiting caller gets the error (the terminal is answered FAILURE and sends the
report again). What waits is bounded (``max_pending`` rows): beyond it a caller is refused at once,
so a slow database cannot grow a replica's memory without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.errors import DomainError

log = logging.getLogger("citygrid.fleet")


class IntakeOverloaded(DomainError):
    code = "fleet.intake_overloaded"
    status = 503
    title = "Position intake overloaded"


class StoreUnavailable(DomainError):
    code = "fleet.store_unavailable"
    status = 503
    title = "Position store unavailable"


class PositionsUnstorable(DomainError):
    code = "fleet.positions_unstorable"
    status = 422
    title = "Positions the store refused"


# What a row can make the store refuse (a value out of a column's range, a key twice): only the
# caller whose rows they are is refused, the batch's others are written without them.
DATA_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    OverflowError,
    ValueError,
    TypeError,
)
COPY_TIMEOUT = 30.0


@dataclass
class _Waiting:
    rows: Sequence[tuple[Any, ...]]
    done: asyncio.Future[None]


@dataclass
class PositionWriter:
    # The database's sessions, once the runtime has started.
    sessions: Callable[[], async_sessionmaker[AsyncSession]]
    # The service's positions table and its columns (``reports.ROW_ORDER``).
    table: str
    columns: Sequence[str]
    max_rows: int = 5_000
    max_wait: float = 0.05
    max_pending: int = 200_000
    # Called with each committed batch (the latest positions, the metrics).
    on_committed: Callable[[Sequence[tuple[Any, ...]], float], Awaitable[None]] | None = None
    _waiting: deque[_Waiting] = field(default_factory=deque)
    _pending_rows: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Return once ``rows`` are committed; raise what the store raised, or IntakeOverloaded."""
        if not rows:
            return
        if self._pending_rows + len(rows) > self.max_pending:
            raise IntakeOverloaded(
                f"{self._pending_rows} positions are waiting to be stored; send again shortly",
                headers={"Retry-After": "1"},
            )
        waiting = _Waiting(rows, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._pending_rows += len(rows)
        self._wake.set()
        # A caller that goes away cancels only its wait: its rows are written with the batch.
        await waiting.done

    async def run(self) -> None:
        """Write batches for as long as the process lives; no error ends it (a caller would then
        wait for ever), each is its batch's callers' answer."""
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("position writer round failed")
                await asyncio.sleep(self.max_wait)

    async def _round(self) -> None:
        await self._wake.wait()
        self._wake.clear()
        # Let the batch fill a little: one COPY of many reports costs little more than one of a few,
        # and what arrives while a batch is being written waits for the next.
        if self._pending_rows < self.max_rows:
            await asyncio.sleep(self.max_wait)
        while self._waiting:
            await self._flush()

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        rows = 0
        while self._waiting and (not batch or rows + len(self._waiting[0].rows) <= self.max_rows):
            waiting = self._waiting.popleft()
            batch.append(waiting)
            rows += len(waiting.rows)
        return batch

    async def _flush(self) -> None:
        batch = self._take()
        records = [row for waiting in batch for row in waiting.rows]
        started = time.perf_counter()
        try:
            try:
                await self._copy(records)
                stored = batch
            except DATA_ERRORS:
                if len(batch) == 1:
                    raise
                stored = await self._one_by_one(batch)
        except Exception as error:
            self._pending_rows -= len(records)
            log.warning("could not store %d positions: %s", len(records), error)
            for waiting in batch:
                _answer(waiting, error)
            return
        self._pending_rows -= len(records)
        for waiting in stored:
            _answer(waiting, None)
        if self.on_committed is not None:
            try:
                await self.on_committed(
                    [row for waiting in stored for row in waiting.rows], time.perf_counter() - started
                )
            except Exception:
                log.exception("after storing %d positions", len(records))

    async def _copy(self, records: Sequence[tuple[Any, ...]]) -> None:
        await copy_positions(self.sessions(), self.table, self.columns, records)

    async def _one_by_one(self, batch: list[_Waiting]) -> list[_Waiting]:
        """Each caller's rows on their own: those the store refuses fail only their caller."""
        stored = []
        for waiting in batch:
            try:
                await self._copy(waiting.rows)
            except DATA_ERRORS as error:
                log.warning("%d positions refused by the store: %s", len(waiting.rows), error)
                _answer(waiting, PositionsUnstorable(f"the store refused these positions: {error}"))
            else:
                stored.append(waiting)
        return stored


def _answer(waiting: _Waiting, error: BaseException | None) -> None:
    if waiting.done.done():
        return
    if error is None:
        waiting.done.set_result(None)
    else:
        waiting.done.set_exception(error)
        # A caller that went away never reads it; nothing to report then.
        waiting.done.add_done_callback(lambda done: done.exception())


async def copy_positions(
    sessions: async_sessionmaker[AsyncSession],
    table: str,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
) -> None:
    """One transaction, one COPY: PostgreSQL routes each row to its day's partition."""
    async with sessions() as session, session.begin():
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.copy_records_to_table(
            table, records=records, columns=list(columns), timeout=COPY_TIMEOUT
        )
