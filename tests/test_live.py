"""The live feed of case changes, followed through the gateway on real NATS: filters, order, resume, drops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.devstack.servers import free_port
from citygrid.events import CloudEvent
from citygrid.live import (
    InvalidLastEventId,
    LiveEvent,
    LiveFeed,
    NatsClientIncompatible,
    parse_last_event_id,
    resume_ordered_consumer_after,
    sse_frame,
)
from citygrid.messaging import ensure_stream, stream_config
from citygrid.metrics import KitMetrics
from citygrid.testing import SseReader, serve_app, wait_until
from gateway.main import create_app as create_gateway_app
from tests.conftest import Stack, case_settings, gateway_settings, register_consumers
from tests.test_case_extensions import consumer
from tests.test_case_flow import REPORT, report, step

LIVE = "/api/case/v1/cases/live"
SSE = {"Accept": "text/event-stream"}
CHANGE_FIELDS = {
    "type",
    "case_id",
    "number",
    "status",
    "category_code",
    "district_code",
    "unit",
    "version",
    "occurred_at",
}
YUEXIU = {**REPORT, "district_code": "440104", "location": {"type": "Point", "coordinates": [113.27, 23.13]}}


@contextlib.asynccontextmanager
async def follow(stack: Stack, consumer: str = "reader", **params: str) -> AsyncIterator[SseReader]:
    last_event_id = params.pop("last_event_id", None)
    headers = stack.as_(consumer, **SSE)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with stack.client.stream("GET", LIVE, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)


def case_feed(stack: Stack) -> LiveFeed:
    (feed,) = stack.case_runtime.live_feeds
    return feed


async def store_again(stack: Stack, sequence: int) -> int:
    """Store the event at ``sequence`` once more, as a relay re-publishing it after the stream's
    duplicate window would (another ``Nats-Msg-Id`` gets past JetStream's dedup); its new sequence."""
    client = await nats.connect(stack.infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        stored = await jetstream.get_msg("CASE", sequence)
        assert stored.subject is not None
        assert stored.data is not None
        msg_id = (stored.headers or {}).get("Nats-Msg-Id", "")
        ack = await jetstream.publish(stored.subject, stored.data, headers={"Nats-Msg-Id": f"{msg_id}-again"})
        again = await jetstream.get_msg("CASE", ack.seq)
    finally:
        await client.close()
    assert not ack.duplicate
    assert (
        CloudEvent.model_validate_json(again.data or b"").id == CloudEvent.model_validate_json(stored.data).id
    )
    return ack.seq


async def stored_at(stack: Stack, sequence: int) -> datetime:
    """When the stream stored the message at ``sequence`` (its own clock)."""
    client = await nats.connect(stack.infrastructure.nats_url)
    try:
        stored = await client.jetstream().get_msg("CASE", sequence)
    finally:
        await client.close()
    assert stored.time is not None
    return stored.time


async def metric(stack: Stack, sample: str) -> str:
    """The case service's sample line that starts with ``sample`` (``name{labels}``), or ''."""
    text = (await stack.client.get(f"{stack.case_url}/metrics")).text
    return next((line for line in text.splitlines() if line.startswith(sample + " ")), "")


@pytest.fixture
async def live_stack_factory(infrastructure, databases, clean):
    """The case service and the gateway with live-feed and timeout settings of the test's choosing."""

    @contextlib.asynccontextmanager
    async def start(case: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None):
        from services.case.main import create_app as create_case_app

        settings = case_settings(infrastructure, databases).model_copy(update=case or {})
        case_app = create_case_app(settings)
        async with serve_app(case_app) as case_url:
            gateway_app = create_gateway_app(
                gateway_settings(infrastructure, databases, case_url, **(gateway or {}))
            )
            api_keys = await register_consumers(databases["gateway"])
            async with (
                serve_app(gateway_app) as gateway_url,
                serve_app(gateway_app.state.internal_app) as gateway_metrics_url,
                httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
            ):
                running = Stack(
                    infrastructure, gateway_url, case_url, case_app, client, api_keys, gateway_metrics_url
                )
                await wait_until(lambda: case_feed(running).ready)
                yield running

    return start


@pytest.fixture
async def live(live_stack_factory) -> AsyncIterator[Stack]:
    async with live_stack_factory() as running:
        yield running


# -- following -------------------------------------------------------------------------------------


async def test_a_screen_following_a_district_receives_its_case_changes_only_and_in_order(live):
    async with follow(live, district="440106") as screen:
        tianhe = (await report(live)).json()["id"]
        yuexiu = (await report(live, body=YUEXIU)).json()["id"]
        assert (await step(live, yuexiu, "register", 1)).status_code == 200
        assert (await step(live, tianhe, "register", 1)).status_code == 200
        assert (await step(live, tianhe, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
        received = await screen.take(3)

    # Yuexiu's two changes came between Tianhe's in the stream; none reached this screen.
    assert [(e.json()["case_id"], e.json()["status"]) for e in received] == [
        (tianhe, "reported"),
        (tianhe, "registered"),
        (tianhe, "dispatched"),
    ]
    ids = [e.id for e in received]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    first = received[0].json()
    assert set(first) == CHANGE_FIELDS  # no reporter, description, note or actor
    assert first["type"] == "case.case.reported.v1"
    assert first["district_code"] == "440106"
    assert first["version"] == 1
    assert first["occurred_at"].endswith("+08:00")
    assert received[2].json()["unit"] == "tianhe-sanitation"


async def test_a_screen_following_a_unit_receives_only_the_changes_of_cases_dispatched_to_it(live):
    ours = (await report(live)).json()["id"]
    theirs = (await report(live)).json()["id"]
    for case_id in (ours, theirs):
        assert (await step(live, case_id, "register", 1)).status_code == 200
    live.api_keys["yuexiu-handler"] = await consumer(
        live, "yuexiu handler", ["handler"], unit="yuexiu-municipal"
    )
    async with follow(live, unit="tianhe-sanitation") as screen:
        assert (await step(live, theirs, "dispatch", 2, {"unit": "yuexiu-municipal"})).status_code == 200
        assert (await step(live, ours, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
        assert (await step(live, theirs, "accept", 3, consumer="yuexiu-handler")).status_code == 200
        assert (await step(live, ours, "accept", 3)).status_code == 200
        received = await screen.take(2)
    assert [(e.json()["case_id"], e.json()["status"]) for e in received] == [
        (ours, "dispatched"),
        (ours, "accepted"),
    ]


async def test_a_screen_without_filters_receives_every_change(live):
    async with follow(live) as screen:
        first = (await report(live)).json()["id"]
        second = (await report(live, body=YUEXIU)).json()["id"]
        received = await screen.take(2)
    assert [e.json()["case_id"] for e in received] == [first, second]


async def test_an_idle_stream_carries_heartbeat_comments(live_stack_factory):
    async with live_stack_factory(case={"live_heartbeat_seconds": 0.1}) as running, follow(running) as screen:
        assert await screen.comment() == "heartbeat"


# -- resuming --------------------------------------------------------------------------------------


async def test_a_screen_that_reconnects_with_last_event_id_receives_what_it_missed_exactly_once(live):
    case_id = (await report(live)).json()["id"]
    # The report's event has passed the feed before the screen opens, so the first change it sees
    # is the registration (the relay publishes after the report is answered).
    await wait_until(lambda: (case_feed(live).position or 0) >= 1)
    async with follow(live, district="440106") as screen:
        assert (await step(live, case_id, "register", 1)).status_code == 200
        (seen,) = await screen.take(1)
    await wait_until(lambda: not case_feed(live).listeners)

    # While the screen is away: two changes of its district, one of another.
    assert (await step(live, case_id, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
    await report(live, body=YUEXIU)
    assert (await step(live, case_id, "accept", 3)).status_code == 200
    # The feed has passed them all, so they come back from the stream, not from the live queue.
    await wait_until(lambda: (case_feed(live).position or 0) >= 5)

    async with follow(live, district="440106", last_event_id=str(seen.id)) as screen:
        missed = await screen.take(2)
        assert (await step(live, case_id, "handle", 4)).status_code == 200
        (after,) = await screen.take(1)
    assert [e.json()["status"] for e in missed] == ["dispatched", "accepted"]
    assert after.json()["status"] == "handled"
    ids = [seen.id, *(e.id for e in missed), after.id]
    assert ids == sorted(set(ids))  # increasing, none twice
    assert [e.json()["version"] for e in [*missed, after]] == [3, 4, 5]
    assert await metric(live, 'citygrid_live_replays_total{feed="cases"}') == (
        'citygrid_live_replays_total{feed="cases"} 1.0'
    )


async def test_a_long_absence_is_streamed_back_in_order_and_then_the_feed_goes_on_live(live):
    case_feed(live).replay_direct_limit = 0  # every resume takes the streaming path
    async with follow(live, district="440106") as screen:
        first = (await report(live)).json()["id"]
        (seen,) = await screen.take(1)
    await wait_until(lambda: not case_feed(live).listeners)
    missed = [(await report(live, body=body)).json()["id"] for body in (REPORT, YUEXIU, REPORT, REPORT)]
    await wait_until(lambda: (case_feed(live).position or 0) >= 5)

    async with follow(live, district="440106", last_event_id=str(seen.id)) as screen:
        replayed = await screen.take(3)
        latest = (await report(live)).json()["id"]
        (after,) = await screen.take(1)
    assert seen.json()["case_id"] == first
    assert [e.json()["case_id"] for e in replayed] == [missed[0], missed[2], missed[3]]
    assert after.json()["case_id"] == latest
    ids = [seen.id, *(e.id for e in replayed), after.id]
    assert ids == sorted(set(ids))


async def test_a_resume_the_stream_no_longer_holds_gets_a_gap_and_then_follows_live(live):
    case_id = (await report(live)).json()["id"]
    for action, version in [("register", 1), ("dispatch", 2)]:
        body = {"unit": "tianhe-sanitation"} if action == "dispatch" else None
        assert (await step(live, case_id, action, version, body)).status_code == 200
    client = await nats.connect(live.infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        await wait_until(lambda: _stream_holds(jetstream, 3))
        await jetstream.purge_stream("CASE", keep=1)  # the report and the registration expire
    finally:
        await client.close()
    await wait_until(lambda: (case_feed(live).position or 0) >= 3)

    async with follow(live, last_event_id="1") as screen:
        gap = await screen.next()
        assert (await step(live, case_id, "accept", 3)).status_code == 200
        (change,) = await screen.take(1)
    assert gap.event == "gap"
    assert gap.id is None
    assert gap.json()["requested_after"] == 1
    assert gap.json()["resumed_after"] == 3
    # The kept event 3 is not replayed after the gap: the client reloads, then only live ones follow.
    assert change.id == 4
    assert change.json()["status"] == "accepted"
    assert await metric(live, 'citygrid_live_gaps_total{feed="cases",reason="expired"}') == (
        'citygrid_live_gaps_total{feed="cases",reason="expired"} 1.0'
    )


async def _stream_holds(jetstream: Any, count: int) -> bool:
    info = await jetstream.stream_info("CASE")
    return bool(info.state.messages >= count)


async def test_a_last_event_id_the_feed_never_sent_is_said_so_and_the_feed_continues_live(live):
    async with follow(live, last_event_id="999999") as screen:
        gap = await screen.next()
        case_id = (await report(live)).json()["id"]
        (change,) = await screen.take(1)
    assert gap.event == "gap"
    assert gap.json()["requested_after"] == 999999
    assert change.json()["case_id"] == case_id


async def test_a_resume_further_behind_than_the_event_cap_gets_a_gap_and_then_live_events(
    live_stack_factory,
):
    async with live_stack_factory(case={"live_max_replay_events": 2}) as running:
        feed = case_feed(running)
        assert feed.max_replay_events == 2
        async with follow(running) as screen:
            await report(running)
            (seen,) = await screen.take(1)
        await wait_until(lambda: not feed.listeners)
        for _ in range(3):
            await report(running)
        await wait_until(lambda: feed.position == 4)

        # Three sequences behind, one more than the cap: a gap, then what happens from now on.
        async with follow(running, last_event_id=str(seen.id)) as screen:
            gap = await screen.next()
            latest = (await report(running)).json()["id"]
            (live_change,) = await screen.take(1)
        await wait_until(lambda: not feed.listeners)

        # Exactly as far behind as the cap: replayed.
        async with follow(running, last_event_id="3") as screen:
            replayed = await screen.take(2)
            newest = (await report(running)).json()["id"]
            (after,) = await screen.take(1)
        gaps = await metric(running, 'citygrid_live_gaps_total{feed="cases",reason="too_many_events"}')
        replays = await metric(running, 'citygrid_live_replays_total{feed="cases"}')

    assert gap.event == "gap"
    assert gap.json() == {
        "detail": gap.json()["detail"],
        "requested_after": 1,
        "resumed_after": 4,
    }
    assert live_change.id == 5
    assert live_change.json()["case_id"] == latest
    assert [e.event for e in replayed] == ["message", "message"]
    assert [e.id for e in replayed] == [4, 5]
    assert after.id == 6
    assert after.json()["case_id"] == newest
    assert gaps.endswith(" 1.0")
    assert replays.endswith(" 1.0")


async def test_a_resume_whose_first_missed_event_is_older_than_the_age_cap_gets_a_gap_and_then_live_events(
    live_stack_factory,
):
    async with live_stack_factory(case={"live_max_replay_seconds": 60.0}) as running:
        feed = case_feed(running)
        assert feed.max_replay_seconds == 60.0
        async with follow(running) as screen:
            await report(running)
            (seen,) = await screen.take(1)
        await wait_until(lambda: not feed.listeners)
        missed = (await report(running)).json()["id"]
        await wait_until(lambda: feed.position == 2)
        missed_at = await stored_at(running, 2)

        # The replica's clock says the first missed event is 61 s old: a gap, then live events.
        feed.clock = lambda: missed_at + timedelta(seconds=61)
        async with follow(running, last_event_id=str(seen.id)) as screen:
            gap = await screen.next()
            latest = (await report(running)).json()["id"]
            (live_change,) = await screen.take(1)
        await wait_until(lambda: not feed.listeners)

        # 59 s old: within the cap, so it is replayed (with what came since).
        feed.clock = lambda: missed_at + timedelta(seconds=59)
        async with follow(running, last_event_id=str(seen.id)) as screen:
            replayed = await screen.take(2)
        gaps = await metric(running, 'citygrid_live_gaps_total{feed="cases",reason="too_old"}')

    assert gap.event == "gap"
    assert gap.json()["requested_after"] == 1
    assert gap.json()["resumed_after"] == 2
    assert (live_change.id, live_change.json()["case_id"]) == (3, latest)
    assert [(e.event, e.id) for e in replayed] == [("message", 2), ("message", 3)]
    assert [e.json()["case_id"] for e in replayed] == [missed, latest]
    assert gaps.endswith(" 1.0")


async def test_an_event_stored_twice_reaches_a_following_screen_once(live):
    async with follow(live) as screen:
        first = (await report(live)).json()["id"]
        (original,) = await screen.take(1)
        assert await store_again(live, original.id or 0) == 2
        second = (await report(live)).json()["id"]
        (following,) = await screen.take(1)
    assert original.json()["case_id"] == first
    assert (following.id, following.json()["case_id"]) == (3, second)  # not the copy at 2
    assert await metric(live, 'citygrid_live_duplicate_events_total{feed="cases"}') == (
        'citygrid_live_duplicate_events_total{feed="cases"} 1.0'
    )


@pytest.mark.parametrize("direct_limit", [64, 0], ids=["fetched-one-by-one", "streamed"])
async def test_an_event_stored_twice_is_replayed_once_even_when_the_client_had_it_before_it_left(
    live, direct_limit
):
    feed = case_feed(live)
    feed.replay_direct_limit = direct_limit
    async with follow(live) as screen:
        await report(live)
        (seen,) = await screen.take(1)
    await wait_until(lambda: not feed.listeners)
    b = (await report(live)).json()["id"]
    await wait_until(lambda: feed.position == 2)
    assert await store_again(live, 2) == 3  # a copy of b, which the screen has not seen
    c = (await report(live)).json()["id"]
    await wait_until(lambda: feed.position == 4)
    assert await store_again(live, 1) == 5  # a copy of the event the screen saw before it left
    await wait_until(lambda: feed.position == 5)

    async with follow(live, last_event_id=str(seen.id)) as screen:
        replayed = await screen.take(2)
        d = (await report(live)).json()["id"]
        (after,) = await screen.take(1)
    assert [(e.id, e.json()["case_id"]) for e in replayed] == [(2, b), (4, c)]
    assert (after.id, after.json()["case_id"]) == (6, d)


async def test_a_replica_that_did_not_see_an_event_stored_twice_still_replays_it_once(live):
    feed = case_feed(live)
    async with follow(live) as screen:
        await report(live)
        (seen,) = await screen.take(1)
    await wait_until(lambda: not feed.listeners)
    b = (await report(live)).json()["id"]
    await wait_until(lambda: feed.position == 2)
    assert await store_again(live, 2) == 3
    c = (await report(live)).json()["id"]
    await wait_until(lambda: feed.position == 4)
    feed._recent.clear()  # as a replica started after these events would be

    async with follow(live, last_event_id=str(seen.id)) as screen:
        replayed = await screen.take(2)
        d = (await report(live)).json()["id"]
        (after,) = await screen.take(1)
    assert [(e.id, e.json()["case_id"]) for e in replayed] == [(2, b), (4, c)]
    assert (after.id, after.json()["case_id"]) == (5, d)


async def test_the_feed_picks_up_after_nats_restarts_on_a_quiet_stream_without_losing_repeating_or_rereading(
    stack_factory, private_nats
):
    # Events stored before this replica started: its feed follows from after them and receives
    # nothing before the restart, so nats-py alone would recreate its consumer from sequence 1.
    await _store_before_the_service_starts(private_nats.url, count=3)
    async with stack_factory(nats_url=private_nats.url) as running:
        feed = case_feed(running)
        await wait_until(lambda: feed.ready)
        assert feed.position == 3
        read = _record_what_the_feed_reads(feed)
        async with follow(running) as screen:
            await asyncio.to_thread(private_nats.stop)
            during = [(await report(running, body=YUEXIU)).json()["id"] for _ in range(2)]
            await asyncio.to_thread(private_nats.start)
            after = [await screen.next(timeout=60) for _ in range(2)]
            later = (await report(running)).json()["id"]
            (last,) = await screen.take(1)
    assert [e.json()["case_id"] for e in after] == during
    assert [e.id for e in after] == [4, 5]
    assert (last.id, last.json()["case_id"]) == (6, later)
    assert read == [4, 5, 6]  # the recreated consumer began after the feed's position, not at 1


async def _store_before_the_service_starts(nats_url: str, *, count: int) -> None:
    client = await nats.connect(nats_url)
    try:
        jetstream = client.jetstream()
        await ensure_stream(jetstream, stream_config("case"))
        for n in range(count):
            envelope = CloudEvent(
                id=f"earlier-{n}",
                source="citygrid/case",
                type="case.case.reported.v1",
                time=datetime.now(UTC),
            )
            await jetstream.publish(
                "case.case.reported",
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": envelope.id},
            )
    finally:
        await client.close()


def _record_what_the_feed_reads(feed: LiveFeed) -> list[int]:
    """The stream sequences the feed's consumer delivers from now on, re-deliveries included."""
    read: list[int] = []
    dispatch = feed._dispatch

    def recording(message: Any) -> None:
        read.append(message.metadata.sequence.stream)
        dispatch(message)

    feed._dispatch = recording  # type: ignore[method-assign]
    return read


async def _nothing() -> None:
    return None


def _ordered_state(**attributes: Any) -> SimpleNamespace:
    """A stand-in for nats-py's ordered-consumer state, with the attributes a test gives it."""
    return SimpleNamespace(reset_ordered_consumer=_nothing, **attributes)


async def test_nats_py_still_keeps_an_ordered_consumers_resume_point_where_the_feed_sets_it(
    infrastructure, clean
):
    """Pins the private nats-py state the feed relies on: this fails first when nats-py changes it."""
    client = await nats.connect(infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        await ensure_stream(jetstream, stream_config("pin"))
        for n in range(3):
            await jetstream.publish("pin.thing.done", f"{n}".encode())
        subscription = await jetstream.subscribe(
            "pin.>",
            stream="PIN",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=4),
        )
        state = subscription._sub._jsi
        assert state is not None
        assert state._sseq == 0  # nothing delivered yet: a reset would start at sequence 1
        resume_ordered_consumer_after(subscription, 3)
        assert state._sseq == 3
        # What nats-py does when it finds the consumer gone (a NATS restart): recreate it after _sseq.
        await state.reset_ordered_consumer(state._sseq + 1)
        await jetstream.publish("pin.thing.done", b"3")
        message = await subscription.next_msg(timeout=10)
        assert message.metadata.sequence.stream == 4
        assert message.data == b"3"
        await subscription.unsubscribe()
    finally:
        await client.close()


@pytest.mark.parametrize(
    "subscription",
    [
        pytest.param(SimpleNamespace(), id="no-inner-subscription"),
        pytest.param(SimpleNamespace(_sub=SimpleNamespace()), id="no-jsi"),
        pytest.param(SimpleNamespace(_jsi=_ordered_state(_sseq=0), _sub=SimpleNamespace()), id="jsi-moved"),
        pytest.param(SimpleNamespace(_sub=SimpleNamespace(_jsi=_ordered_state())), id="no-sseq"),
        pytest.param(
            SimpleNamespace(_sub=SimpleNamespace(_jsi=_ordered_state(_sseq="0"))), id="sseq-not-int"
        ),
        pytest.param(
            SimpleNamespace(_sub=SimpleNamespace(_jsi=SimpleNamespace(_sseq=0))), id="no-reset-method"
        ),
    ],
)
async def test_a_nats_py_without_the_resume_point_stops_the_feed_at_start_up_with_an_error(
    subscription, caplog
):
    class JetStream:
        subscribed = 0

        async def stream_info(self, name: str) -> Any:
            return SimpleNamespace(state=SimpleNamespace(last_seq=7))

        async def subscribe(self, *args: Any, **kwargs: Any) -> Any:
            self.subscribed += 1
            subscription.unsubscribe = _nothing
            return subscription

    jetstream = JetStream()
    feed = LiveFeed("cases", "case", "case.case.>", KitMetrics("case"))
    with caplog.at_level(logging.ERROR, logger="citygrid.live"), pytest.raises(NatsClientIncompatible):
        await asyncio.wait_for(feed.run(jetstream), timeout=5)  # type: ignore[arg-type]
    assert jetstream.subscribed == 1  # not retried every second
    assert not feed.ready  # new screens get 503 live.unavailable
    assert "_sub._jsi._sseq" in caplog.text


# -- slow and departed clients ---------------------------------------------------------------------


async def test_a_client_that_falls_behind_is_dropped_while_others_keep_receiving(live):
    feed = case_feed(live)
    stalled = feed.open(lambda item: True)  # a client that never reads, with room for two events
    stalled.queue = asyncio.Queue(2)
    async with follow(live) as screen:
        created = [(await report(live)).json()["id"] for _ in range(4)]
        received = await screen.take(4)
        await wait_until(lambda: stalled.dropped)
    assert [e.json()["case_id"] for e in received] == created
    assert stalled.queue.get_nowait() is None  # its stream ends at once; the browser reconnects
    metrics = (await live.client.get(f"{live.case_url}/metrics")).text
    assert 'citygrid_live_dropped_clients_total{feed="cases"} 1.0' in metrics
    feed.close(stalled)


async def test_a_departed_client_releases_its_stream_and_does_not_block_the_others(live):
    feed = case_feed(live)
    async with follow(live) as staying:
        gone = live.client.stream("GET", LIVE, headers=live.as_("reader", **SSE))
        response = await gone.__aenter__()
        assert response.status_code == 200
        await wait_until(lambda: len(feed.listeners) == 2)
        await gone.__aexit__(None, None, None)  # the browser tab closes
        await wait_until(lambda: len(feed.listeners) == 1)
        case_id = (await report(live)).json()["id"]
        (change,) = await staying.take(1)
    assert change.json()["case_id"] == case_id
    await wait_until(lambda: not feed.listeners)
    metrics = (await live.client.get(f"{live.case_url}/metrics")).text
    assert 'citygrid_live_streams{feed="cases"} 0.0' in metrics


async def test_an_event_stream_outlives_the_gateways_read_timeout(live_stack_factory):
    async with (
        live_stack_factory(
            case={"live_heartbeat_seconds": 60.0}, gateway={"upstream_timeout": 1.0}
        ) as running,
        follow(running) as screen,
    ):
        await asyncio.sleep(2.5)  # quiet for longer than the read timeout: no byte crosses the gateway
        # Reported on the service itself: the gateway's short timeout is for the stream, not for this.
        clerk = Principal(
            subject="consumer:test",
            kind="consumer",
            name="clerk",
            roles=frozenset({"operator"}),
            scopes=frozenset({"cases:write"}),
        )
        created = await running.client.post(
            f"{running.case_url}/v1/cases",
            json=REPORT,
            headers={PRINCIPAL_HEADER: running.infrastructure.token(clerk, "case")},
        )
        assert created.status_code == 201, created.text
        (change,) = await screen.take(1)
    assert change.json()["case_id"] == created.json()["id"]


async def test_an_event_stream_is_counted_by_route_template_but_kept_out_of_the_latency_histogram(live):
    async with follow(live, district="440106") as screen:
        await report(live)
        await screen.take(1)
    await wait_until(lambda: not case_feed(live).listeners)
    service = (await live.client.get(f"{live.case_url}/metrics")).text
    assert (
        'http_requests_total{method="GET",route="/v1/cases/live",service="case",status="200"} 1.0' in service
    )
    assert (
        'route="/v1/cases/live"'
        not in service.split("http_request_duration_seconds", 1)[1].split("# HELP", 1)[0]
    )

    async def gateway_counted() -> bool:
        gateway = (await live.client.get(f"{live.gateway_metrics_url}/metrics")).text
        return 'method="GET",route="/api/case/{path:path}",service="gateway",status="200"' in gateway

    await wait_until(gateway_counted)


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        pytest.param({"district": "tianhe"}, SSE, 422, "validation_failed", id="district-not-a-code"),
        pytest.param({"district": "999999"}, SSE, 422, "validation_failed", id="unknown-district"),
        pytest.param({"unit": "x" * 101}, SSE, 422, "validation_failed", id="unit-too-long"),
        pytest.param(
            {}, {**SSE, "Last-Event-ID": "abc"}, 400, "live.invalid_last_event_id", id="id-not-a-number"
        ),
        pytest.param({}, {**SSE, "Last-Event-ID": "-3"}, 400, "live.invalid_last_event_id", id="id-negative"),
        pytest.param({}, {**SSE, "Last-Event-ID": "9" * 30}, 400, "live.invalid_last_event_id", id="id-huge"),
        pytest.param({}, {"Accept": "application/json"}, 406, "http.not_acceptable", id="not-an-sse-client"),
    ],
)
async def test_a_bad_live_request_is_refused_with_a_problem(live, params, headers, status, code):
    response = await live.client.get(LIVE, params=params, headers=live.as_("reader", **headers))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert not case_feed(live).listeners


async def test_the_live_feed_is_served_only_with_the_gateways_principal(live):
    response = await live.client.get(f"{live.case_url}/v1/cases/live", headers=SSE)
    assert response.status_code == 401
    assert response.json()["code"] == "auth.missing_internal_token"


async def test_streams_over_the_replicas_cap_are_refused_with_503_until_one_closes(live_stack_factory):
    async with live_stack_factory(case={"live_max_streams": 1}) as running:
        async with follow(running):
            refused = await running.client.get(LIVE, headers=running.as_("reader", **SSE))
            assert refused.status_code == 503
            assert refused.json()["code"] == "live.too_many_streams"
            assert refused.headers["retry-after"] == "5"
        await wait_until(lambda: not case_feed(running).listeners)
        async with follow(running) as screen:
            case_id = (await report(running)).json()["id"]
            (change,) = await screen.take(1)
        assert change.json()["case_id"] == case_id


async def test_a_feed_not_connected_to_nats_answers_503_problem(stack_factory):
    async with stack_factory(nats_url=f"nats://127.0.0.1:{free_port()}") as running:
        response = await running.client.get(LIVE, headers=running.as_("reader", **SSE))
    assert response.status_code == 503
    assert response.json()["code"] == "live.unavailable"


def test_a_listener_takes_only_what_its_filter_selects_and_is_dropped_when_its_queue_is_full():
    from citygrid.events import CloudEvent
    from citygrid.live import Listener

    def event(sequence: int, district: str) -> LiveEvent:
        envelope = CloudEvent.model_validate(
            {"id": str(sequence), "source": "t", "type": "t.v1", "time": "2026-01-01T00:00:00Z"}
            | {"data": {"district_code": district}}
        )
        return LiveEvent(sequence, "case.case.reported", envelope)

    listener = Listener(
        matches=lambda item: item.event.data["district_code"] == "440106",
        queue=asyncio.Queue(2),
        last_sent=0,
        replay_to=0,
        resume_after=None,
    )
    assert listener.offer(event(1, "440104"))
    assert listener.offer(event(2, "440106"))
    assert listener.offer(event(3, "440106"))
    assert listener.queue.qsize() == 2
    assert not listener.offer(event(4, "440106"))
    assert listener.dropped
    assert listener.queue.get_nowait() is None
    assert listener.offer(event(5, "440106"))  # nothing more is queued for a dropped client
    assert listener.queue.empty()


@pytest.mark.parametrize("value", ["١٢", "1.5", "0x10", "1 2", "+1"])
def test_a_last_event_id_that_is_not_plain_ascii_digits_is_refused(value):
    with pytest.raises(InvalidLastEventId):
        parse_last_event_id(value)


def test_a_last_event_id_is_read_as_the_stream_sequence_and_a_blank_one_as_none():
    assert parse_last_event_id(" 42 ") == 42
    assert parse_last_event_id("") is None
    assert parse_last_event_id(None) is None


def test_an_sse_frame_carries_every_line_of_its_data_and_ends_with_a_blank_line():
    assert sse_frame('{"a":1}\nsecond', event_id=7, event="gap") == (
        'id: 7\nevent: gap\ndata: {"a":1}\ndata: second\n\n'
    )


def test_an_event_is_rendered_once_however_many_clients_it_goes_to() -> None:
    rendered: list[int] = []

    def render(item: LiveEvent) -> str:
        rendered.append(item.sequence)
        return '{"n": 7}'

    item = LiveEvent(
        7,
        "case.case.reported",
        CloudEvent(id="e-7", source="citygrid/case", type="case.case.reported.v1", time=datetime.now(UTC)),
    )
    frames = {item.frame(render) for _ in range(1000)}

    assert frames == {sse_frame('{"n": 7}', event_id=7)}
    assert rendered == [7]
