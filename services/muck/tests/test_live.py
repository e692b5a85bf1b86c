"""The live map feed (``GET /v1/live``) on real PostgreSQL and NATS: positions in a box, thinned, from
every replica; violations by district and box, resumed with Last-Event-ID; bad input, slow clients.
Then the thinning, the box and the fan-out on their own, without I/O."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from citygrid.events import CloudEvent, envelope
from citygrid.live import LiveEvent, LiveFeed, sse_frame
from citygrid.metrics import KitMetrics
from citygrid.testing import Infrastructure, SseReader, wait_until
from contract.common import GeoPoint
from contract.muck import TransportViolation, ViolationDetected
from services.muck.events import NATS_IDENTITY
from services.muck.live.api import PositionEvent, ViolationEvent, named_violation, render_violation, selects
from services.muck.live.feed import Box, LivePositions, PositionClient, Thinning, parse_box, position_data
from services.muck.main import create_app
from services.muck.positions.latest import Latest, LatestPositions
from services.muck.tests.conftest import PLATFORM, READER, TIANHE, Muck, muck_settings, truck

YUEXIU = "440104"
LIVE = "/v1/live"
BOX = "113.30,23.10,113.40,23.16"
INSIDE = (113.36, 23.13)
WEST_OF_BOX = (113.20, 23.13)
NORTH_OF_BOX = (113.36, 23.30)
POSITION_FIELDS = {"plate", "at", "lon", "lat", "speed_kmh", "direction", "load"}


def plate(number: int) -> str:
    return str(truck(number)["plate"])


# -- reading a stream ------------------------------------------------------------------------------


async def positions_until(stream: SseReader, last_plate: str) -> list[dict[str, Any]]:
    """The position events up to and including the first one of ``last_plate``."""
    received = []
    while True:
        position = (await stream.next_of("position")).json()
        received.append(position)
        if position["plate"] == last_plate:
            return received


def sse_headers(
    muck: Muck, *, district: str | None = None, last_event_id: int | None = None
) -> dict[str, str]:
    headers = {**muck.as_(READER, district=district), "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


@contextlib.asynccontextmanager
async def follow(
    muck: Muck, *, district_bound: str | None = None, last_event_id: int | None = None, **params: str
) -> AsyncIterator[SseReader]:
    headers = sse_headers(muck, district=district_bound, last_event_id=last_event_id)
    async with muck.client.stream("GET", LIVE, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)


def violation_feed(muck: Muck) -> LiveFeed:
    return muck.runtime.live_feed("violations")


def live_positions(muck: Muck) -> LivePositions:
    live: LivePositions = muck.app.state.live
    return live


async def feed_ready(muck: Muck) -> Muck:
    await wait_until(lambda: violation_feed(muck).ready)
    return muck


@pytest.fixture
async def live(muck: Muck) -> Muck:
    return await feed_ready(muck)


# -- reporting -------------------------------------------------------------------------------------


def position(number: int, where: tuple[float, float] = INSIDE, at: datetime | None = None) -> dict[str, Any]:
    lon, lat = where
    return {
        "plate": plate(number),
        "at": (at or datetime.now(UTC).replace(microsecond=0)).isoformat(),
        "location": {"type": "Point", "coordinates": [lon, lat]},
        "speed_kmh": 28.5,
        "direction": 180,
        "load": "full",
    }


async def report(muck: Muck, *positions: dict[str, Any]) -> None:
    response = await muck.post("/v1/positions", {"positions": list(positions)}, scopes=PLATFORM)
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == [], response.text


async def publish_violation(
    muck: Muck, district: str, where: tuple[float, float] = INSIDE, kind: str = "off_route"
) -> str:
    """A violation through the service's outbox, as the transport rules publish one; its id."""
    reference = str(uuid.uuid4())
    async with muck.runtime.uow() as uow:
        uow.publish(
            violation(reference, district, where, TransportViolation(kind)), aggregate_id=reference, version=1
        )
    return reference


def violation(
    reference: str, district: str, where: tuple[float, float], kind: TransportViolation
) -> ViolationDetected:
    return ViolationDetected(
        reference=reference,
        category_code="20312",
        district_code=district,
        location=GeoPoint.of(*where),
        description="Muck truck off its approved route.",
        detected_at=datetime(2026, 3, 15, 2, 0, tzinfo=UTC),
        plate="粤A00001D",
        kind=kind,
        severity="severe",
    )


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- positions -------------------------------------------------------------------------------------


