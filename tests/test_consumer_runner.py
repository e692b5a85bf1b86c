"""The consumer runner under hostile input and load, and the kit's retention, on real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import nats
import nats.js.errors
import pytest
from nats.js.api import DeliverPolicy
from sqlalchemy import ColumnElement, DateTime, func, literal_column, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import KitBase, UnitOfWork, create_sessionmaker
from citygrid.devstack.servers import create_databases, database_url, free_port
from citygrid.errors import InvalidInput
from citygrid.events import CloudEvent, EventData, envelope
from citygrid.http import create_service_app
from citygrid.idempotency import StoredResponse
from citygrid.inbox import (
    RESUME_OVERLAP,
    AggregateVersion,
    ConsumerRunner,
    ConsumerSpec,
    DeadLetter,
    InboxEntry,
    InboxFailure,
    is_transient,
)
from citygrid.messaging import ensure_stream, stream_config
from citygrid.metrics import KitMetrics
from citygrid.outbox import OutboxMessage
from citygrid.retention import PURGES, RETENTION_LOCK, purge_once, retention_job
from citygrid.settings import ServiceSettings, to_asyncpg_url, to_libpq_url
from citygrid.testing import Infrastructure, delete_streams, serve_app, truncate_all, wait_until
from contract.case import CaseHandled, CaseSource, CaseStatus
from contract.common import GeoPoint, Origin

STREAM = "PROBE"
SUBJECT = "probe.thing.happened"


class ProbeHappened(EventData):
    subject: ClassVar[str] = SUBJECT
    n: int


# -- fixtures: a kit database of this module's own, a clean PROBE stream -------------------------


@pytest.fixture(scope="session")
def runner_database(infrastructure: Infrastructure) -> str:
    async def prepare() -> str:
        await create_databases(infrastructure.server_url, ["test_kit_runner"])
        url = database_url(infrastructure.server_url, "test_kit_runner")
        engine = create_async_engine(to_asyncpg_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(KitBase.metadata.create_all)
            await connection.execute(
                text("CREATE TABLE IF NOT EXISTS handled (id serial PRIMARY KEY, event_id text NOT NULL)")
            )
            await connection.execute(text("CREATE TABLE IF NOT EXISTS probe_lock (id int PRIMARY KEY)"))
        await engine.dispose()
        return url

    return asyncio.run(prepare())


@pytest.fixture
async def sessions(runner_database: str, infrastructure: Infrastructure):
    await truncate_all(runner_database)
    await delete_streams(infrastructure.nats_url)
    engine = create_async_engine(to_asyncpg_url(runner_database))
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def jetstream(infrastructure: Infrastructure, sessions):
    client = await nats.connect(infrastructure.nats_url)
    js = client.jetstream()
    await ensure_stream(js, stream_config("probe"))
    yield js
    await client.close()


# -- helpers ---------------------------------------------------------------------------------------


def probe_event(n: int, *, aggregate: str | None = None, version: int | None = 1) -> CloudEvent:
    event = envelope(
        ProbeHappened(n=n), source="probe", aggregate_id=aggregate or f"thing-{n}", aggregate_version=1
    )
    return event.model_copy(update={"aggregateversion": version})


async def publish(jetstream, event: CloudEvent, *, msg_id: str | None = None, subject: str = SUBJECT) -> None:
    await jetstream.publish(
        subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id or event.id}
    )


async def record_handled(uow: UnitOfWork, event: CloudEvent) -> None:
    await uow.session.execute(text("INSERT INTO handled (event_id) VALUES (:id)"), {"id": event.id})


async def handled_ids(sessions) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(text("SELECT event_id FROM handled ORDER BY id"))).all())


async def dead_letters(sessions) -> list[DeadLetter]:
    async with sessions() as session:
        return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.failed_at))).all())


async def inbox_ids(sessions, key: str) -> set[str]:
    async with sessions() as session:
        rows = await session.scalars(select(InboxEntry.event_id).where(InboxEntry.consumer == key))
        return set(rows.all())


def outcome(metrics: KitMetrics, consumer: str, name: str) -> float:
    value: float = metrics.consumer_handled.labels(consumer=consumer, outcome=name)._value.get()
    return value


def probe_spec(name: str, handler=record_handled, **options: Any) -> ConsumerSpec:
    return ConsumerSpec(name=name, domain="probe", subject="probe.>", handler=handler, **options)


@contextlib.asynccontextmanager
async def running(
    spec: ConsumerSpec, sessions, jetstream, metrics: KitMetrics | None = None
) -> AsyncIterator[ConsumerRunner]:
    """A runner of ``spec`` fetching in the background, as a service replica runs it."""
    runner = ConsumerRunner(spec, sessions=sessions, source="probe", metrics=metrics or KitMetrics("probe"))
    task = asyncio.create_task(runner.run(jetstream))
    try:
        await wait_until(lambda: runner.running or task.done())
        if task.done():
            task.result()
        yield runner
    finally:
        await runner.drain(timeout=10.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def consumer_settled(jetstream, name: str, delivered: int) -> bool:
    """The durable has delivered ``delivered`` stream messages and holds none unacknowledged."""
    try:
        info = await jetstream.consumer_info(STREAM, name)
    except nats.js.errors.NotFoundError:
        return False
    return bool(
        info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= delivered
    )


# -- source check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param({"source": "citygrid/case"}, id="another-services-source"),
        pytest.param({"type": "case.case.closed.v1"}, id="another-domains-type"),
        pytest.param({"source": "probe"}, id="a-source-outside-citygrid"),
    ],
)
async def test_an_event_whose_source_is_not_its_subjects_domain_is_dead_lettered_and_never_handled(
    sessions, jetstream, forge
):
    forged = probe_event(1).model_copy(update=forge)
    genuine = probe_event(2)
    await publish(jetstream, forged)
    await publish(jetstream, genuine)
    async with running(probe_spec("probe-forged"), sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-forged", 2))
    assert await handled_ids(sessions) == [genuine.id]
    [letter] = await dead_letters(sessions)
    assert letter.event_id == forged.id
    assert letter.deliveries == 1
    assert letter.error.startswith("event.forged_source: ")
    assert await inbox_ids(sessions, "probe-forged") == {genuine.id}


async def test_an_event_id_too_long_for_the_inbox_is_dead_lettered_at_once(sessions, jetstream):
    event = probe_event(1).model_copy(update={"id": "x" * 101})
    await publish(jetstream, event, msg_id="long-id")
    async with running(probe_spec("probe-long-id"), sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-long-id", 1))
    [letter] = await dead_letters(sessions)
    assert (letter.event_id, letter.deliveries) == (None, 1)
    assert letter.error.startswith("event.invalid_id: ")
    assert await handled_ids(sessions) == []


async def test_the_source_every_service_stamps_passes_the_check(sessions, jetstream):
    # What the outbox writes for a service publishing ``probe.…`` (source_of("probe")).
    event = probe_event(1)
    assert event.source == "citygrid/probe"
    await publish(jetstream, event)
    async with running(probe_spec("probe-genuine"), sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-genuine", 1))
    assert await handled_ids(sessions) == [event.id]
    assert await dead_letters(sessions) == []


# -- stale versions -----------------------------------------------------------------------------


async def test_an_old_version_arriving_after_a_newer_one_is_acked_and_changes_nothing(sessions, jetstream):
    metrics = KitMetrics("probe")
    v2 = probe_event(2, aggregate="thing-a", version=2)
    v1 = probe_event(1, aggregate="thing-a", version=1)
    v3 = probe_event(3, aggregate="thing-a", version=3)
    other = probe_event(4, aggregate="thing-b", version=1)
    unversioned = probe_event(5, aggregate="thing-a", version=None)
    await publish(jetstream, v2)
    await publish(jetstream, v1)  # late: a retry of an older step
    await publish(jetstream, v2, msg_id="copy-of-v2")  # a redelivery of the newest
    await publish(jetstream, other)
    await publish(jetstream, unversioned)  # published before versions existed
    await publish(jetstream, v3)
    await publish(jetstream, v1, msg_id="copy-of-v1")  # the stale one again
    spec = probe_spec("probe-mirror", mirrors=True)
    async with running(spec, sessions, jetstream, metrics):
        await wait_until(lambda: consumer_settled(jetstream, "probe-mirror", 7))

    assert await handled_ids(sessions) == [v2.id, other.id, unversioned.id, v3.id]
    assert outcome(metrics, "probe-mirror", "stale") == 1
    assert outcome(metrics, "probe-mirror", "duplicate") == 2
    async with sessions() as session:
        versions = dict(
            (await session.execute(select(AggregateVersion.aggregate_id, AggregateVersion.version))).all()
        )
    assert versions == {"thing-a": 3, "thing-b": 1}
    # The stale event is in the inbox, so its redelivery was a plain duplicate.
    assert v1.id in await inbox_ids(sessions, "probe-mirror")


async def test_a_consumer_that_does_not_mirror_handles_every_version(sessions, jetstream):
    newer, older = probe_event(2, aggregate="a", version=2), probe_event(1, aggregate="a", version=1)
    await publish(jetstream, newer)
    await publish(jetstream, older)
    async with running(probe_spec("probe-plain"), sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-plain", 2))
    assert await handled_ids(sessions) == [newer.id, older.id]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AggregateVersion)) == 0


# -- filter before the inbox --------------------------------------------------------------------


def not_thirteen(event: CloudEvent) -> bool:
    return event.data.get("n") != 13


async def test_an_event_the_consumer_does_not_want_is_acked_without_an_inbox_row(sessions, jetstream):
    metrics = KitMetrics("probe")
    unwanted, wanted = probe_event(13), probe_event(14)
    await publish(jetstream, unwanted)
    await publish(jetstream, wanted)
    async with running(probe_spec("probe-picky", wants=not_thirteen), sessions, jetstream, metrics):
        await wait_until(lambda: consumer_settled(jetstream, "probe-picky", 2))
    assert await inbox_ids(sessions, "probe-picky") == {wanted.id}
    assert await handled_ids(sessions) == [wanted.id]
    assert outcome(metrics, "probe-picky", "skipped") == 1


async def test_an_unwanted_event_is_decided_without_the_database(sessions, jetstream, infrastructure):
    spec = probe_spec("probe-picky-offline", wants=not_thirteen)
    # The durable exists (made by a replica that reached the database); this replica's database
    # is unreachable, and unwanted events still leave it at once.
    await ConsumerRunner(spec, sessions=sessions, source="probe").ensure_durable(jetstream)
    unreachable = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    metrics = KitMetrics("probe")
    for _ in range(3):
        await publish(jetstream, probe_event(13))
    try:
        async with running(spec, create_sessionmaker(unreachable), jetstream, metrics):
            await wait_until(lambda: consumer_settled(jetstream, "probe-picky-offline", 3))
    finally:
        await unreachable.dispose()
    assert outcome(metrics, "probe-picky-offline", "skipped") == 3


def case_event(origin_service: str | None) -> CloudEvent:
    data = CaseHandled(
        case_id=uuid.uuid4(),
        number="440106-20261126-0001",
        status=CaseStatus.HANDLED,
        category_code="20101",
        district_code="440106",
        location=GeoPoint.of(113.3245, 23.1291),
        source=CaseSource.VIDEO,
        version=5,
        actor="unit-1",
        occurred_at=datetime.now(UTC),
        origin=None if origin_service is None else Origin(service=origin_service, reference="r-1"),  # type: ignore[arg-type]
    )
    return envelope(data, source="case", aggregate_id=str(data.case_id), aggregate_version=data.version)


def test_visions_case_consumer_takes_only_the_cases_vision_raised_and_applies_them_in_version_order():
    from services.vision.events import case_consumer

    spec = case_consumer(60.0)
    assert spec.wants is not None
    assert spec.mirrors
    assert spec.wants(case_event("vision"))
    assert not spec.wants(case_event("gas"))
    assert not spec.wants(case_event(None))


# -- under load: slow handlers, transient errors, drain ------------------------------------------


async def test_a_handler_slower_than_ack_wait_is_handled_once_and_not_redelivered(sessions, jetstream):
    calls: list[int] = []

    async def slow(uow: UnitOfWork, event: CloudEvent) -> None:
        calls.append(event.data["n"])
        if event.data["n"] == 1:
            await asyncio.sleep(3.0)  # three ack_waits: the work itself is slow
        await record_handled(uow, event)

    metrics = KitMetrics("probe")
    spec = probe_spec("probe-slow", handler=slow, ack_wait=1.0, batch_size=10)
    slow_event, queued_behind = probe_event(1), probe_event(2)
    await publish(jetstream, slow_event)
    await publish(jetstream, queued_behind)
    # Two replicas: one of them is idle and would receive any message the server gives up on.
    async with (
        running(spec, sessions, jetstream, metrics),
        running(spec, sessions, jetstream, metrics),
    ):
        await wait_until(lambda: consumer_settled(jetstream, "probe-slow", 2))
        info = await jetstream.consumer_info(STREAM, "probe-slow")
    assert sorted(calls) == [1, 2]
    assert sorted(await handled_ids(sessions)) == sorted([slow_event.id, queued_behind.id])
    assert info.delivered.consumer_seq == 2  # each message delivered once: no redelivery
    assert outcome(metrics, "probe-slow", "duplicate") == 0


async def hold_row_lock(runner_database: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(to_libpq_url(runner_database))
    await connection.execute("INSERT INTO probe_lock (id) VALUES (1) ON CONFLICT DO NOTHING")
    await connection.execute("BEGIN")
    await connection.execute("SELECT id FROM probe_lock WHERE id = 1 FOR UPDATE")
    return connection


@pytest.mark.parametrize("cause", ["deadlock-from-the-driver", "lock-not-available-from-postgres"])
async def test_a_deadlock_class_error_is_retried_past_max_deliver_without_a_dead_letter_and_then_succeeds(
    sessions, jetstream, runner_database, cause
):
    metrics = KitMetrics("probe")
    attempts = 0
    blocker: asyncpg.Connection | None = None
    if cause == "lock-not-available-from-postgres":
        blocker = await hold_row_lock(runner_database)

    async def contended(uow: UnitOfWork, event: CloudEvent) -> None:
        nonlocal attempts
        attempts += 1
        if cause == "deadlock-from-the-driver":
            if attempts <= 6:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        else:  # a real 55P03 through SQLAlchemy while the test holds the row
            await uow.session.execute(text("SELECT id FROM probe_lock WHERE id = 1 FOR UPDATE NOWAIT"))
        await record_handled(uow, event)

    spec = probe_spec("probe-contended", handler=contended, max_deliver=2, transient_backoff=(0.05,))
    event = probe_event(1)
    await publish(jetstream, event)
    try:
        async with running(spec, sessions, jetstream, metrics):
            await wait_until(lambda: outcome(metrics, "probe-contended", "retried_transient") >= 4)
            if blocker is not None:
                await blocker.execute("ROLLBACK")
            await wait_until(lambda: consumer_settled(jetstream, "probe-contended", 1))
    finally:
        if blocker is not None:
            await blocker.close()
    assert await handled_ids(sessions) == [event.id]
    assert await dead_letters(sessions) == []
    assert attempts > spec.max_deliver + 1
    assert outcome(metrics, "probe-contended", "retried") == 0
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboxFailure)) == 0


async def test_transient_errors_do_not_use_up_max_deliver_but_real_failures_do(sessions, jetstream):
    metrics = KitMetrics("probe")
    attempts = 0

    async def failing(uow: UnitOfWork, event: CloudEvent) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise asyncpg.exceptions.SerializationError("could not serialize access")
        raise RuntimeError("a bug")

    spec = probe_spec(
        "probe-mixed", handler=failing, max_deliver=2, backoff=(0.05,), transient_backoff=(0.05,)
    )
    event = probe_event(1)
    await publish(jetstream, event)
    async with running(spec, sessions, jetstream, metrics):
        await wait_until(lambda: consumer_settled(jetstream, "probe-mixed", 1))
    [letter] = await dead_letters(sessions)
    assert letter.error == "RuntimeError: a bug"
    assert letter.deliveries == 5  # three transient retries, then the two counted failures
    assert (
        outcome(metrics, "probe-mixed", "retried_transient"),
        outcome(metrics, "probe-mixed", "retried"),
    ) == (
        3,
        1,
    )
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboxFailure)) == 0


async def test_a_handler_that_hangs_fails_after_its_timeout_instead_of_holding_its_message_forever(
    sessions, jetstream
):
    async def hangs(uow: UnitOfWork, event: CloudEvent) -> None:
        await record_handled(uow, event)
        await asyncio.Event().wait()

    spec = probe_spec("probe-hung", handler=hangs, max_deliver=1, handler_timeout=0.2, ack_wait=1.0)
    event = probe_event(1)
    await publish(jetstream, event)
    async with running(spec, sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-hung", 1))
    [letter] = await dead_letters(sessions)
    assert letter.error == "HandlerTimedOut: event.handler_timed_out: not done after 0.2s"
    assert await handled_ids(sessions) == []  # its transaction was rolled back


async def real_error(sessions, *statements: str) -> BaseException:
    async with sessions() as session:
        try:
            async with session.begin():
                for statement in statements:
                    await session.execute(text(statement))
        except Exception as error:
            return error
    raise AssertionError(f"{statements!r} did not fail")


async def test_database_errors_are_classified_by_sqlstate_through_the_sqlalchemy_wrapper(
    sessions, runner_database
):
    blocker = await hold_row_lock(runner_database)
    try:
        locked = await real_error(sessions, "SELECT id FROM probe_lock WHERE id = 1 FOR UPDATE NOWAIT")
    finally:
        await blocker.close()
    timed_out = await real_error(sessions, "SET LOCAL statement_timeout = '10ms'", "SELECT pg_sleep(1)")
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO probe_lock (id) VALUES (7)"))
    duplicate = await real_error(sessions, "INSERT INTO probe_lock (id) VALUES (7)")
    assert isinstance(locked, DBAPIError)
    assert locked.orig.sqlstate == "55P03"  # type: ignore[union-attr]
    assert isinstance(timed_out, DBAPIError)
    assert timed_out.orig.sqlstate == "57014"  # type: ignore[union-attr]
    assert isinstance(duplicate, IntegrityError)

    transient = [
        locked,
        timed_out,
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "Connection refused"),
    ]
    permanent = [duplicate, RuntimeError("a bug"), InvalidInput("no such category"), KeyError("n")]
    assert [is_transient(error) for error in transient] == [True] * len(transient)
    assert [is_transient(error) for error in permanent] == [False] * len(permanent)


async def test_drain_gives_back_the_messages_not_started_and_a_restart_handles_them(
    sessions, jetstream, runner_database, infrastructure
):
    started, release = asyncio.Event(), asyncio.Event()

    async def held_up(uow: UnitOfWork, event: CloudEvent) -> None:
        if event.data["n"] == 1 and not release.is_set():
            started.set()
            await release.wait()
        await record_handled(uow, event)

    # Ten minutes of ack_wait: only a message given back can reach the restarted process in time.
    spec = probe_spec("probe-drain", handler=held_up, batch_size=10, ack_wait=600.0)
    events = [probe_event(n) for n in range(1, 6)]
    for event in events:
        await publish(jetstream, event)
    settings = ServiceSettings(
        service_name="probe",
        environment="test",
        database_url=runner_database,
        nats_url=infrastructure.nats_url,
        internal_token_public_key=infrastructure.public_key,
    )
    app = create_service_app(settings, title="probe", consumers=[spec])
    serving = serve_app(app)
    await serving.__aenter__()
    try:
        await wait_until(started.is_set)
        runner: ConsumerRunner = app.state.kit.consumers["probe-drain"]
        # The process is told to stop while the first event is in the handler, four behind it.
        stopping = asyncio.create_task(serving.__aexit__(None, None, None))
        await wait_until(lambda: runner.draining)
        release.set()
        await stopping
    except BaseException:
        release.set()
        await serving.__aexit__(None, None, None)
        raise
    assert await handled_ids(sessions) == [events[0].id]  # the one in hand was finished
    assert outcome(app.state.kit.metrics, "probe-drain", "given_back") == 4

    restarted = create_service_app(settings, title="probe", consumers=[spec])
    async with serve_app(restarted):
        await wait_until(lambda: consumer_settled(jetstream, "probe-drain", 5))
    assert sorted(await handled_ids(sessions)) == sorted(event.id for event in events)
    assert outcome(restarted.state.kit.metrics, "probe-drain", "handled") == 4


# -- renaming a consumer -----------------------------------------------------------------------------


async def test_a_renamed_consumer_keeps_its_inbox_and_does_not_handle_what_it_already_handled(
    sessions, jetstream
):
    old_spec = probe_spec("probe-v1", inbox="probe-stable")
    history = [probe_event(n) for n in range(1, 4)]
    for event in history:
        await publish(jetstream, event)
    async with running(old_spec, sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-v1", 3))
    assert await inbox_ids(sessions, "probe-stable") == {event.id for event in history}
    async with sessions() as session:
        newest = await session.scalar(
            select(func.max(InboxEntry.handled_at)).where(InboxEntry.consumer == "probe-stable")
        )
    assert newest is not None

    calls: list[str] = []

    async def renamed_handler(uow: UnitOfWork, event: CloudEvent) -> None:
        calls.append(event.id)
        await record_handled(uow, event)

    metrics = KitMetrics("probe")
    new_spec = probe_spec("probe-v2", handler=renamed_handler, inbox="probe-stable")
    fresh = probe_event(4)
    async with running(new_spec, sessions, jetstream, metrics):
        info = await jetstream.consumer_info(STREAM, "probe-v2")
        await publish(jetstream, fresh)
        await wait_until(lambda: consumer_settled(jetstream, "probe-v2", 4))
    assert calls == [fresh.id]
    assert info.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert info.config.opt_start_time == newest - RESUME_OVERLAP
    # Inside the overlap the inbox drops what the old name handled: delivered, not handled.
    assert outcome(metrics, "probe-v2", "duplicate") == 3


async def test_a_consumer_whose_inbox_key_has_handled_nothing_reads_the_whole_stream(sessions, jetstream):
    history = [probe_event(n) for n in range(1, 4)]
    for event in history:
        await publish(jetstream, event)
    async with running(probe_spec("probe-new"), sessions, jetstream):
        info = await jetstream.consumer_info(STREAM, "probe-new")
        await wait_until(lambda: consumer_settled(jetstream, "probe-new", 3))
    assert info.config.deliver_policy == DeliverPolicy.ALL
    assert await handled_ids(sessions) == [event.id for event in history]


async def test_an_existing_durable_is_bound_as_it_is(sessions, jetstream):
    spec = probe_spec("probe-existing")
    await publish(jetstream, probe_event(1))
    async with running(spec, sessions, jetstream):
        await wait_until(lambda: consumer_settled(jetstream, "probe-existing", 1))
    before = await jetstream.consumer_info(STREAM, "probe-existing")
    async with running(spec, sessions, jetstream):  # the inbox now has a row: a new durable would start later
        after = await jetstream.consumer_info(STREAM, "probe-existing")
    assert after.created == before.created
    assert after.config.deliver_policy == DeliverPolicy.ALL


# -- retention -----------------------------------------------------------------------------------


async def seed_tables(sessions) -> None:
    """Rows on both sides of a 30-day retention in every table the job purges."""
    old, recent = timedelta(days=31), timedelta(days=29)
    async with sessions() as session, session.begin():
        now = await session.scalar(select(func.now()))
        assert now is not None
        session.add_all(
            [InboxEntry(consumer="c", event_id=f"old-{i}", handled_at=now - old) for i in range(7)]
            + [InboxEntry(consumer="c", event_id=f"recent-{i}", handled_at=now - recent) for i in range(2)]
        )
        session.add_all(
            [
                AggregateVersion(consumer="c", aggregate_id="old-a", version=3, updated_at=now - old),
                AggregateVersion(consumer="c", aggregate_id="old-b", version=1, updated_at=now - old),
                AggregateVersion(consumer="c", aggregate_id="recent", version=9, updated_at=now - recent),
                InboxFailure(consumer="c", event_id="old", failures=1, last_error="x", updated_at=now - old),
                InboxFailure(
                    consumer="c", event_id="recent", failures=1, last_error="x", updated_at=now - recent
                ),
            ]
        )
        session.add_all(
            [
                StoredResponse(
                    principal="p", key=key, fingerprint="f", status_code=201, body={}, created_at=now - age
                )
                for key, age in (("old-1", old), ("old-2", old), ("recent", recent))
            ]
        )
        for name, created, published in (
            ("old-published", old, old),
            ("old-published-2", old, old),
            ("old-unpublished", old, None),  # still to be relayed: never purged
            ("recent-published", recent, recent),
        ):
            await session.execute(
                insert(OutboxMessage).values(
                    event_id=uuid.uuid5(uuid.NAMESPACE_URL, name),
                    subject=SUBJECT,
                    payload={"name": name},
                    created_at=now - created,
                    published_at=None if published is None else now - published,
                )
            )
        session.add_all(
            [
                DeadLetter(
                    consumer="c",
                    event_id=name,
                    subject=SUBJECT,
                    payload=b"{}",
                    error="e",
                    deliveries=1,
                    failed_at=now - timedelta(days=60),
                    replayed_at=replayed,
                )
                for name, replayed in (
                    ("old-replayed", now - old),
                    ("old-pending", None),  # not replayed yet: kept however old
                    ("recent-replayed", now - recent),
                )
            ]
        )


async def remaining(sessions) -> dict[str, set[str]]:
    async with sessions() as session:
        return {
            "inbox": set((await session.scalars(select(InboxEntry.event_id))).all()),
            "aggregate_versions": set((await session.scalars(select(AggregateVersion.aggregate_id))).all()),
            "inbox_failures": set((await session.scalars(select(InboxFailure.event_id))).all()),
            "idempotency_keys": set((await session.scalars(select(StoredResponse.key))).all()),
            "outbox": {row["name"] for row in (await session.scalars(select(OutboxMessage.payload))).all()},
            "dead_letters": {
                name
                for name in (await session.scalars(select(DeadLetter.event_id))).all()
                if name is not None
            },
        }


async def test_the_retention_job_deletes_only_rows_past_the_retention_oldest_first_in_batches(sessions):
    await seed_tables(sessions)
    rounds = []
    while True:
        deleted = await purge_once(sessions, retention=timedelta(days=30), batch_size=3)
        rounds.append(deleted["inbox"])
        assert all(count <= 3 for count in deleted.values())
        if not any(deleted.values()):
            break
    assert rounds == [3, 3, 1, 0]
    assert await remaining(sessions) == {
        "inbox": {"recent-0", "recent-1"},
        "aggregate_versions": {"recent"},
        "inbox_failures": {"recent"},
        "idempotency_keys": {"recent"},
        "outbox": {"old-unpublished", "recent-published"},
        "dead_letters": {"old-pending", "recent-replayed"},
    }


async def test_a_full_batch_makes_the_job_run_again_at_once(sessions):
    await seed_tables(sessions)
    job = retention_job(sessions, retention=timedelta(days=30), batch_size=3)
    assert await job.run() >= job.batch_size  # inbox had 7: more to come
    assert await job.run() >= job.batch_size
    assert await job.run() < job.batch_size  # the last inbox row, and nothing else left
    assert await job.run() == 0


def test_a_retention_shorter_than_the_stream_keeps_events_is_refused(sessions):
    with pytest.raises(ValueError, match="shorter than the stream"):
        retention_job(sessions, retention=timedelta(days=7))


async def waiting_on_a_lock(sessions, query_start: str) -> bool:
    async with sessions() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE :prefix AND pid <> pg_backend_pid()"
            ),
            {"prefix": f"{query_start}%"},
        )
    return bool(count)


async def test_two_replicas_running_the_retention_at_once_never_both_delete(sessions, runner_database):
    await seed_tables(sessions)
    job = retention_job(sessions, retention=timedelta(days=30), batch_size=100)
    # Hold one old inbox row so the first replica's round stops mid-way, inside its transaction.
    blocker = await asyncpg.connect(to_libpq_url(runner_database))
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM inbox WHERE event_id = 'old-0' FOR UPDATE")
        first = asyncio.ensure_future(job.run())
        await wait_until(lambda: waiting_on_a_lock(sessions, "DELETE FROM inbox"))
        second = await job.run()  # the other replica, while the first is mid-round
        assert second == 0
        await blocker.execute("ROLLBACK")
        assert await first == 7 + 2 + 1 + 2 + 2 + 1
    finally:
        await blocker.close()
    assert await remaining(sessions) == {
        "inbox": {"recent-0", "recent-1"},
        "aggregate_versions": {"recent"},
        "inbox_failures": {"recent"},
        "idempotency_keys": {"recent"},
        "outbox": {"old-unpublished", "recent-published"},
        "dead_letters": {"old-pending", "recent-replayed"},
    }


async def test_a_round_finds_the_lock_of_another_replica_and_deletes_nothing(sessions, runner_database):
    await seed_tables(sessions)
    other_replica = await asyncpg.connect(to_libpq_url(runner_database))
    try:
        await other_replica.execute("BEGIN")
        assert await other_replica.fetchval("SELECT pg_try_advisory_xact_lock($1)", RETENTION_LOCK)
        assert await purge_once(sessions, retention=timedelta(days=30)) == {}
        await other_replica.execute("ROLLBACK")
    finally:
        await other_replica.close()
    assert sum((await purge_once(sessions, retention=timedelta(days=30))).values()) == 15


@pytest.mark.parametrize("purge", PURGES, ids=[purge.name for purge in PURGES])
async def test_every_retention_delete_goes_through_an_index(sessions, purge):
    cutoff: ColumnElement[datetime] = literal_column("now() - interval '30 days'", DateTime(timezone=True))
    statement = purge.statement(cutoff, 5000).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    async with sessions() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.scalars(text(f"EXPLAIN {statement}"))).all())
    assert "Seq Scan" not in plan, plan
