"""Bin-side supervision on real PostgreSQL and NATS: the AI boxes' batches judged item by item, one
violation per point, kind and episode, published once; cameras' alarms at a point recorded as its
violations without a second case; violations listed by district; old records purged."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
import nats.js.errors
import pytest

from citygrid.events import CloudEvent, EventData, envelope
from citygrid.messaging import ensure_stream, stream_config
from citygrid.settings import to_libpq_url
from citygrid.testing import first_runs_done, stream_events, wait_until
from contract import vision
from contract.common import EvidenceRef, GeoPoint
from services.waste.domain.hours import CITY_TZ
from services.waste.retention import purge_once
from services.waste.tests.conftest import BOX, CAMERA, HUANGPU, READER, TIANHE, Waste, point

NOW = datetime.now(UTC).replace(microsecond=0)


def event(
    observed: str, at: datetime | None = None, point_code: str = "HP-0001", **changes: Any
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "point_code": point_code,
        "observed": observed,
        "at": (at or NOW - timedelta(minutes=10)).isoformat(),
        "confidence": 0.9,
        **changes,
    }


async def send(waste: Waste, *events: dict[str, Any], **as_: Any) -> dict[str, Any]:
    response = await waste.post("/v1/bin-events", {"events": list(events)}, scopes=BOX, **as_)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def yesterday_at(hour: int) -> datetime:
    return (datetime.now(CITY_TZ) - timedelta(days=1)).replace(hour=hour, minute=30, second=0, microsecond=0)


async def test_a_mixed_deposit_is_one_violation_published_once_however_often_the_box_sends_it(waste: Waste):
    await waste.register_points()
    first = event("mixed_deposit", bin_rfid="HP-0001-FOO")
    sent = await send(waste, first)
    (result,) = sent["results"]
    assert (sent["violations"], result["outcome"]) == (1, "new")
    again = await send(waste, first)  # the box was not sure the batch arrived
    assert again["results"][0] | {"index": 0} == {**result, "outcome": "duplicate", "reason": "new"}
    later = event("mixed_deposit", NOW - timedelta(minutes=2))
    assert (await send(waste, later))["results"][0]["outcome"] == "repeat"

    violation = (await waste.get(f"/v1/violations/{result['violation_id']}", scopes=READER)).json()
    assert (violation["kind"], violation["stream"], violation["severity"]) == (
        "mixed_deposit",
        "food",
        "normal",
    )
    assert (violation["observations"], violation["source"], violation["category_code"]) == (2, "box", "20111")
    assert violation["location"]["coordinates"] == [113.481, 23.11]

    (published,) = await stream_events(waste.infrastructure.nats_url, "WASTE", at_least=1)
    assert published.type == "waste.violation.detected.v1"
    assert published.source == "citygrid/waste"
    data = published.data
    assert (data["reference"], data["kind"], data["point_code"]) == (
        result["violation_id"],
        "mixed_deposit",
        "HP-0001",
    )
    assert (data["category_code"], data["district_code"], data["stream"]) == ("20111", HUANGPU, "food")
    assert data["severity"] == "normal"


async def test_smoke_or_fire_at_a_bin_is_an_urgent_fire_violation(waste: Waste):
    await waste.register_points()
    (result,) = (await send(waste, event("smoke_or_fire", confidence=0.65)))["results"]
    assert result["outcome"] == "new"
    (published,) = await stream_events(waste.infrastructure.nats_url, "WASTE", at_least=1)
    assert (published.data["severity"], published.data["category_code"]) == ("urgent", "20405")
    assert "smoke or fire" in published.data["description"]


async def test_each_event_of_a_batch_is_answered_on_its_own(waste: Waste):
    await waste.register_points()
    repeated = event("overflow", NOW - timedelta(minutes=30))
    batch = [
        event("overflow", point_code="HP-0404"),
        event("overflow", NOW + timedelta(hours=1)),
        event("overflow", NOW - timedelta(days=8)),
        event("overflow", bin_rfid="NOT-A-BIN"),
        event("overflow", confidence=0.5),
        event("deposit", yesterday_at(7)),  # in the opening hours
        event("deposit", yesterday_at(12)),  # outside them
        repeated,
        repeated,
    ]
    results = (await send(waste, *batch))["results"]
    assert [(r["index"], r["outcome"], r["reason"]) for r in results] == [
        (0, "refused", "waste.unknown_point"),
        (1, "refused", "waste.event_in_the_future"),
        (2, "refused", "waste.event_too_old"),
        (3, "refused", "waste.unknown_bin"),
        (4, "ignored", "below_confidence"),
        (5, "ignored", "within_opening_hours"),
        (6, "new", None),
        (7, "new", None),
        (8, "duplicate", "new"),
    ]
    kinds = {v["kind"] for v in (await waste.get("/v1/violations", scopes=READER)).json()["items"]}
    assert kinds == {"overflow", "outside_opening_hours"}


async def test_a_district_bound_box_reports_its_districts_points_only(waste: Waste):
    await waste.register_points(point("HP-0001"), point("TH-0002", district=TIANHE))
    results = (
        await send(waste, event("overflow"), event("overflow", point_code="TH-0002"), district=HUANGPU)
    )["results"]
    assert [(r["outcome"], r["reason"]) for r in results] == [
        ("new", None),
        ("refused", "auth.other_district"),
    ]


async def test_a_district_bound_box_learns_nothing_of_an_event_another_district_sent(waste: Waste):
    await waste.register_points(point("HP-0001"), point("TH-0002", district=TIANHE))
    huangpus = event("overflow")
    (sent,) = (await send(waste, huangpus, district=HUANGPU))["results"]
    assert sent["outcome"] == "new"
    # The same event id at the same point, from a box bound to another district: refused as any
    # event at another district's point is, not answered as the duplicate it would be.
    (result,) = (await send(waste, huangpus, district=TIANHE))["results"]
    assert (result["outcome"], result["reason"], result["violation_id"]) == (
        "refused",
        "auth.other_district",
        None,
    )
    # The district's own box, or a box bound to none, still gets the duplicate's answer.
    (again,) = (await send(waste, huangpus))["results"]
    assert (again["outcome"], again["violation_id"]) == ("duplicate", sent["violation_id"])


async def test_a_reader_may_not_send_events_nor_a_box_read_violations(waste: Waste):
    denied = await waste.post("/v1/bin-events", {"events": [event("overflow")]}, scopes=READER)
    assert (denied.status_code, denied.json()["code"]) == (403, "auth.missing_scope")
    assert (await waste.get("/v1/violations", scopes=BOX)).status_code == 403


async def test_violations_are_listed_newest_first_by_district_point_and_kind(waste: Waste):
    await waste.register_points(point("HP-0001"), point("HP-0002"), point("TH-0003", district=TIANHE))
    await send(
        waste,
        event("overflow", NOW - timedelta(hours=3)),
        event("mixed_deposit", NOW - timedelta(hours=2), point_code="HP-0002"),
        event("overflow", NOW - timedelta(hours=1), point_code="TH-0003"),
    )
    everything = (await waste.get("/v1/violations?limit=2", scopes=READER)).json()
    assert [v["point_code"] for v in everything["items"]] == ["TH-0003", "HP-0002"]
    rest = (
        await waste.get(f"/v1/violations?limit=2&cursor={everything['next_cursor']}", scopes=READER)
    ).json()
    assert ([v["point_code"] for v in rest["items"]], rest["next_cursor"]) == (["HP-0001"], None)
    huangpu = (await waste.get("/v1/violations", scopes=READER, district=HUANGPU)).json()["items"]
    assert {v["district_code"] for v in huangpu} == {HUANGPU}
    assert len(huangpu) == 2
    by_kind = (await waste.get("/v1/violations?kind=mixed_deposit&point=HP-0002", scopes=READER)).json()
    assert [v["point_code"] for v in by_kind["items"]] == ["HP-0002"]
    tianhe = next(v for v in everything["items"] if v["district_code"] == TIANHE)
    refused = await waste.get(f"/v1/violations/{tianhe['id']}", scopes=READER, district=HUANGPU)
    assert (refused.status_code, refused.json()["code"]) == (403, "auth.other_district")
    missing = await waste.get(f"/v1/violations/{uuid.uuid4()}", scopes=READER)
    assert (missing.status_code, missing.json()["code"]) == (404, "waste.unknown_violation")


@pytest.mark.parametrize(
    "period",
    [
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "0001-01-01T00:00:00+14:00"},
        {"since": "9999-12-31T23:59:59-14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"since": "1969-12-31T23:59:59+00:00"},
        {"until": "2200-01-01T00:00:01+00:00"},
    ],
    ids=["since-year-1", "until-year-1", "since-year-9999", "until-year-9999", "before-1970", "after-2200"],
)
@pytest.mark.parametrize("path", ["/v1/violations", "/v1/chain-violations"])
async def test_a_period_outside_the_times_records_keep_is_refused_with_a_problem(
    waste: Waste, period: dict[str, str], path: str
):
    response = await waste.client.get(path, params=period, headers=waste.as_(scopes=READER))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "waste.invalid_period"


async def test_the_widest_period_lists_every_violation(waste: Waste):
    await waste.register_points()
    await send(waste, event("overflow"))
    widest = {"since": "1970-01-01T00:00:00+00:00", "until": "2200-01-01T00:00:00+00:00"}
    response = await waste.client.get("/v1/violations", params=widest, headers=waste.as_(scopes=READER))
    assert response.status_code == 200, response.text
    assert [v["kind"] for v in response.json()["items"]] == ["overflow"]


def as_event(data: EventData) -> CloudEvent:
    return envelope(data, source=data.domain(), aggregate_id=str(uuid.uuid4()), aggregate_version=1)


async def publish(waste: Waste, message: CloudEvent, *, msg_id: str | None = None) -> None:
    """Publish as the vision service's outbox relay does, onto the stream it declares."""
    client = await nats.connect(waste.infrastructure.nats_url)
    try:
        await ensure_stream(client.jetstream(), stream_config("vision"))
        await client.jetstream().publish(
            message.nats_subject,
            message.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or message.id},
        )
    finally:
        await client.close()


