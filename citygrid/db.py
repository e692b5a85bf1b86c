"""Database plumbing: naming convention, engines and session factories, the unit of work, and the
time limits every connection runs under.

The unit of work is the only commit point of a service: HTTP handlers and event handlers both open
one, the domain records events on it, and they are written to the outbox in the same transaction.

Every engine the kit builds starts its connections with ``statement_timeout``, ``lock_timeout``
and ``idle_in_transaction_session_timeout`` from the settings of its *role* (requests, analytics),
and hides SQL parameters and the row values PostgreSQL puts in constraint errors, so an error text
never carries a phone number or a name. A statement ended by a limit reaches an HTTP client as a
503 problem (``install_database_problem_handlers``); see docs/database.md.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import ClauseElement, MetaData, event, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler

from citygrid.errors import DomainError
from citygrid.events import CloudEvent, EventData, envelope
from citygrid.settings import ServiceSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class KitBase(DeclarativeBase):
    """Tables the kit keeps in every service database (outbox, inbox, dead letters, idempotency)."""

    metadata = make_metadata()


class Role(StrEnum):
    """What an engine is for, which decides its time limits and its pool."""

    REQUEST = "request"  # HTTP requests, event handlers, periodic jobs: short limits
    ANALYTICS = "analytics"  # evaluations, report-style reads, roll-up jobs: longer limits, small pool


@dataclass(frozen=True)
class TimeLimits:
    """The three limits a connection starts with, in seconds; 0 is no limit."""

    statement_seconds: float
    lock_seconds: float
    idle_in_transaction_seconds: float

    @classmethod
    def of(cls, settings: ServiceSettings, role: Role = Role.REQUEST) -> TimeLimits:
        if role is Role.ANALYTICS:
            return cls(
                settings.db_analytics_statement_timeout_seconds,
                settings.db_analytics_lock_timeout_seconds,
                settings.db_analytics_idle_in_transaction_timeout_seconds,
            )
        return cls(
            settings.db_statement_timeout_seconds,
            settings.db_lock_timeout_seconds,
            settings.db_idle_in_transaction_timeout_seconds,
        )

    def server_settings(self) -> dict[str, str]:
        """The limits as PostgreSQL startup parameters (milliseconds)."""
        return {
            "statement_timeout": milliseconds(self.statement_seconds),
            "lock_timeout": milliseconds(self.lock_seconds),
            "idle_in_transaction_session_timeout": milliseconds(self.idle_in_transaction_seconds),
        }


def milliseconds(seconds: float) -> str:
    """A limit in PostgreSQL's unit for it; a positive limit never rounds down to 0 (no limit)."""
    return "0" if seconds <= 0 else str(max(1, round(seconds * 1000)))


def application_name(settings: ServiceSettings, role: Role) -> str:
    """What ``pg_stat_activity`` shows for the engine's connections: ``case``, ``case-analytics``."""
    return settings.service_name if role is Role.REQUEST else f"{settings.service_name}-{role.value}"


def create_engine(settings: ServiceSettings, role: Role = Role.REQUEST) -> AsyncEngine:
    """The service's engine for ``role``: its time limits on every connection, its own pool."""
    if role is Role.ANALYTICS:
        pool = {
            "pool_size": settings.db_analytics_pool_size,
            "max_overflow": settings.db_analytics_max_overflow,
            "pool_timeout": settings.db_analytics_pool_timeout_seconds,
        }
    else:
        pool = {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout_seconds,
        }
    server_settings = {
        "application_name": application_name(settings, role),
        "timezone": "UTC",
        **TimeLimits.of(settings, role).server_settings(),
    }
    engine = create_async_engine(
        settings.sqlalchemy_url,
        **pool,
        # Checked on checkout only after an idle spell (ping_after_idle), not with SQLAlchemy's pre-ping,
        # which costs three round trips (BEGIN, ping, ROLLBACK) on every checkout.
        pool_pre_ping=False,
        # Parameters are phones, names, addresses: never in an error's text, a log or a dead letter.
        hide_parameters=True,
        connect_args={"server_settings": server_settings},
    )
    event.listen(engine.sync_engine, "handle_error", hide_row_values)
    ping_after_idle(engine, settings.db_ping_after_idle_seconds)
    return engine


def ping_after_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a connection on checkout when it has been idle: one round trip, no transaction around it.

    A connection back in the pool for less than ``idle_seconds`` (``CITYGRID_DB_PING_AFTER_IDLE_SECONDS``,
    1 s) is used without a check, as HikariCP does with its 500 ms bypass window: it answered a moment
    ago. One idle longer is pinged first, so a database that restarted while the pool was quiet costs
    no request; under load, the first statement on a dead connection fails (503), and SQLAlchemy then
    renews every connection the pool holds.
    """

    def connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.run_async(lambda connection: connection.fetchrow(";"))
        except Exception as error:
            # The pool drops this connection and checks out another (SQLAlchemy's documented contract).
            raise sa_exc.DisconnectionError(f"the pooled connection failed its ping: {error}") from error

    pool = engine.sync_engine.pool
    event.listen(pool, "connect", connected)
    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checked_out)


def hide_row_values(context: ExceptionContext) -> None:
    """SQLAlchemy's hook for ``drop_row_values``: every statement through an engine of the kit."""
    drop_row_values(context.original_exception)


