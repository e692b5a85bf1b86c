"""Database time limits per role, errors without personal data, and one ``now()`` per transaction.

Real PostgreSQL throughout. Nothing here passes or fails on a measured duration: a limit is shown to
hold by what the server did (the statement's SQLSTATE, the backend gone, the lock free), and limits
are set small only so that the tests do not wait long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, column, event, func, select, table, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.db import (
    DatabaseTimeout,
    DatabaseUnavailable,
    DriverRead,
    Role,
    create_engine,
    create_sessionmaker,
    database_problem,
    driver_connection,
    install_database_problem_handlers,
    transaction_time,
)
from citygrid.devstack.servers import create_databases, database_url
from citygrid.middleware import UnexpectedErrorMiddleware
from citygrid.settings import ServiceSettings, to_asyncpg_url, to_libpq_url
from citygrid.testing import serve_app, wait_until
from contract.case import CaseStatus
from services.case import service
from services.case.domain.workflow import Action
from services.case.main import create_app as create_case_app
from services.case.models import CaseHistory
from services.case.schemas import ReportCase
from tests.conftest import case_settings
from tests.test_case_dispatch import add_rule
from tests.test_case_flow import REPORT

PHONE = "13812345678"
NAME = "Li Ming"
OTHER_PHONE = "13900001111"
CLERK = Principal(
    subject="user:clerk",
    kind="person",
    name="Clerk",
    roles=frozenset({"operator", "dispatcher"}),
    scopes=frozenset({"cases:read", "cases:write"}),
)
# transaction_time's own statement, as SQLAlchemy compiles it (a test's raw "SELECT now()" is not it).
TRANSACTION_TIME_SQL = "SELECT now() AS now_1"


@pytest.fixture
async def probe_url(infrastructure) -> str:
    """A database of this module's own, with one row carrying a phone number and a name."""
    await create_databases(infrastructure.server_url, ["test_db_limits"])
    url = database_url(infrastructure.server_url, "test_db_limits")
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        await connection.execute(
            "DROP TABLE IF EXISTS probe;"
            "CREATE TABLE probe (id int PRIMARY KEY, phone text NOT NULL UNIQUE, name text NOT NULL)"
        )
        await connection.execute("INSERT INTO probe VALUES (1, $1, $2)", PHONE, NAME)
    finally:
        await connection.close()
    return url


def probe_settings(url: str, **values: Any) -> ServiceSettings:
    return ServiceSettings(environment="test", service_name="probe", database_url=url, **values)


@contextlib.asynccontextmanager
async def kit_engine(settings: ServiceSettings, role: Role = Role.REQUEST) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, role)
    try:
        yield engine
    finally:
        await engine.dispose()


LIMITS_SQL = (
    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
    "current_setting('idle_in_transaction_session_timeout'), current_setting('application_name')"
)