def alarm(algorithm: str, camera: str = CAMERA) -> vision.AlarmConfirmed:
    return vision.AlarmConfirmed(
        reference=str(uuid.uuid4()),
        category_code="20405",
        district_code=HUANGPU,
        location=GeoPoint.of(113.481, 23.11),
        description="Smoking bin",
        detected_at=NOW - timedelta(minutes=1),
        evidence=[
            EvidenceRef(
                sha256="b" * 64,
                content_type="image/jpeg",
                size_bytes=2048,
                url=f"/api/vision/v1/snapshots/{'b' * 64}",
            )
        ],
        camera_id=camera,
        algorithm_code=algorithm,
        confidence=0.9,
        auto_confirmed=True,
        confirmed_by="auto",
    )


async def consumed(waste: Waste, count: int) -> bool:
    try:
        info = await waste.runtime.jetstream.consumer_info("VISION", "waste-vision-alarm-confirmed")  # type: ignore[union-attr]
    except nats.js.errors.NotFoundError:
        return False  # the consumer starts once the stream is there
    return bool(info.num_ack_pending == 0 and (info.delivered.stream_seq or 0) >= count)


async def test_a_cameras_alarm_at_a_point_is_its_violation_once_and_raises_no_second_case(waste: Waste):
    await waste.register_points(point("HP-0001", cameras=[CAMERA]))
    smoking = alarm("smoking_bin")
    await publish(waste, as_event(smoking))
    await publish(waste, as_event(smoking))  # the same alarm under a new event id
    await publish(waste, as_event(alarm("exposed_garbage")))  # not a class of the drop-off points
    await publish(waste, as_event(alarm("smoking_bin", camera="44011200081310009999")))  # a street camera
    await wait_until(lambda: consumed(waste, 4), timeout=20)

    (violation,) = (await waste.get("/v1/violations", scopes=READER)).json()["items"]
    assert (violation["kind"], violation["source"], violation["severity"]) == (
        "smoke_or_fire",
        "camera",
        "urgent",
    )
    assert (violation["source_alarm"], violation["observations"]) == (smoking.reference, 1)
    assert [s["sha256"] for s in violation["snapshots"]] == ["b" * 64]
    # The vision service raises the alarm's case: nothing is published here.
    assert await stream_events(waste.infrastructure.nats_url, "WASTE") == []
    # The box seeing the same fire joins the camera's episode rather than opening a second case.
    (result,) = (await send(waste, event("smoke_or_fire", NOW)))["results"]
    assert (result["outcome"], result["violation_id"]) == ("repeat", violation["id"])