async def test_a_map_gets_a_snapshot_of_the_trucks_in_its_box_then_live_positions_inside_it_only(
    live,
) -> None:
    await live.register_fleet(4)
    taken = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    await report(live, position(1, INSIDE, taken), position(2, WEST_OF_BOX, taken))

    async with follow(live, bbox=BOX, interval="300") as stream:
        first = await stream.next()
        snapshot_end = await stream.next()
        # Truck 3 stays north of the box, truck 2 drives into it, truck 4 appears in it.
        await report(live, position(3, NORTH_OF_BOX))
        await report(live, position(2, INSIDE))
        await report(live, position(4, INSIDE))
        received = await positions_until(stream, plate(4))

    assert first.event == "position"
    assert first.id is None  # positions are ephemeral: nothing to resume
    assert first.json() == {
        "plate": plate(1),
        "at": first.json()["at"],
        "lon": INSIDE[0],
        "lat": INSIDE[1],
        "speed_kmh": 28.5,
        "direction": 180,
        "load": "full",
    }
    assert moment(first.json()["at"]) == taken
    assert first.json()["at"].endswith("+08:00")
    assert (snapshot_end.event, snapshot_end.json()) == ("snapshot", {"trucks": 1, "truncated": False})
    assert [item["plate"] for item in received] == [plate(2), plate(4)]
    assert all(set(item) == POSITION_FIELDS for item in received)


async def test_many_reports_within_the_interval_reach_a_map_as_one_position_per_truck(live) -> None:
    await live.register_fleet(3)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=120)
    async with follow(live, interval="300") as stream:
        await stream.next_of("snapshot")
        for second in range(6):
            at = start + timedelta(seconds=second)
            await report(live, position(1, at=at), position(2, at=at))
        # Another truck's first report: once it arrives, every batch before it has been fanned out.
        await report(live, position(3, at=start))
        received = await positions_until(stream, plate(3))

    assert Counter(item["plate"] for item in received) == {plate(1): 1, plate(2): 1, plate(3): 1}
    assert {moment(item["at"]) for item in received} == {start}


async def test_the_newest_position_held_back_reaches_the_map_once_its_interval_is_over(live) -> None:
    await live.register_fleet(1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)
    async with follow(live, interval="1") as stream:
        await stream.next_of("snapshot")
        for second in range(4):
            await report(live, position(1, at=start + timedelta(seconds=second)))
        times: list[datetime] = []
        while not times or times[-1] < start + timedelta(seconds=3):
            times.append(moment((await stream.next_of("position")).json()["at"]))

    assert times[0] == start
    assert times == sorted(set(times))  # each newer than the one before
    assert times[-1] == start + timedelta(seconds=3)  # the last report was not thinned away


async def test_a_map_on_one_replica_sees_the_positions_another_replica_stored(muck_factory) -> None:
    async with muck_factory() as first, muck_factory() as second:
        await feed_ready(first)
        await second.register_fleet(2)
        await report(second, position(1))
        # The first replica has the second's latest positions: its subscription is live.
        await wait_until(lambda: first.app.state.positions.latest.get(plate(1)) is not None)
        async with follow(first, bbox=BOX) as stream:
            snapshot = await stream.next()
            await stream.next_of("snapshot")
            await report(second, position(2))
            (live_one,) = await positions_until(stream, plate(2))

    assert snapshot.event == "position"
    assert snapshot.json()["plate"] == plate(1)
    assert live_one["plate"] == plate(2)


async def test_a_slow_client_is_dropped_and_another_keeps_receiving_every_position(live) -> None:
    """The slow client is opened on the replica's fan-out itself and never read: a browser that
    stopped reading, without the megabytes of socket buffers in between."""
    fan_out = live_positions(live)
    fan_out.client_backlog = 3
    await live.register_fleet(6)
    async with follow(live, interval="300") as stream:
        await stream.next_of("snapshot")
        slow, _ = fan_out.open(None, 300)
        received = []
        for number in range(1, 7):
            await report(live, position(number))
            received += await positions_until(stream, plate(number))
        dropped = await live.client.get("/metrics")

    assert [item["plate"] for item in received] == [plate(number) for number in range(1, 7)]
    assert slow.dropped
    assert slow not in fan_out.clients
    assert await slow.next() is None
    assert 'citygrid_live_dropped_clients_total{feed="positions"} 1.0' in dropped.text


async def test_a_map_that_falls_behind_has_its_stream_ended_and_the_intake_goes_on(live) -> None:
    fan_out = live_positions(live)
    fan_out.client_backlog = 1
    await live.register_fleet(2)
    async with follow(live) as stream:
        await stream.next_of("snapshot")
        # Two trucks' positions in one batch: more than the client may have queued.
        await report(live, position(1), position(2))
        assert await stream.ends()
    await wait_until(lambda: not fan_out.clients and not violation_feed(live).listeners)
    await report(live, position(1, at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)))


