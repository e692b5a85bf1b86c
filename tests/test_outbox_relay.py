# ruff: noqa: F811 - the kit fixtures are imported from test_messaging
"""The outbox relay in production shape: several replicas, a backlog built while NATS was away,
rows the server refuses, and a standby taking over from the active relay."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import ClassVar

import httpx
import nats
from sqlalchemy import func, select, update

from citygrid.db import unit_of_work
from citygrid.events import EventData
from citygrid.messaging import ensure_stream, stream_config
from citygrid.outbox import RELAY_LOCK, OutboxMessage, OutboxRelay, outbox_state
from citygrid.testing import serve_app, stream_events, wait_until
from tests.test_messaging import admin_headers, jetstream, kit_app, kit_database, nats_client, sessions  # noqa: F401 - fixtures


class ProbeChanged(EventData):
    subject: ClassVar[str] = "probe.thing.changed"
    thing: str
    version: int


class StrayHappened(EventData):
    """An event whose subject no stream takes."""

    subject: ClassVar[str] = "stray.thing.happened"
    thing: str


async def write_changes(sessions, *, things: int, versions: int, seed: int = 7) -> int:
    """Commit ``versions`` changes of each of ``things`` aggregates, interleaved at random across
    aggregates (each aggregate's own changes in order), one transaction per change."""
    order = [thing for thing in range(things) for _ in range(versions)]
    random.Random(seed).shuffle(order)
    seen: dict[int, int] = {}
    for thing in order:
        seen[thing] = seen.get(thing, 0) + 1
        async with unit_of_work(sessions, source="probe") as uow:
            uow.publish(
                ProbeChanged(thing=f"thing-{thing}", version=seen[thing]),
                aggregate_id=f"thing-{thing}",
                version=seen[thing],
            )
    return len(order)


async def unpublished(sessions) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None), OutboxMessage.quarantined_at.is_(None))
            )
            or 0
        )


def versions_by_aggregate(events) -> dict[str, list[int]]:
    by_aggregate: dict[str, list[int]] = {}
    for event in events:
        assert event.subject is not None
        by_aggregate.setdefault(event.subject, []).append(int(event.aggregateversion or 0))
    return by_aggregate


async def test_three_relays_over_a_backlog_built_while_nats_was_down_keep_every_aggregates_order(
    sessions, private_nats
):
    # Three replicas: each its own connection (and its own reconnect buffer) and its own relay.
    clients = [
        await nats.connect(private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        for _ in range(3)
    ]
    await ensure_stream(clients[0].jetstream(timeout=5.0), stream_config("probe"))
    relays = [
        OutboxRelay(sessions=sessions, nats=client, batch_size=40, poll_seconds=0.05) for client in clients
    ]
    await asyncio.to_thread(private_nats.stop)
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        # The relays run (and fail) all through the outage while the backlog grows behind them.
        total = await write_changes(sessions, things=60, versions=6)
        assert await unpublished(sessions) == total
        await asyncio.to_thread(private_nats.start)

        async def drained() -> bool:
            return await unpublished(sessions) == 0

        await wait_until(drained, timeout=90)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    events = await stream_events(private_nats.url, "PROBE", at_least=total)
    assert len(events) == total
    assert len({event.id for event in events}) == total
    by_aggregate = versions_by_aggregate(events)
    assert len(by_aggregate) == 60
    for aggregate, versions in by_aggregate.items():
        assert versions == [1, 2, 3, 4, 5, 6], aggregate


async def test_only_one_relay_publishes_at_a_time_and_each_event_once(
    infrastructure, sessions, jetstream, nats_client
):
    total = await write_changes(sessions, things=50, versions=4)
    windows: list[tuple[float, float, int]] = []  # when each relay was publishing, and which one

    class Watched(OutboxRelay):
        async def _publish(self, rows):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            try:
                return await super()._publish(rows)
            finally:
                windows.append((started, time.monotonic(), id(self)))

    relays = [Watched(sessions=sessions, nats=nats_client, batch_size=20) for _ in range(3)]
    published: list[str] = []
    for _ in range(200):
        rounds = await asyncio.gather(*(relay.relay_once() for relay in relays))
        published.extend(str(event_id) for acked in rounds for event_id in acked)
        if await unpublished(sessions) == 0:
            break
    # Whoever holds the relay lock publishes; the others stand by. Two relays may publish within
    # one gathered round, one after the other (the first commits, the next takes the lock), but
    # never at once.
    windows.sort()
    overlapping = [
        (earlier, later)
        for index, later in enumerate(windows)
        for earlier in windows[:index]
        if later[0] < earlier[1] and earlier[2] != later[2]
    ]
    assert overlapping == []
    assert len(published) == total == len(set(published))
    events = await stream_events(infrastructure.nats_url, "PROBE", at_least=total)
    assert len(events) == total
    assert all(versions == [1, 2, 3, 4] for versions in versions_by_aggregate(events).values())


async def test_a_standby_relay_takes_over_when_the_active_one_stops(
    infrastructure, sessions, jetstream, nats_client
):
    total = await write_changes(sessions, things=100, versions=3)
    active = OutboxRelay(sessions=sessions, nats=nats_client, batch_size=10)
    standby = OutboxRelay(sessions=sessions, nats=nats_client, batch_size=10, poll_seconds=0.5)
    # The active relay publishes part of the backlog, then its replica goes away.
    assert len(await active.relay_once()) == 10
    assert active.active
    standby_task = asyncio.create_task(standby.run())
    try:
        stopped = time.monotonic()

        async def drained() -> bool:
            return await unpublished(sessions) == 0

        await wait_until(drained, timeout=60)
        took = time.monotonic() - stopped
        print(
            f"standby published the remaining {total - 10} events {took:.2f}s after the active relay stopped"
        )
        assert standby.active
    finally:
        standby_task.cancel()
        await asyncio.gather(standby_task, return_exceptions=True)
    events = await stream_events(infrastructure.nats_url, "PROBE", at_least=total)
    assert len(events) == total
    assert all(versions == [1, 2, 3] for versions in versions_by_aggregate(events).values())


async def test_a_relay_stands_by_while_another_holds_the_relay_lock(sessions, jetstream, nats_client):
    await write_changes(sessions, things=3, versions=1)
    relay = OutboxRelay(sessions=sessions, nats=nats_client)
    async with sessions() as session, session.begin():
        assert await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK)))
        assert await relay.relay_once() == []
        assert not relay.active
    assert len(await relay.relay_once()) == 3
    assert relay.active