async def shown_limits(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.connect() as connection:
        return tuple((await connection.execute(text(LIMITS_SQL))).one())


# -- limits per role ----------------------------------------------------------------------------


async def test_every_connection_starts_with_the_limits_of_its_role(probe_url):
    settings = probe_settings(probe_url)
    async with kit_engine(settings) as requests, kit_engine(settings, Role.ANALYTICS) as analytics:
        assert await shown_limits(requests) == ("5s", "2s", "30s", "probe")
        assert await shown_limits(analytics) == ("1min", "5s", "1min", "probe-analytics")


async def test_the_limits_are_set_from_the_environment_and_zero_turns_one_off(probe_url, monkeypatch):
    monkeypatch.setenv("CITYGRID_DB_STATEMENT_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("CITYGRID_DB_LOCK_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("CITYGRID_DB_ANALYTICS_STATEMENT_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("CITYGRID_DB_ANALYTICS_LOCK_TIMEOUT_SECONDS", "0.0004")
    settings = ServiceSettings(environment="test", service_name="probe", database_url=probe_url)
    async with kit_engine(settings) as requests, kit_engine(settings, Role.ANALYTICS) as analytics:
        assert (await shown_limits(requests))[:3] == ("1500ms", "0", "30s")
        # A positive limit never rounds down to 0, which would be no limit at all.
        assert (await shown_limits(analytics))[:3] == ("2min", "1ms", "1min")


async def test_the_case_service_runs_requests_and_evaluations_under_their_own_limits(stack):
    runtime = stack.case_runtime
    async with runtime.db() as session:
        assert tuple((await session.execute(text(LIMITS_SQL))).one()) == ("5s", "2s", "30s", "case")
    async with runtime.analytics() as session:
        assert tuple((await session.execute(text(LIMITS_SQL))).one()) == (
            "1min",
            "5s",
            "1min",
            "case-analytics",
        )
    seen: dict[str, list[tuple[str, Any]]] = {"requests": [], "analytics": []}
    engines = {"requests": runtime.engine, "analytics": runtime.analytics_engine}
    listeners = {}
    for name, engine in engines.items():
        assert engine is not None

        def record(conn, cursor, statement, parameters, context, executemany, name=name):
            seen[name].append((statement, parameters))

        listeners[name] = record
        event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await stack.client.get(
            "/api/case/v1/evaluation",
            params={"from": "2026-03-01T00:00:00+08:00", "to": "2026-04-01T00:00:00+08:00"},
            headers=stack.as_("reader"),
        )
    finally:
        for name, engine in engines.items():
            assert engine is not None
            event.remove(engine.sync_engine, "before_cursor_execute", listeners[name])
    assert response.status_code == 200, response.text
    # The evaluation ran on the analytics connections, under the client's limit (8 s, below the
    # gateway's 10 s), and not on the requests' pool.
    # (The gauges' job evaluates on the analytics engine too; only the client's carries its limit.)
    assert any("GROUPING SETS" in statement for statement, _ in seen["analytics"])
    limits = [parameters for statement, parameters in seen["analytics"] if "set_config" in statement]
    assert [("statement_timeout", "8000") == tuple(p)[:2] for p in limits] == [True]
    assert not any("GROUPING SETS" in statement for statement, _ in seen["requests"])


# -- what a client sees when a limit ends its request -------------------------------------------


async def hold_exclusive_lock(url: str, table: str) -> asyncpg.Connection:
    """A transaction holding ``table`` in ACCESS EXCLUSIVE mode: every statement on it waits."""
    blocker = await asyncpg.connect(to_libpq_url(url))
    await blocker.execute("BEGIN")
    await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return blocker


async def lock_waiters(url: str, application: str) -> int:
    """Statements of ``application`` waiting for a lock right now."""
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = $1 AND wait_event_type = 'Lock'",
                application,
            )
        )
    finally:
        await connection.close()


def assert_database_timeout(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["code"], body["status"], body["limit"]) == ("database.timeout", 503, limit)
    assert "rolled back" in body["detail"]
    assert int(response.headers["retry-after"]) == body["retry_after_seconds"] >= 1


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        ({"db_statement_timeout_seconds": 0.3, "db_lock_timeout_seconds": 0}, "statement"),
        ({"db_statement_timeout_seconds": 0, "db_lock_timeout_seconds": 0.3}, "lock"),
    ],
)
async def test_a_statement_past_its_limit_is_ended_by_the_server_and_answered_503(
    infrastructure, databases, clean, limits, limit
):
    settings = case_settings(infrastructure, databases).model_copy(update=limits)
    app = create_case_app(settings)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20.0) as client:
        headers = {PRINCIPAL_HEADER: infrastructure.token(CLERK, "case")}
        assert (await client.get("/v1/categories", headers=headers)).status_code == 200
        blocker = await hold_exclusive_lock(databases["case"], "categories")
        try:
            response = await client.get("/v1/categories", headers=headers)
            assert_database_timeout(response, limit)
            # The server ended the statement: nothing of the service still waits behind the lock.
            assert await lock_waiters(databases["case"], "case") == 0
        finally:
            await blocker.close()
        # The connection went back to the pool in working order.
        assert (await client.get("/v1/categories", headers=headers)).status_code == 200


async def test_a_request_blocked_by_a_lock_gets_a_503_problem_through_the_gateway(stack, databases):
    blocker = await hold_exclusive_lock(databases["case"], "categories")
    try:
        response = await stack.client.get("/api/case/v1/categories", headers=stack.as_("reader"))
    finally:
        await blocker.close()
    assert_database_timeout(response, "lock")  # the default lock limit, 2 s, is far below the gateway's 10 s


async def test_a_fault_that_is_no_time_limit_stays_a_500_and_nothing_is_mapped_by_mistake(probe_url):
    async with kit_engine(probe_settings(probe_url)) as engine, engine.connect() as connection:
        with pytest.raises(IntegrityError) as duplicate:
            await connection.execute(text("INSERT INTO probe VALUES (1, '1', 'x')"))
        await connection.rollback()
        with pytest.raises(DBAPIError) as syntax:
            await connection.execute(text("SELEC 1"))
    assert database_problem(duplicate.value) is None
    assert database_problem(syntax.value) is None
    assert database_problem(RuntimeError("a bug")) is None