async def test_an_idle_map_stream_carries_heartbeat_comments(muck_factory) -> None:
    async with muck_factory(live_heartbeat_seconds=0.1) as running:
        await feed_ready(running)
        async with follow(running) as stream:
            await stream.next_of("snapshot")
            with contextlib.suppress(TimeoutError):
                await stream.next(timeout=1.0)
    assert "heartbeat" in stream.comments


# -- violations ------------------------------------------------------------------------------------


async def test_violations_of_a_district_and_box_arrive_in_order_and_a_reconnect_resumes_them(live) -> None:
    feed = violation_feed(live)
    async with follow(live, district=TIANHE, bbox=BOX) as stream:
        await publish_violation(live, YUEXIU)
        await publish_violation(live, TIANHE, WEST_OF_BOX)
        ours = await publish_violation(live, TIANHE)
        seen = await stream.next_of("violation")
    await wait_until(lambda: not feed.listeners)

    # While the map is away: one of its own, one of another district.
    missed = await publish_violation(live, TIANHE, kind="overspeed")
    await publish_violation(live, YUEXIU)
    await wait_until(lambda: (feed.position or 0) >= 5)

    async with follow(live, district=TIANHE, bbox=BOX, last_event_id=seen.id) as stream:
        replayed = await stream.next_of("violation")
        after = await publish_violation(live, TIANHE)
        latest = await stream.next_of("violation")

    assert seen.json() == {
        "type": "muck.violation.detected.v1",
        "violation_id": ours,
        "plate": "粤A00001D",
        "kind": "off_route",
        "severity": "severe",
        "district_code": TIANHE,
        "lon": INSIDE[0],
        "lat": INSIDE[1],
        "detected_at": "2026-03-15T10:00:00+08:00",
    }
    assert seen.id == 3  # the third event of the MUCK stream: the first two were not this map's
    assert (replayed.json()["violation_id"], replayed.json()["kind"]) == (missed, "overspeed")
    assert replayed.id == 4
    assert latest.json()["violation_id"] == after
    assert latest.id == 6


async def test_a_district_bound_caller_follows_its_own_districts_violations_and_no_positions(live) -> None:
    await live.register_fleet(1)
    await report(live, position(1))
    async with follow(live, district_bound=TIANHE) as stream:
        await report(live, position(1, at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)))
        await publish_violation(live, YUEXIU)
        ours = await publish_violation(live, TIANHE)
        received = [await stream.next()]
        while received[-1].json().get("violation_id") != ours:
            received.append(await stream.next())

    # Neither the snapshot, nor the live position, nor the other district's violation (the transport
    # rules may have found one of the truck's own meanwhile).
    assert {event.event for event in received} == {"violation"}
    assert {event.json()["district_code"] for event in received} == {TIANHE}


async def test_a_district_the_caller_may_not_see_is_403(live) -> None:
    response = await live.client.get(
        LIVE, params={"district": YUEXIU}, headers=sse_headers(live, district=TIANHE)
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "auth.other_district"
    assert not live_positions(live).clients
    assert not violation_feed(live).listeners


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"bbox": "113.3,23.1,113.4"}, "muck.invalid_bbox"),
        ({"bbox": "113.3,23.1,113.4,23.2,1"}, "muck.invalid_bbox"),
        ({"bbox": "a,b,c,d"}, "muck.invalid_bbox"),
        ({"bbox": "nan,23.1,113.4,23.2"}, "muck.invalid_bbox"),
        ({"bbox": "113.3,23.1,inf,23.2"}, "muck.invalid_bbox"),
        ({"bbox": "113.4,23.1,113.3,23.2"}, "muck.invalid_bbox"),
        ({"bbox": "113.3,23.2,113.4,23.2"}, "muck.invalid_bbox"),
        ({"bbox": "-181,23.1,113.4,23.2"}, "muck.invalid_bbox"),
        ({"bbox": "113.3,-91,113.4,23.2"}, "muck.invalid_bbox"),
        ({"interval": "0"}, "validation_failed"),
        ({"interval": "301"}, "validation_failed"),
        ({"interval": "soon"}, "validation_failed"),
        ({"district": "999999"}, "validation_failed"),
    ],
)
async def test_a_bad_bbox_interval_or_district_is_422_problem_with_a_code(
    muck: Muck, params: dict[str, str], code: str
) -> None:
    response = await muck.client.get(LIVE, params=params, headers=sse_headers(muck))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