async def allow_retry_now(sessions) -> None:
    """Time passing, for rows waiting out their backoff."""
    async with sessions() as session, session.begin():
        await session.execute(update(OutboxMessage).values(next_attempt_at=None))


async def test_a_refused_event_holds_back_only_its_aggregate_and_is_quarantined_after_max_attempts(
    infrastructure, sessions, jetstream, nats_client
):
    async with unit_of_work(sessions, source="probe") as uow:
        stray = uow.publish(StrayHappened(thing="a"), aggregate_id="thing-a", version=1)
        behind = uow.publish(ProbeChanged(thing="a", version=2), aggregate_id="thing-a", version=2)
        other = uow.publish(ProbeChanged(thing="b", version=1), aggregate_id="thing-b", version=1)
    relay = OutboxRelay(sessions=sessions, nats=nats_client, max_attempts=3)

    # The server refuses the stray event: its aggregate's next event waits, the other one goes.
    assert [str(i) for i in await relay.relay_once()] == [other.id]
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.event_id == uuid.UUID(stray.id)))
    assert row is not None
    assert (row.attempts, row.quarantined_at) == (1, None)
    assert row.next_attempt_at is not None
    assert "no stream takes this subject" in (row.last_error or "")
    # While it waits out its backoff, nothing of its aggregate goes either.
    assert await relay.relay_once() == []

    await allow_retry_now(sessions)
    assert await relay.relay_once() == []
    await allow_retry_now(sessions)
    # The third refusal quarantines it, and the aggregate's later event is free to go.
    assert [str(i) for i in await relay.relay_once()] == [behind.id]
    state = await outbox_state(sessions)
    assert (state.backlog, state.quarantined) == (0, 1)
    events = await stream_events(infrastructure.nats_url, "PROBE", at_least=2)
    assert [event.id for event in events] == [other.id, behind.id]


async def test_an_event_bound_to_another_stream_than_its_domains_is_refused_not_stored(
    sessions, jetstream, nats_client
):
    # An operator bound the stray subjects to some other stream: the relay names the stream it
    # expects (STRAY), so JetStream refuses instead of storing the event in the wrong place.
    await jetstream.add_stream(name="WRONG", subjects=["stray.>"])
    async with unit_of_work(sessions, source="probe") as uow:
        stray = uow.publish(StrayHappened(thing="a"), aggregate_id="thing-a", version=1)
    relay = OutboxRelay(sessions=sessions, nats=nats_client)
    assert await relay.relay_once() == []
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.event_id == uuid.UUID(stray.id)))
    assert row is not None
    assert row.attempts == 1
    assert "stream" in (row.last_error or "").lower()
    assert (await jetstream.stream_info("WRONG")).state.messages == 0


async def test_outbox_gauges_are_computed_from_the_table_whatever_the_relay_does(sessions):
    await write_changes(sessions, things=4, versions=2)
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboxMessage).values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 20))
        )
    state = await outbox_state(sessions)
    assert state.backlog == 8
    assert 20 * 60 - 5 < state.oldest_age_seconds < 20 * 60 + 60


async def test_an_admin_lists_quarantined_events_and_replays_one_into_the_queue(
    infrastructure, kit_database, sessions
):
    async with unit_of_work(sessions, source="probe") as uow:
        stray = uow.publish(StrayHappened(thing="a"), aggregate_id="thing-a", version=1)
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboxMessage).values(
                attempts=10, last_error="PublishRefused: no stream", quarantined_at=func.now()
            )
        )
    app = kit_app(infrastructure, kit_database, [])
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        listed = await client.get("/v1/admin/outbox/quarantined", headers=admin_headers(infrastructure))
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert (item["event_id"], item["attempts"], item["subject"]) == (stray.id, 10, "stray.thing.happened")

        refused = await client.get(
            "/v1/admin/outbox/quarantined", headers=admin_headers(infrastructure, scopes=("cases:read",))
        )
        assert refused.status_code == 403

        replayed = await client.post(
            f"/v1/admin/outbox/quarantined/{stray.id}/replay", headers=admin_headers(infrastructure)
        )
        assert replayed.status_code == 200, replayed.text
        state = await outbox_state(sessions)
        assert (state.backlog, state.quarantined) == (1, 0)

        again = await client.post(
            f"/v1/admin/outbox/quarantined/{stray.id}/replay", headers=admin_headers(infrastructure)
        )
        assert again.status_code == 404
        assert again.json()["code"] == "outbox.not_quarantined"