async def test_over_http_a_time_limit_is_a_503_problem_and_any_other_database_error_a_500(probe_url):
    settings = probe_settings(probe_url, db_statement_timeout_seconds=0.2)
    async with kit_engine(settings) as engine, engine.connect() as connection:
        with pytest.raises(DBAPIError) as timed_out:
            await connection.execute(text("SELECT pg_sleep(5)"))
        await connection.rollback()
        with pytest.raises(IntegrityError) as duplicate:
            await connection.execute(text("INSERT INTO probe VALUES (2, :phone, 'x')"), {"phone": PHONE})
    app = FastAPI()
    install_database_problem_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)
    raised = {"timeout": timed_out.value, "duplicate": duplicate.value}

    @app.get("/{name}")
    async def fail(name: str) -> None:
        raise raised[name]

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign,assignment]
    problems_log = logging.getLogger("citygrid.problems")
    problems_log.addHandler(handler)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            timeout = await client.get("/timeout")
            fault = await client.get("/duplicate")
    finally:
        problems_log.removeHandler(handler)
    assert_database_timeout(timeout, "statement")
    assert fault.status_code == 500
    assert fault.json()["code"] == "internal_error"
    # The fault is logged with its traceback (the timeout is not: it is no fault), and the
    # traceback carries no phone number.
    # (citygrid.logging may keep it as scrubbed text instead of the exception: either is checked.)
    [record] = logged
    printed = record.exc_text or "".join(traceback.format_exception(*record.exc_info))  # type: ignore[misc]
    assert "IntegrityError" in printed
    assert PHONE not in printed


async def test_no_free_connection_in_the_pool_in_time_is_a_503(probe_url):
    settings = probe_settings(
        probe_url,
        db_analytics_pool_size=1,
        db_analytics_max_overflow=0,
        db_analytics_pool_timeout_seconds=0.2,
    )
    async with kit_engine(settings, Role.ANALYTICS) as analytics, analytics.connect() as held:
        await held.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout) as raised:
            async with analytics.connect():
                pass
    problem = database_problem(raised.value)
    assert isinstance(problem, DatabaseTimeout)
    assert problem.extra["limit"] == "connection_pool"


# -- a transaction left idle --------------------------------------------------------------------


async def test_a_transaction_left_idle_is_ended_by_the_server_with_its_lock_and_its_work(probe_url):
    settings = probe_settings(probe_url, db_idle_in_transaction_timeout_seconds=0.3)
    observer = await asyncpg.connect(to_libpq_url(probe_url))
    try:
        async with kit_engine(settings) as engine:
            sessions = create_sessionmaker(engine)
            async with sessions() as session:
                await session.begin()
                pid = await session.scalar(text("SELECT pg_backend_pid()"))
                await session.execute(text("UPDATE probe SET name = 'changed' WHERE id = 1"))

                async def ended() -> bool:
                    return not await observer.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                    )

                await wait_until(ended, timeout=20.0)  # the server ended the backend on its own
                with pytest.raises(DBAPIError) as raised:
                    await session.execute(text("SELECT 1"))
            problem = database_problem(raised.value)
            assert isinstance(problem, DatabaseUnavailable)
            assert problem.status == 503
        # Its row lock went with it, and its update was rolled back.
        await observer.execute("SET lock_timeout = '5s'")
        async with observer.transaction():
            assert await observer.fetchval("SELECT name FROM probe WHERE id = 1 FOR UPDATE") == NAME
    finally:
        await observer.close()


# -- no personal data in error text -------------------------------------------------------------


async def constraint_errors(engine: AsyncEngine) -> list[BaseException]:
    """A unique violation (PostgreSQL names the key's value) and a not-null one (it prints the row)."""
    errors: list[BaseException] = []
    async with engine.connect() as connection:
        for statement, parameters in [
            ("INSERT INTO probe VALUES (2, :phone, :name)", {"phone": PHONE, "name": NAME}),
            ("INSERT INTO probe VALUES (3, :phone, NULL)", {"phone": OTHER_PHONE}),
        ]:
            try:
                await connection.execute(text(statement), parameters)
            except IntegrityError as error:
                errors.append(error)
            await connection.rollback()
    assert len(errors) == 2
    return errors


def everything_printed(error: BaseException) -> str:
    """What a log line with the traceback, or a stored ``str(error)``, would carry."""
    return "".join(traceback.format_exception(error)) + str(error) + repr(error)