async def test_a_request_not_asking_for_an_event_stream_is_406(muck: Muck) -> None:
    response = await muck.get(LIVE, scopes=READER)
    assert response.status_code == 406
    assert response.json()["code"] == "http.not_acceptable"


def test_the_muck_nats_user_may_follow_the_stream_its_live_feed_follows(
    infrastructure: Infrastructure,
) -> None:
    app = create_app(muck_settings(infrastructure, "postgresql+asyncpg://unused@localhost/unused"))
    followed = {feed.domain for feed in app.state.kit.live_feeds}
    assert followed == {"muck"}
    assert followed <= set(NATS_IDENTITY.follows), "services/muck/events.py: NATS_IDENTITY needs follows"


# -- the thinning, the box and the fan-out, without I/O ---------------------------------------------

T0 = datetime(2026, 3, 15, 2, 0, tzinfo=UTC)


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def latest(number: int, seconds: float = 0, where: tuple[float, float] = INSIDE) -> Latest:
    at = T0 + timedelta(seconds=seconds)
    return Latest(plate(number), at, where[0], where[1], 30.0, 90, 3, at)


def test_a_box_is_four_finite_numbers_in_range_each_min_below_its_max() -> None:
    assert parse_box(" 113.3, 23.1 ,113.4,23.2") == Box(113.3, 23.1, 113.4, 23.2)
    assert parse_box("-180,-90,180,90") == Box(-180, -90, 180, 90)
    for bad in (
        "",
        "1,2,3",
        "1,2,3,4,5",
        "x,1,2,3",
        "1e2,1,2,3",
        "1_0,1,2,3",
        "NaN,1,2,3",
        "2,1,1,3",
        "1,3,2,3",
    ):
        with pytest.raises(ValueError, match="bbox"):
            parse_box(bad)
    box = parse_box(BOX)
    assert box.contains(*INSIDE)
    assert box.contains(113.30, 23.16)  # edges included
    assert not box.contains(*WEST_OF_BOX)
    assert not box.contains(*NORTH_OF_BOX)


def test_thinning_sends_a_trucks_first_position_holds_the_rest_and_releases_the_newest_when_due() -> None:
    thinning = Thinning(interval=5)
    assert thinning.offer(latest(1, 0), now=100.0)
    assert thinning.offer(latest(2, 0), now=100.0)  # each truck on its own
    assert not thinning.offer(latest(1, 1), now=101.0)
    assert not thinning.offer(latest(1, 3), now=102.0)
    assert not thinning.offer(latest(1, 2), now=103.0)  # older than the one held: not kept
    assert thinning.holding == 1
    assert thinning.next_due == 105.0
    assert thinning.due(now=104.9) == []
    assert thinning.due(now=105.0) == [latest(1, 3)]
    assert thinning.due(now=200.0) == []  # released once
    # The release counts as a send: the next one waits a full interval from it.
    assert not thinning.offer(latest(1, 4), now=106.0)
    assert thinning.offer(latest(1, 6), now=110.0)  # a newer one after the interval goes at once
    assert thinning.due(now=200.0) == []  # and what was held is not sent after it
    assert not thinning.offer(latest(1, 6), now=300.0)  # not newer than the one sent


def test_a_held_position_of_a_truck_that_left_the_box_is_forgotten() -> None:
    thinning = Thinning(interval=5)
    assert thinning.offer(latest(1, 0), now=0.0)
    assert not thinning.offer(latest(1, 1), now=1.0)
    assert thinning.due(now=5.0, keep=lambda held: False) == []
    assert thinning.holding == 0
    # Not counted as sent: the truck's next position in the box goes at once.
    assert thinning.offer(latest(1, 7), now=6.0)


def test_a_client_selects_the_positions_inside_its_box_thinned() -> None:
    client = PositionClient(parse_box(BOX), Thinning(interval=5), backlog=10)
    batch = [latest(1, 0), latest(2, 0, WEST_OF_BOX), latest(3, 0, NORTH_OF_BOX), latest(4, 0)]
    assert client.select(batch, now=0.0) == [latest(1, 0), latest(4, 0)]
    assert client.select([latest(1, 1), latest(4, 6)], now=1.0) == []  # within the interval
    city_wide = PositionClient(None, Thinning(interval=5), backlog=10)
    assert city_wide.select(batch, now=0.0) == batch


