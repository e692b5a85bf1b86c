"""The kit's messaging guarantees on real PostgreSQL and NATS: outbox, relays, inbox, dead letters."""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

import httpx
import nats
import nats.js.errors
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.auth import Principal
from citygrid.db import KitBase, UnitOfWork, create_sessionmaker, unit_of_work
from citygrid.errors import InvalidInput
from citygrid.events import CloudEvent, EventData, envelope
from citygrid.http import create_service_app
from citygrid.inbox import ConsumerSpec, DeadLetter
from citygrid.messaging import ensure_stream, stream_config
from citygrid.outbox import OutboxMessage, OutboxRelay
from citygrid.settings import ServiceSettings, to_asyncpg_url
from citygrid.testing import (
    Infrastructure,
    delete_streams,
    serve_app,
    stream_events,
    truncate_all,
    wait_until,
)


class ProbeHappened(EventData):
    subject: ClassVar[str] = "probe.thing.happened"
    n: int


@pytest.fixture(scope="session")
def kit_database(infrastructure: Infrastructure) -> str:
    from citygrid.devstack.servers import create_databases, database_url

    async def prepare() -> str:
        await create_databases(infrastructure.server_url, ["test_kit"])
        url = database_url(infrastructure.server_url, "test_kit")
        engine = create_async_engine(to_asyncpg_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(KitBase.metadata.create_all)
            await connection.execute(
                text("CREATE TABLE IF NOT EXISTS handled (id serial PRIMARY KEY, event_id text NOT NULL)")
            )
        await engine.dispose()
        return url

    return asyncio.run(prepare())


@pytest.fixture
async def sessions(kit_database: str, infrastructure: Infrastructure):
    await truncate_all(kit_database)
    await delete_streams(infrastructure.nats_url)
    engine = create_async_engine(to_asyncpg_url(kit_database))
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def nats_client(infrastructure: Infrastructure):
    client = await nats.connect(infrastructure.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def jetstream(nats_client):
    js = nats_client.jetstream()
    await ensure_stream(js, stream_config("probe"))
    return js


async def handled_count(sessions) -> int:
    async with sessions() as session:
        return int((await session.execute(text("SELECT count(*) FROM handled"))).scalar_one())


async def dead_letter_count(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


async def record_handled(uow: UnitOfWork, event: CloudEvent) -> None:
    await uow.session.execute(text("INSERT INTO handled (event_id) VALUES (:id)"), {"id": event.id})


def probe_event(n: int) -> CloudEvent:
    return envelope(ProbeHappened(n=n), source="probe", aggregate_id=f"thing-{n}", aggregate_version=1)


def kit_app(infrastructure: Infrastructure, database: str, consumers: list[ConsumerSpec]):
    settings = ServiceSettings(
        service_name="probe",
        environment="test",
        database_url=database,
        nats_url=infrastructure.nats_url,
        internal_token_public_key=infrastructure.public_key,
    )
    return create_service_app(settings, title="probe", consumers=consumers)


def admin_headers(infrastructure: Infrastructure, scopes=("admin",)) -> dict[str, str]:
    principal = Principal(subject="ops:1", kind="person", name="ops", scopes=frozenset(scopes))
    return {"X-CityGrid-Principal": infrastructure.token(principal, audience="probe")}


async def test_an_event_delivered_twice_is_handled_once_and_both_deliveries_are_acked(
    infrastructure, kit_database, sessions, jetstream
):
    spec = ConsumerSpec(name="probe-dedup", domain="probe", subject="probe.>", handler=record_handled)
    app = kit_app(infrastructure, kit_database, [spec])
    event = probe_event(1)
    payload = event.model_dump_json().encode()
    # Two copies in the stream (distinct message ids, so JetStream keeps both): a redelivery.
    await jetstream.publish("probe.thing.happened", payload, headers={"Nats-Msg-Id": "copy-1"})
    await jetstream.publish("probe.thing.happened", payload, headers={"Nats-Msg-Id": "copy-2"})
    async with serve_app(app):
        runtime = app.state.kit

        async def drained() -> bool:
            try:
                info = await jetstream.consumer_info("PROBE", "probe-dedup")
            except nats.js.errors.NotFoundError:
                return False  # the service declares its consumer once it has reached NATS
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 2

        await wait_until(drained)
        assert await handled_count(sessions) == 1
        outcomes = runtime.metrics.consumer_handled
        assert outcomes.labels(consumer="probe-dedup", outcome="handled")._value.get() == 1
        assert outcomes.labels(consumer="probe-dedup", outcome="duplicate")._value.get() == 1


async def test_a_handler_that_always_fails_ends_as_a_dead_letter_and_a_replay_after_the_fix_handles_it(
    infrastructure, kit_database, sessions, jetstream
):
    broken = True

    async def fragile(uow: UnitOfWork, event: CloudEvent) -> None:
        if broken:
            raise RuntimeError("downstream table missing")
        await record_handled(uow, event)

    spec = ConsumerSpec(
        name="probe-fragile",
        domain="probe",
        subject="probe.>",
        handler=fragile,
        max_deliver=3,
        backoff=(0.05,),
    )
    app = kit_app(infrastructure, kit_database, [spec])
    event = probe_event(2)
    await jetstream.publish(
        "probe.thing.happened", event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
    )
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        await wait_until(lambda: dead_letter_count(sessions))
        async with sessions() as session:
            letter = (await session.scalars(select(DeadLetter))).one()
        assert letter.deliveries == 3
        assert letter.event_id == event.id
        assert "downstream table missing" in letter.error
        assert app.state.kit.metrics.dead_letters.labels(consumer="probe-fragile")._value.get() == 1
        info = await jetstream.consumer_info("PROBE", "probe-fragile")
        assert info.num_ack_pending == 0  # given up and acknowledged, not stuck
        assert await handled_count(sessions) == 0

        listed = await client.get("/v1/admin/dead-letters", headers=admin_headers(infrastructure))
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["items"]] == [str(letter.id)]

        refused = await client.post(
            f"/v1/admin/dead-letters/{letter.id}/replay", headers=admin_headers(infrastructure, scopes=())
        )
        assert refused.status_code == 403

        still_broken = await client.post(
            f"/v1/admin/dead-letters/{letter.id}/replay", headers=admin_headers(infrastructure)
        )
        assert still_broken.status_code == 409
        assert still_broken.json()["code"] == "dead_letter.replay_failed"

        broken = False
        replayed = await client.post(
            f"/v1/admin/dead-letters/{letter.id}/replay", headers=admin_headers(infrastructure)
        )
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["handled"] is True
        assert await handled_count(sessions) == 1

        again = await client.post(
            f"/v1/admin/dead-letters/{letter.id}/replay", headers=admin_headers(infrastructure)
        )
        assert again.json()["handled"] is False
        assert await handled_count(sessions) == 1
        pending = await client.get(
            "/v1/admin/dead-letters", params={"pending_only": "true"}, headers=admin_headers(infrastructure)
        )
        assert pending.json()["items"] == []


async def test_an_event_the_handler_judges_unprocessable_is_dead_lettered_at_its_first_delivery(
    infrastructure, kit_database, sessions, jetstream
):
    class UnknownThing(InvalidInput):
        code = "probe.unknown_thing"

    async def judging(uow: UnitOfWork, event: CloudEvent) -> None:
        await record_handled(uow, event)
        raise UnknownThing(f"no thing {event.subject}")

    # Backoff long enough that a retry could not happen before the test ends.
    spec = ConsumerSpec(
        name="probe-judging", domain="probe", subject="probe.>", handler=judging, backoff=(600.0,)
    )
    app = kit_app(infrastructure, kit_database, [spec])
    event = probe_event(3)
    await jetstream.publish(
        "probe.thing.happened", event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
    )
    async with serve_app(app):
        await wait_until(lambda: dead_letter_count(sessions))
    async with sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert letter.deliveries == 1
    assert letter.error == "probe.unknown_thing: no thing thing-3"
    assert await handled_count(sessions) == 0  # the handler's writes rolled back with it


async def test_a_message_that_is_not_a_cloudevent_is_dead_lettered_at_once(
    infrastructure, kit_database, sessions, jetstream
):
    spec = ConsumerSpec(name="probe-strict", domain="probe", subject="probe.>", handler=record_handled)
    app = kit_app(infrastructure, kit_database, [spec])
    await jetstream.publish("probe.thing.happened", b"{not json")
    async with serve_app(app):
        await wait_until(lambda: dead_letter_count(sessions))
    async with sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert letter.deliveries == 1
    assert letter.payload == b"{not json"
    assert "not a CloudEvent" in letter.error


async def write_outbox(sessions, count: int, wake=None) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 100):
        async with unit_of_work(sessions, source="probe", on_events_committed=wake) as uow:
            for n in range(start, min(count, start + 100)):
                ids.append(uow.publish(ProbeHappened(n=n), aggregate_id=f"thing-{n}", version=1).id)
    return ids


async def test_two_relays_on_one_outbox_publish_each_event_exactly_once(
    infrastructure, sessions, jetstream, nats_client
):
    ids = await write_outbox(sessions, 500)
    relays = [OutboxRelay(sessions=sessions, nats=nats_client, batch_size=20) for _ in range(2)]
    published: list[list[str]] = [[], []]
    while True:
        # Both try at the same moment, every round: the relay lock lets one of them publish.
        rounds = await asyncio.gather(*(relay.relay_once() for relay in relays))
        if not any(rounds):
            break
        for mine, acked in zip(published, rounds, strict=True):
            mine.extend(str(event_id) for event_id in acked)
    first, second = set(published[0]), set(published[1])
    assert not first & second
    assert len(published[0]) + len(published[1]) == 500
    assert first | second == set(ids)
    events = await stream_events(infrastructure.nats_url, "PROBE", at_least=500)
    assert len(events) == 500
    assert {e.id for e in events} == set(ids)
    async with sessions() as session:
        unpublished = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        )
    assert unpublished == 0