async def test_records_older_than_their_retention_are_purged(waste: Waste, waste_database: str):
    await waste.register_points()
    await send(waste, event("overflow"), event("mixed_deposit"))
    # The service's own round runs a few seconds after the start: let it pass first.
    await first_runs_done(waste.runtime, "waste-retention")
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        await connection.execute(
            "UPDATE violations SET created_at = now() - interval '6 years' WHERE kind = 'overflow'"
        )
        await connection.execute("UPDATE bin_events SET received_at = now() - interval '100 days'")
        deleted = await purge_once(waste.runtime.db)
        assert deleted == 3
        assert await connection.fetchval("SELECT kind FROM violations") == "mixed_deposit"
        assert await connection.fetchval("SELECT count(*) FROM bin_events") == 0
    finally:
        await connection.close()


async def test_two_replicas_given_the_same_batch_at_once_record_one_violation_and_publish_it_once(
    waste_factory,
):
    async with waste_factory() as first, waste_factory() as second:
        await first.register_points()
        batch = [event("overflow"), event("smoke_or_fire"), event("mixed_deposit", bin_rfid="HP-0001-OTH")]
        answers = await asyncio.gather(send(first, *batch), send(second, *batch))
        outcomes = [sorted(answer["results"][i]["outcome"] for answer in answers) for i in range(len(batch))]
        assert outcomes == [["duplicate", "new"]] * len(batch)
        violations = (await first.get("/v1/violations", scopes=READER)).json()["items"]
        assert sorted(v["kind"] for v in violations) == ["mixed_deposit", "overflow", "smoke_or_fire"]
        assert {v["observations"] for v in violations} == {1}
        published = await stream_events(first.infrastructure.nats_url, "WASTE", at_least=3)
        assert sorted(e.data["kind"] for e in published) == ["mixed_deposit", "overflow", "smoke_or_fire"]