def test_a_position_event_is_the_trucks_latest_in_city_time() -> None:
    data = json.loads(position_data(Latest(plate(1), T0, 113.36, 23.13, 30.0, 90, None, T0)))
    assert data == {
        "plate": plate(1),
        "at": "2026-03-15T10:00:00+08:00",
        "lon": 113.36,
        "lat": 23.13,
        "speed_kmh": 30.0,
        "direction": 90,
        "load": None,
    }
    assert PositionEvent.model_validate(data).plate == plate(1)
    assert json.loads(position_data(latest(1)))["load"] == "full"


async def test_the_fan_out_costs_nothing_without_clients_and_queues_nothing() -> None:
    positions = LatestPositions()
    tasks: list[asyncio.Task[None]] = []
    fan_out = LivePositions.following(positions, KitMetrics("muck"), tasks)
    positions.apply([latest(1)])
    assert fan_out._batches.empty()
    assert tasks == []  # no fan-out task until a client connects


async def test_a_fan_out_drops_the_client_that_does_not_read_and_serves_the_one_that_does() -> None:
    positions = LatestPositions()
    tasks: list[asyncio.Task[None]] = []
    metrics = KitMetrics("muck")
    fan_out = LivePositions.following(positions, metrics, tasks)
    fan_out.client_backlog = 2
    try:
        reader, _ = fan_out.open(None, 300)
        idle, _ = fan_out.open(None, 300)
        frames: list[str] = []
        for number in range(1, 5):
            positions.apply([latest(number)])
            frame = await asyncio.wait_for(reader.next(), 5)
            assert frame is not None
            frames.append(frame)
    finally:
        await stop(tasks)
    assert [json.loads(frame.split("data: ")[1])["plate"] for frame in frames] == [
        plate(n) for n in range(1, 5)
    ]
    assert idle.dropped
    assert fan_out.clients == {reader}
    assert (
        metrics.registry.get_sample_value("citygrid_live_dropped_clients_total", {"feed": "positions"}) == 1
    )


async def test_a_fan_out_behind_drops_whole_batches_not_the_intake() -> None:
    positions = LatestPositions()
    metrics = KitMetrics("muck")
    fan_out = LivePositions.following(positions, metrics, [])
    client = PositionClient(None, Thinning(interval=1), backlog=10)
    fan_out.clients.add(client)  # a client, but no fan-out task draining the batches
    for second in range(100):
        positions.apply([latest(1, second)])
    assert fan_out._batches.full()
    dropped = metrics.registry.get_sample_value("citygrid_muck_live_batches_dropped_total")
    assert dropped == 100 - fan_out._batches.maxsize


async def test_a_snapshot_is_the_map_inside_the_box_and_bounded() -> None:
    positions = LatestPositions()
    positions.apply([latest(1), latest(2, where=WEST_OF_BOX), latest(3)])
    tasks: list[asyncio.Task[None]] = []
    fan_out = LivePositions.following(positions, KitMetrics("muck"), tasks)
    try:
        _, snapshot = fan_out.open(parse_box(BOX), 5)
        fan_out.snapshot_limit = 1
        _, bounded = fan_out.open(parse_box(BOX), 5)
    finally:
        await stop(tasks)
    assert {p.plate for p in snapshot.positions} == {plate(1), plate(3)}
    assert not snapshot.truncated
    assert len(bounded.positions) == 1
    assert bounded.truncated
    frames = "".join(bounded.frames())
    assert frames.endswith('event: snapshot\ndata: {"trucks": 1, "truncated": true}\n\n')


def test_a_violation_event_is_named_and_keeps_its_stream_sequence_as_id() -> None:
    assert named_violation(sse_frame('{"a":1}', event_id=42)) == 'id: 42\nevent: violation\ndata: {"a":1}\n\n'
    assert named_violation(": heartbeat\n\n") == ": heartbeat\n\n"
    gap = sse_frame("{}", event="gap")
    assert named_violation(gap) == gap


def test_violations_are_selected_by_district_and_box_and_rendered_without_the_description() -> None:
    def item(district: str, where: tuple[float, float]) -> LiveEvent:
        data = violation("v-1", district, where, TransportViolation.OFF_ROUTE)
        event: CloudEvent = envelope(data, source="muck", aggregate_id="v-1", aggregate_version=1)
        return LiveEvent(7, "muck.violation.detected", event)

    by_district = selects(TIANHE, None)
    assert by_district(item(TIANHE, WEST_OF_BOX))
    assert not by_district(item(YUEXIU, INSIDE))
    in_box = selects(None, parse_box(BOX))
    assert in_box(item(YUEXIU, INSIDE))
    assert not in_box(item(TIANHE, WEST_OF_BOX))
    rendered = json.loads(render_violation(item(TIANHE, INSIDE)))
    assert set(rendered) == set(ViolationEvent.model_fields)
    assert "description" not in rendered