async def test_a_relay_woken_by_its_own_process_commits_publishes_in_commit_order(
    infrastructure, sessions, jetstream, nats_client
):
    relay = OutboxRelay(sessions=sessions, nats=nats_client, poll_seconds=30.0, min_poll_seconds=30.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # the relay is idle now: its 30 s poll cannot be what publishes
        ids = await write_outbox(sessions, 30, wake=relay.wake)
        events = await stream_events(infrastructure.nats_url, "PROBE", at_least=30, timeout=10)
        assert [e.id for e in events] == ids
        assert [json.loads(e.model_dump_json())["data"]["n"] for e in events] == list(range(30))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_relay_that_crashed_after_publishing_but_before_marking_publishes_no_duplicate(
    infrastructure, sessions, jetstream, nats_client
):
    ids = await write_outbox(sessions, 50)
    # The crashed relay's work: every event reached JetStream, none was marked published.
    async with sessions() as session:
        rows = (
            await session.execute(
                select(OutboxMessage.event_id, OutboxMessage.subject, OutboxMessage.payload)
            )
        ).all()
    for row in rows:
        await jetstream.publish(
            row.subject, json.dumps(row.payload).encode(), headers={"Nats-Msg-Id": str(row.event_id)}
        )
    restarted = OutboxRelay(sessions=sessions, nats=nats_client, batch_size=20)
    while await restarted.relay_once():
        pass
    events = await stream_events(infrastructure.nats_url, "PROBE", at_least=50)
    assert len(events) == 50
    assert [e.id for e in events] == ids