async def test_sql_parameters_and_row_values_never_reach_an_errors_text(probe_url):
    # Without the kit's engine, the values are all there: the test would catch a regression.
    plain = create_async_engine(to_asyncpg_url(probe_url))
    try:
        leaky = [everything_printed(error) for error in await constraint_errors(plain)]
    finally:
        await plain.dispose()
    assert PHONE in leaky[0]
    assert NAME in leaky[0]
    assert OTHER_PHONE in leaky[1]

    async with kit_engine(probe_settings(probe_url)) as engine:
        unique, not_null = await constraint_errors(engine)
    for error in (unique, not_null):
        printed = everything_printed(error)
        assert PHONE not in printed
        assert NAME not in printed
        assert OTHER_PHONE not in printed
        assert "[SQL parameters hidden due to hide_parameters=True]" in printed
    # What a developer needs to know stays: which constraint, which column.
    assert 'unique constraint "probe_phone_key"' in str(unique)
    assert 'column "name"' in str(not_null)


# -- one now() per transaction ------------------------------------------------------------------


@contextlib.contextmanager
def statements_of(engine: AsyncEngine) -> Any:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_transaction_time_asks_once_per_transaction_and_is_that_transactions_start(probe_url):
    async with kit_engine(probe_settings(probe_url)) as engine:
        sessions = create_sessionmaker(engine)
        with statements_of(engine) as seen:
            async with sessions() as session:
                async with session.begin():
                    first = await transaction_time(session)
                    await session.execute(text("SELECT pg_sleep(0.01)"))
                    async with session.begin_nested():  # a savepoint is still the same transaction
                        assert await transaction_time(session) == first
                    assert await transaction_time(session) == first
                    assert seen.count(TRANSACTION_TIME_SQL) == 1
                    # The contract: the start of the transaction, not the moment of the call.
                    assert await session.scalar(text("SELECT now()")) == first
                    assert await session.scalar(text("SELECT clock_timestamp()")) > first
                async with session.begin():  # the same session, a new transaction: asked again
                    second = await transaction_time(session)
                    assert await session.scalar(text("SELECT now()")) == second
                assert second > first
            async with sessions() as session:  # a transaction begun by transaction_time itself
                third = await transaction_time(session)
                assert await transaction_time(session) == third
                assert await session.scalar(text("SELECT now()")) == third
        assert seen.count(TRANSACTION_TIME_SQL) == 3


async def test_a_report_registered_and_dispatched_by_rule_in_one_transaction_asks_the_time_once(stack):
    await add_rule(stack, "201", "440106", "tianhe-sanitation")
    runtime = stack.case_runtime
    calendar = stack.case_app.state.calendars.calendar
    async with runtime.uow() as uow:
        connection = await uow.session.connection()
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        event.listen(connection.sync_connection, "before_cursor_execute", record)
        case = await service.report_case(uow, ReportCase.model_validate(REPORT), CLERK, calendar)
        case = await service.transition(
            uow, case.id, Action.REGISTER, CLERK, expected_version=1, calendar=calendar
        )
        event.remove(connection.sync_connection, "before_cursor_execute", record)
        at = await transaction_time(uow.session)
        history = list(
            await uow.session.scalars(select(CaseHistory.at).where(CaseHistory.case_id == case.id))
        )
    # Report, register and the rule's dispatch: three callers of transaction_time, and no query of
    # its own: the report's read of its category brought the time along.
    assert seen.count(TRANSACTION_TIME_SQL) == 0
    assert sum("now() AS" in statement for statement in seen) == 1
    assert case.status is CaseStatus.DISPATCHED
    assert case.created_at == case.registered_at == case.dispatched_at == at
    assert len(history) == 3
    assert set(history) == {at}


# -- connections the server dropped -------------------------------------------------------------