def drop_row_values(error: BaseException) -> None:
    """Drop the DETAIL of a constraint violation from the driver's error before anyone formats it.

    PostgreSQL explains a unique or foreign-key violation with the key's values (``Key
    (reporter_phone)=(138…)``) and a not-null or check violation with the whole failing row, and
    the driver's error prints it in every traceback; ``hide_parameters`` does not reach it. The
    constraint, table and column names stay on the error.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("23") and getattr(current, "detail", None):
            with contextlib.suppress(AttributeError):  # read-only on some driver class: leave it
                current.detail = None  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


_TRANSACTION_TIME = "citygrid.transaction_time"


async def transaction_time(session: AsyncSession) -> datetime:
    """The database's time at the start of this transaction: one clock for every replica, and the
    same instant for every row the transaction writes.

    Asked once per transaction: the answer is kept in ``session.info`` with the transaction it
    belongs to, so a later transaction of the same session asks again.
    """
    cached = session.info.get(_TRANSACTION_TIME)
    current = session.sync_session.get_transaction()
    if cached is not None and current is not None and cached[0]() is current:
        moment: datetime = cached[1]
        return moment
    moment = (await session.execute(select(func.now()))).scalar_one()
    remember_transaction_time(session, moment)
    return moment


def remember_transaction_time(session: AsyncSession, moment: datetime) -> None:
    """Keep ``now()`` that a statement of this transaction read beside its own columns
    (``select(Row, func.now())``), so ``transaction_time`` answers without a round trip of its own."""
    transaction = session.sync_session.get_transaction()  # begun by that statement if none was
    if transaction is not None:
        session.info[_TRANSACTION_TIME] = (weakref.ref(transaction), moment)


class DatabaseTimeout(DomainError):
    """A statement, a lock wait, an idle transaction or the wait for a pooled connection ran past
    its limit: the transaction was rolled back; retrying later (or asking for less) may succeed."""

    code = "database.timeout"
    status = 503
    title = "Database time limit reached"


class DatabaseUnavailable(DomainError):
    """The connection was lost (failover, restart, a transaction ended by the server)."""

    code = "database.unavailable"
    status = 503
    title = "Database unavailable"


# SQLSTATE → which limit ended the statement.
TIMEOUT_SQLSTATES = {
    "57014": "statement",  # query_canceled: statement_timeout (or a cancel request)
    "55P03": "lock",  # lock_not_available: lock_timeout (or NOWAIT)
    "25P03": "idle_in_transaction",  # idle_in_transaction_session_timeout
}
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})  # shutdown, crash, not accepting yet
# The transaction lost to another one it waited on: rolled back whole, and safe to run again.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


class DatabaseConflict(DomainError):
    """Two transactions waited on each other (a deadlock) and the database ended this one."""

    code = "database.conflict"
    status = 503
    title = "Database conflict"


_DETAILS = {
    "statement": "the database ended a statement that ran past its time limit",
    "lock": "a row or table this request needed stayed locked by another transaction past the lock limit",
    "idle_in_transaction": "the database ended a transaction that stayed idle past its limit",
    "connection_pool": "no database connection was free within the pool's limit",
}
_RETRY_AFTER = {"statement": "5", "lock": "1", "idle_in_transaction": "5", "connection_pool": "1"}


def _sqlstate(error: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
        current = getattr(current, "orig", None) or current.__cause__
    return None


def time_limit_of(error: BaseException) -> str | None:
    """Which limit ended the work that raised ``error`` (``statement``, ``lock``,
    ``idle_in_transaction``, ``connection_pool``), or None when it was no time limit."""
    if isinstance(error, sa_exc.TimeoutError):  # the engine's pool had no connection in time
        return "connection_pool"
    sqlstate = _sqlstate(error)
    return TIMEOUT_SQLSTATES.get(sqlstate) if sqlstate is not None else None


def database_problem(error: BaseException) -> DomainError | None:
    """The problem a database error is for a client, or None when it is a fault (a 500)."""
    limit = time_limit_of(error)
    if limit is not None:
        return DatabaseTimeout(
            f"{_DETAILS[limit]}; its transaction was rolled back. Retry later (a change with its "
            "Idempotency-Key or If-Match, which make the retry safe)",
            headers={"Retry-After": _RETRY_AFTER[limit]},
            limit=limit,
            retry_after_seconds=int(_RETRY_AFTER[limit]),
        )
    sqlstate = _sqlstate(error)
    if sqlstate in CONFLICT_SQLSTATES:
        return DatabaseConflict(
            "this request's transaction and another one waited on each other, and the database "
            "ended this one: nothing of it was committed. Send it again",
            headers={"Retry-After": "1"},
            retry_after_seconds=1,
        )
    lost = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
    if lost or (sqlstate is not None and (sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES)):
        return DatabaseUnavailable(
            "the connection to the database was lost; a change in flight may or may not have been "
            "committed: retry with the same Idempotency-Key, or read the resource again first",
            headers={"Retry-After": "2"},
            retry_after_seconds=2,
        )
    return None


def install_database_problem_handlers(app: FastAPI) -> None:
    """Answer a database time limit or a lost connection with a 503 problem, not a 500.

    Any other database error stays a fault: re-raised, it becomes the kit's 500 problem.
    """
    from fastapi import Request
    from fastapi.responses import Response

    from citygrid.problems import problem

    async def on_database_error(request: Request, error: Exception) -> Response:
        mapped = database_problem(error)
        if mapped is None:
            raise error
        return problem(
            mapped.status,
            mapped.code,
            mapped.title,
            mapped.detail,
            instance=request.url.path,
            headers=mapped.headers,
            **mapped.extra,
        )

    app.add_exception_handler(sa_exc.DBAPIError, on_database_error)
    app.add_exception_handler(sa_exc.TimeoutError, on_database_error)


@dataclass
class UnitOfWork:
    """One transaction. ``publish`` queues an event; ``unit_of_work`` writes it to the outbox."""

    session: AsyncSession
    source: str
    traceparent: str | None = None
    pending_events: list[CloudEvent] = field(default_factory=list)
    events_written: int = 0

    def publish(self, data: EventData, *, aggregate_id: str, version: int) -> CloudEvent:
        """Queue ``data`` as an event of aggregate ``aggregate_id`` at its ``version`` after the change."""
        event = envelope(
            data,
            source=self.source,
            aggregate_id=aggregate_id,
            aggregate_version=version,
            traceparent=self.traceparent,
        )
        self.pending_events.append(event)
        return event

    async def now(self) -> datetime:
        """The transaction's start time (``transaction_time``), asked of the database once."""
        return await transaction_time(self.session)

    async def flush_events(self) -> None:
        if not self.pending_events:
            return
        # Imported here: the outbox model imports this module for KitBase.
        from citygrid.outbox import OUTBOX_INSERT, outbox_rows

        await self.session.execute(OUTBOX_INSERT, outbox_rows(self.pending_events))
        # No NOTIFY: it takes a server-wide lock from pre-commit to commit and serialises every
        # event-producing commit (docs/architecture.md has the figures). Relays poll instead, and
        # this process's relay is woken after the commit.
        self.events_written += len(self.pending_events)
        self.pending_events.clear()


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
    *,
    source: str,
    traceparent: str | None = None,
    on_events_committed: Callable[[], None] | None = None,
) -> AsyncIterator[UnitOfWork]:
    """Open a transaction; commit it with its events when the block ends, roll back on error.

    ``on_events_committed`` runs after a commit that wrote events (the relay's wake-up call).
    """
    async with sessions() as session, session.begin():
        uow = UnitOfWork(session=session, source=source, traceparent=traceparent)
        yield uow
        await uow.flush_events()
    if uow.events_written and on_events_committed is not None:
        on_events_committed()