async def test_two_batches_sending_the_same_events_in_opposite_orders_do_not_deadlock(waste_factory):
    async with waste_factory() as first, waste_factory() as second:
        await first.register_points(point("HP-0001"), point("HP-0002"))
        ids = [f"box-event-{n:02}" for n in range(12)]
        # The same ids, told at other times in the second batch: judged in another order, they must
        # still be claimed in one order (by point and id), or each batch waits for the other's claims.
        forwards = [
            event("overflow", NOW - timedelta(minutes=60 - n), point_code=f"HP-000{1 + n % 2}", id=event_id)
            for n, event_id in enumerate(ids)
        ]
        backwards = [
            event("overflow", NOW - timedelta(minutes=20 + n), point_code=f"HP-000{1 + n % 2}", id=event_id)
            for n, event_id in enumerate(ids)
        ]
        answers = await asyncio.gather(send(first, *forwards), send(second, *backwards))
        # One batch judged every event (each point's first new, the rest repeats), the other none.
        judged, other = sorted(answers, key=lambda answer: answer["results"][0]["outcome"] == "duplicate")
        assert sorted(r["outcome"] for r in judged["results"]) == ["new"] * 2 + ["repeat"] * 10
        assert {r["outcome"] for r in other["results"]} == {"duplicate"}
        stored = (await first.get("/v1/violations", scopes=READER)).json()["items"]
        assert sorted(v["point_code"] for v in stored) == ["HP-0001", "HP-0002"]
        assert sum(v["observations"] for v in stored) == len(ids)