async def backend_pids(connection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    admin = await asyncpg.connect(to_libpq_url(url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_until(
            lambda: admin.fetchval("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", pid)
        )
    finally:
        await admin.close()


async def test_a_connection_dropped_while_the_pool_was_quiet_is_replaced_before_a_statement_uses_it(
    probe_url,
):
    # Every checkout is after the window here: the checkout pings and finds the connection gone.
    settings = probe_settings(probe_url, db_pool_size=1, db_max_overflow=0, db_ping_after_idle_seconds=0)
    async with kit_engine(settings) as engine:
        async with engine.connect() as connection:
            first = await backend_pids(connection)
        await terminate(probe_url, first)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT phone FROM probe"))).scalar_one() == PHONE
            assert await backend_pids(connection) != first


async def test_a_connection_used_a_moment_ago_is_not_pinged_and_a_dead_one_fails_once_then_all_are_renewed(
    probe_url,
):
    settings = probe_settings(probe_url, db_pool_size=2, db_max_overflow=0, db_ping_after_idle_seconds=3600)
    async with kit_engine(settings) as engine:
        async with engine.connect() as one, engine.connect() as two:
            pids = {await backend_pids(one), await backend_pids(two)}
        for pid in pids:
            await terminate(probe_url, pid)
        # Back in the pool a moment ago: no ping, so the first statement finds the connection dead.
        with pytest.raises(DBAPIError) as raised:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert raised.value.connection_invalidated
        assert isinstance(database_problem(raised.value), DatabaseUnavailable)
        # The pool renewed every connection it held: both the next two are new and work.
        async with engine.connect() as one, engine.connect() as two:
            renewed = {await backend_pids(one), await backend_pids(two)}
        assert not renewed & pids


# -- reads on the driver ------------------------------------------------------------------------

PROBE_BY_ID = DriverRead.of(
    select(column("phone"), column("name"))
    .select_from(table("probe"))
    .where(column("id") == bindparam("probe_id"))
)


async def test_a_driver_read_answers_like_the_orm_and_keeps_the_time_limits(probe_url):
    settings = probe_settings(probe_url, db_statement_timeout_seconds=0.2)
    async with kit_engine(settings) as engine:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with driver_connection(autocommit) as connection:
            row = await connection.fetchrow(PROBE_BY_ID.sql, *PROBE_BY_ID.arguments({"probe_id": 1}))
        assert (row["phone"], row["name"]) == (PHONE, NAME)
        with pytest.raises(DatabaseTimeout) as timed_out:
            async with driver_connection(autocommit) as connection:
                await connection.fetchval("SELECT pg_sleep(5)")
        assert timed_out.value.extra["limit"] == "statement"
        # The connection went back to the pool in working order.
        async with driver_connection(autocommit) as connection:
            assert await connection.fetchval("SELECT count(*) FROM probe") == 1


async def test_a_driver_read_on_a_dropped_connection_is_a_503_and_the_pool_renews_it(probe_url):
    settings = probe_settings(probe_url, db_pool_size=1, db_max_overflow=0, db_ping_after_idle_seconds=3600)
    async with kit_engine(settings) as engine:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as connection:
            first = await backend_pids(connection)
        await terminate(probe_url, first)
        with pytest.raises(DatabaseUnavailable):
            async with driver_connection(autocommit) as connection:
                await connection.fetchrow(PROBE_BY_ID.sql, 1)
        async with driver_connection(autocommit) as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") != first
            row = await connection.fetchrow(PROBE_BY_ID.sql, 1)
        assert row["phone"] == PHONE


def test_a_driver_read_keeps_the_values_its_statement_carries_and_asks_for_the_rest():
    read = DriverRead.of(select(func.timezone("Asia/Shanghai", bindparam("moment"))))
    assert read.sql.count("$") == 2
    assert read.arguments({"moment": "2026-12-03T00:00:00Z"}) == ["Asia/Shanghai", "2026-12-03T00:00:00Z"]
    with pytest.raises(KeyError):
        read.arguments({})


async def test_a_constraint_violation_on_the_driver_carries_no_row_values(probe_url):
    async with kit_engine(probe_settings(probe_url)) as engine:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(asyncpg.UniqueViolationError) as duplicate:
            async with driver_connection(autocommit) as connection:
                await connection.execute("INSERT INTO probe VALUES (2, $1, 'x')", PHONE)
    assert PHONE not in everything_printed(duplicate.value)
    assert duplicate.value.constraint_name == "probe_phone_key"


async def test_a_deadlock_ends_one_transaction_and_it_is_a_503_to_send_again(probe_url):
    """Two batches taking the same rows in opposite orders: the database ends one of them, which is
    no fault of the request's and safe to send again."""
    seed = await asyncpg.connect(to_libpq_url(probe_url))
    try:
        await seed.execute("INSERT INTO probe VALUES (2, '13900000000', 'b') ON CONFLICT DO NOTHING")
    finally:
        await seed.close()
    settings = probe_settings(probe_url, db_lock_timeout_seconds=0)
    both_locked = asyncio.Barrier(2)

    async def in_order(first: int, second: int) -> BaseException | None:
        async with kit_engine(settings) as engine, engine.connect() as connection:
            try:
                await connection.execute(text("UPDATE probe SET name = 'x' WHERE id = :id"), {"id": first})
                await both_locked.wait()
                await connection.execute(text("UPDATE probe SET name = 'y' WHERE id = :id"), {"id": second})
                await connection.commit()
            except DBAPIError as error:
                return error
        return None

    outcomes = await asyncio.gather(in_order(1, 2), in_order(2, 1))
    (ended,) = [outcome for outcome in outcomes if outcome is not None]
    problem = database_problem(ended)
    assert problem is not None
    assert (problem.status, problem.code, problem.headers) == (503, "database.conflict", {"Retry-After": "1"})