# -- reads on the driver ------------------------------------------------------------------------

_ASYNCPG_DIALECT = create_async_engine("postgresql+asyncpg://", hide_parameters=True).dialect


@dataclass(frozen=True)
class DriverRead:
    """A read on a hot path, compiled once to the driver's SQL and run on a pooled connection's
    asyncpg connection directly, as a prepared statement asyncpg keeps per connection.

    It skips what SQLAlchemy costs per execution (a session, its transaction state, the result's
    processing and, for the ORM, building instances: about 0.5 ms of CPU a request on the case
    detail, against 0.1 ms for the driver). Rows come back as asyncpg ``Record``s, values as the
    driver decodes them (an enum as its text, JSON as Python through the codecs SQLAlchemy's
    dialect installs). Writes keep the unit of work.
    """

    sql: str
    names: tuple[str, ...]
    # The statement's own values (a literal SQLAlchemy made a parameter: a time zone's name, say).
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, statement: ClauseElement) -> DriverRead:
        compiled = statement.compile(dialect=_ASYNCPG_DIALECT)
        assert isinstance(compiled, SQLCompiler), "a DriverRead is a SQL statement"
        fixed = {name: value for name, value in compiled.params.items() if not compiled.binds[name].required}
        return cls(str(compiled), tuple(compiled.positiontup or ()), fixed)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.fixed[name] for name in self.names]


_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The asyncpg connection of a connection checked out of ``engine``'s pool (an autocommit
    engine: nothing opens a transaction). A database error is what it would be through SQLAlchemy:
    a time limit or a lost connection becomes the kit's 503 problem, a lost connection is
    invalidated so the pool does not hand it out again, and a constraint violation loses the row
    values PostgreSQL quotes in it."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        try:
            yield raw.driver_connection
        except _LOST as error:
            await connection.invalidate()
            raise DatabaseUnavailable(
                "the connection to the database was lost; read the resource again",
                headers={"Retry-After": "2"},
                retry_after_seconds=2,
            ) from error
        except asyncpg.PostgresError as error:
            drop_row_values(error)
            mapped = database_problem(error)
            if mapped is None:
                raise
            raise mapped from error
