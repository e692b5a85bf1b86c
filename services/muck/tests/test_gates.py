"""Site-gate cameras: a vision alarm of a muck class at a registered gate becomes the violation of
the truck at the gate, on its manifest, with the alarm's snapshot; once, however often it arrives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import nats

from citygrid.events import CloudEvent, EventData, envelope
from citygrid.messaging import ensure_stream, stream_config
from citygrid.testing import wait_until
from contract import vision
from contract.common import EvidenceRef, GeoPoint
from services.muck.gates import UNKNOWN_PLATE, truck_at
from services.muck.positions.latest import Latest
from services.muck.tests.conftest import PLATFORM, Muck
from services.muck.tests.test_rules import FAST, LAT, PLATE, SITE_LON, fetch, issue_directly, ring

GATE = "44010608131310000001"


def as_event(data: EventData) -> CloudEvent:
    return envelope(data, source=data.domain(), aggregate_id=str(uuid.uuid4()), aggregate_version=1)


async def publish(muck: Muck, event: CloudEvent, *, msg_id: str | None = None) -> None:
    """Publish as the vision service's outbox relay does, onto the stream it declares."""
    client = await nats.connect(muck.infrastructure.nats_url)
    try:
        await ensure_stream(client.jetstream(), stream_config("vision"))
        await client.jetstream().publish(
            event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id or event.id}
        )
    finally:
        await client.close()


def alarm(algorithm: str, camera: str = GATE, at: datetime | None = None) -> vision.AlarmConfirmed:
    return vision.AlarmConfirmed(
        reference=str(uuid.uuid4()),
        category_code="20311",
        district_code="440106",
        location=GeoPoint.of(SITE_LON, LAT),
        description="Muck truck leaving uncovered",
        detected_at=at or datetime.now(UTC),
        evidence=[
            EvidenceRef(
                sha256="a" * 64,
                content_type="image/jpeg",
                size_bytes=1000,
                url=f"/api/vision/v1/snapshots/{'a' * 64}",
            )
        ],
        camera_id=camera,
        algorithm_code=algorithm,
        confidence=0.9,
        auto_confirmed=True,
        confirmed_by="auto",
    )


def latest(plate: str, lon: float, at: datetime) -> Latest:
    return Latest(plate, at, lon, LAT, 5.0, 90, 3, at)


def test_the_truck_at_the_gate_is_the_one_seen_there_then_and_only_if_it_is_alone() -> None:
    now = datetime.now(UTC)
    site = ring(SITE_LON)
    fleet = [latest("粤A00001D", SITE_LON, now), latest("粤A00002D", SITE_LON + 0.05, now)]
    assert truck_at(site, now, fleet) == "粤A00001D"
    assert truck_at(site, now + timedelta(minutes=10), fleet) is None  # seen there, but long before
    assert truck_at(site, now, [*fleet, latest("粤A00003D", SITE_LON, now)]) is None  # two at the gate


async def test_a_gate_alarm_becomes_the_violation_of_the_truck_on_its_manifest_once(muck_factory) -> None:
    from services.muck.tests.test_rules import register_sites

    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        await register_sites(muck)
        await fetch(muck, "UPDATE sites SET gate_cameras = ARRAY[$1] WHERE code = 'TH-CS-1'", GATE)
        manifest_id = await issue_directly(muck)
        at_gate = {
            "plate": PLATE,
            "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "location": {"type": "Point", "coordinates": [SITE_LON, LAT]},
            "speed_kmh": 3.0,
            "load": "full",
        }
        assert (
            await muck.post("/v1/positions", {"positions": [at_gate]}, scopes=PLATFORM)
        ).status_code == 200
        await wait_until(lambda: muck.app.state.positions.latest.get(PLATE) is not None)

        uncovered = as_event(alarm("truck_not_covered"))
        for _ in range(2):  # redelivered: recorded once
            await publish(muck, uncovered, msg_id=str(uuid.uuid4()))
        await publish(muck, as_event(alarm("exposed_garbage")))  # not a gate class
        await publish(muck, as_event(alarm("unregistered_truck_at_gate", camera="44010608131310000099")))

        async def recorded() -> bool:
            return bool(await fetch(muck, "SELECT 1 FROM violations"))

        await wait_until(recorded, timeout=20)
        await wait_until(lambda: _consumed(muck, 4), timeout=20)
        (row,) = await fetch(muck, "SELECT * FROM violations")
        assert (row["plate"], row["kind"], str(row["manifest_id"])) == (PLATE, "uncovered", manifest_id)
        assert row["district_code"] == "440106"
        assert "a" * 64 in row["snapshots"]


async def test_an_unregistered_truck_at_a_gate_is_kept_without_a_plate(muck: Muck) -> None:
    from services.muck.tests.test_rules import register_sites

    await register_sites(muck)
    await fetch(muck, "UPDATE sites SET gate_cameras = ARRAY[$1] WHERE code = 'TH-CS-1'", GATE)
    await publish(muck, as_event(alarm("unregistered_truck_at_gate")))

    async def recorded() -> bool:
        return bool(await fetch(muck, "SELECT 1 FROM violations"))

    await wait_until(recorded, timeout=20)
    (row,) = await fetch(muck, "SELECT plate, kind FROM violations")
    assert (row["plate"], row["kind"]) == (UNKNOWN_PLATE, "unregistered_truck")


async def _consumed(muck: Muck, count: int) -> bool:
    runner = muck.runtime.consumers["muck-vision-alarm-confirmed"]
    info = await muck.runtime.jetstream.consumer_info("VISION", runner.spec.name)  # type: ignore[union-attr]
    return bool(info.num_ack_pending == 0 and (info.delivered.stream_seq or 0) >= count)
