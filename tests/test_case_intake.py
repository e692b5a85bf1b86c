"""Cases raised by other services' events and closed or reworked by the AI re-check, end to end:
events published to JetStream as their producers would, cases read back through the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import nats
import nats.js.errors
import pytest

from citygrid.events import CloudEvent, EventData, envelope, source_of
from citygrid.messaging import ensure_stream, stream_config
from citygrid.testing import stream_events, wait_until
from contract import gas, muck, vision, waste
from contract.common import EvidenceRef, GeoPoint
from tests.test_case_flow import step as flow_step

CAMERA = "44010600081316000001"  # Tianhe, city management, IPC, government network


def snapshot(label: str) -> EvidenceRef:
    digest = hashlib.sha256(label.encode()).hexdigest()
    return EvidenceRef(
        sha256=digest,
        content_type="image/jpeg",
        size_bytes=48_213,
        url=f"/api/vision/v1/snapshots/{digest}",
        taken_at=datetime.now(UTC),
    )


def problem(reference: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "reference": reference,
        "category_code": "20106",
        "district_code": "440106",
        "location": GeoPoint.of(113.3245, 23.1291),
        "address": "Tianhe Road bus stop",
        "description": "Overflowing bin beside the bus stop",
        "detected_at": datetime.now(UTC),
        "evidence": [snapshot(reference)],
    }
    return values | overrides


def alarm(reference: str | None = None, **overrides: Any) -> vision.AlarmConfirmed:
    return vision.AlarmConfirmed(
        **problem(reference or str(uuid.uuid4()), **overrides),
        camera_id=CAMERA,
        algorithm_code="overflowing_bin",
        confidence=0.93,
        auto_confirmed=True,
        confirmed_by="vision:auto",
    )


def violation(kind: str) -> EventData:
    reference = f"{kind}-{uuid.uuid4()}"
    if kind == "gas":
        return gas.ViolationDetected(
            **problem(reference, category_code="20605", description="Cylinder past inspection refused"),
            cylinder_code="GZ-LPG-0012345",
            station_code="station-tianhe-01",
            reasons=[gas.RefusalReason.INSPECTION_OVERDUE],
        )
    if kind == "muck":
        return muck.ViolationDetected(
            **problem(reference, category_code="20311", description="Muck truck driving uncovered"),
            plate="粤A12345",
            kind=muck.TransportViolation.UNCOVERED,
        )
    return waste.ViolationDetected(
        **problem(reference, category_code="20111", description="Mixed waste at the drop-off point"),
        kind=waste.WasteViolation.MIXED_DEPOSIT,
        point_code="huangpu-0001",
    )


def as_event(data: EventData, aggregate_id: str = "record") -> CloudEvent:
    return envelope(data, source=data.domain(), aggregate_id=aggregate_id, aggregate_version=1)


async def publish(stack, event: CloudEvent, *, msg_id: str | None = None) -> None:
    """Publish as a producer's outbox relay does: the envelope, with Nats-Msg-Id, on the stream the
    producer declares (the case service declares only its own; its consumers wait for the others)."""
    client = await nats.connect(stack.infrastructure.nats_url)
    try:
        await ensure_stream(client.jetstream(), stream_config(event.nats_subject.split(".", 1)[0]))
        await client.jetstream().publish(
            event.nats_subject,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or event.id},
        )
    finally:
        await client.close()


async def publish_raw(stack, subject: str, body: dict[str, Any]) -> None:
    event = CloudEvent(
        id=str(uuid.uuid4()),
        source=source_of(subject.split(".", 1)[0]),
        type=f"{subject}.v1",
        time=datetime.now(UTC),
        data=body,
    )
    await publish(stack, event)


async def drained(stack, subject: str, delivered: int) -> None:
    """Wait until the case service's consumer of ``subject`` has acknowledged ``delivered`` messages."""
    stream = subject.split(".", 1)[0].upper()
    consumer = "case-" + subject.replace(".", "-")
    client = await nats.connect(stack.infrastructure.nats_url)
    jetstream = client.jetstream()

    async def done() -> bool:
        try:
            info = await jetstream.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            return False
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= delivered

    try:
        await wait_until(done)
    finally:
        await client.close()


async def cases(stack) -> list[dict[str, Any]]:
    response = await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def detail(stack, case_id: str) -> dict[str, Any]:
    response = await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("admin"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def the_one_case(stack) -> dict[str, Any]:
    found = await cases(stack)
    assert len(found) == 1, found
    return await detail(stack, found[0]["id"])


async def dead_letters(stack) -> list[dict[str, Any]]:
    response = await stack.client.get("/api/case/v1/admin/dead-letters", headers=stack.as_("admin"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def step(
    stack, case: dict[str, Any], action: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await flow_step(stack, case["id"], action, case["version"], body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def handled_video_case(stack, reference: str) -> dict[str, Any]:
    """A case raised by an alarm and taken by the unit to ``handled``, as the re-check finds it."""
    await publish(stack, as_event(alarm(reference)))
    await drained(stack, "vision.alarm.confirmed", 1)
    case = await the_one_case(stack)
    if case["status"] == "registered":
        case = await step(stack, case, "dispatch", {"unit": "tianhe-sanitation"})
    case = await step(stack, case, "accept")
    return await step(stack, case, "handle", {"note": "bin emptied"})


def recheck(case: dict[str, Any], reference: str, *, passed: bool, note: str | None = None) -> CloudEvent:
    data = vision.RecheckCompleted(
        recheck_id=uuid.uuid4(),
        alarm_id=uuid.UUID(reference),
        case_id=uuid.UUID(case["id"]),
        camera_id=CAMERA,
        algorithm_code="overflowing_bin",
        passed=passed,
        note=note,
        evidence=[snapshot(f"recheck-{reference}-{passed}")],
        checked_at=datetime.now(UTC),
    )
    return as_event(data, aggregate_id=str(data.recheck_id))


async def test_a_confirmed_alarm_delivered_twice_raises_one_registered_video_case_with_its_snapshot(stack):
    reference = str(uuid.uuid4())
    event = as_event(alarm(reference), aggregate_id=reference)
    # Two copies in the stream under distinct message ids: what a redelivery looks like to us.
    await publish(stack, event, msg_id="copy-1")
    await publish(stack, event, msg_id="copy-2")
    await drained(stack, "vision.alarm.confirmed", 2)

    case = await the_one_case(stack)
    assert case["source"] == "video"
    assert case["origin"] == {"service": "vision", "reference": reference}
    assert case["category_code"] == "20106"
    assert case["district_code"] == "440106"
    assert case["status"] in ("registered", "dispatched")  # dispatch rules may send it on at once
    assert [(h["action"], h["actor"]) for h in case["history"][:2]] == [
        ("report", "service:vision"),
        ("register", "system:intake"),
    ]
    expected = snapshot(reference)
    assert [(e["kind"], e["service"], e["sha256"], e["url"]) for e in case["evidence"]] == [
        ("detection", "vision", expected.sha256, expected.url)
    ]

    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=2)
    assert [e.type for e in events[:2]] == ["case.case.reported.v1", "case.case.registered.v1"]
    assert {str(e.data["case_id"]) for e in events} == {case["id"]}
    assert all(e.data["origin"] == {"service": "vision", "reference": reference} for e in events)


async def test_the_same_alarm_republished_under_a_new_event_id_opens_no_second_case(stack):
    reference = str(uuid.uuid4())
    first, second = as_event(alarm(reference)), as_event(alarm(reference))
    assert first.id != second.id
    await publish(stack, first)
    await publish(stack, second)
    await drained(stack, "vision.alarm.confirmed", 2)

    case = await the_one_case(stack)
    assert case["origin"]["reference"] == reference
    assert await dead_letters(stack) == []


@pytest.mark.parametrize("kind", ["gas", "muck", "waste"])
async def test_a_violation_delivered_twice_raises_one_registered_system_case_naming_its_origin(stack, kind):
    data = violation(kind)
    event = as_event(data)
    await publish(stack, event, msg_id="copy-1")
    await publish(stack, event, msg_id="copy-2")
    await drained(stack, data.subject, 2)

    case = await the_one_case(stack)
    assert case["source"] == "system"
    assert case["origin"] == {"service": kind, "reference": data.model_dump()["reference"]}
    assert case["category_code"] == data.model_dump()["category_code"]
    assert [h["action"] for h in case["history"][:2]] == ["report", "register"]
    assert [e["service"] for e in case["evidence"]] == [kind]
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=2)
    assert {e.data["source"] for e in events} == {"system"}
    assert {e.data["origin"]["service"] for e in events} == {kind}


async def test_a_passed_recheck_closes_the_handled_case_and_keeps_the_new_snapshot(stack):
    reference = str(uuid.uuid4())
    handled = await handled_video_case(stack, reference)
    assert handled["status"] == "handled"

    await publish(stack, recheck(handled, reference, passed=True))
    await drained(stack, "vision.recheck.completed", 1)

    case = await detail(stack, handled["id"])
    assert case["status"] == "closed"
    assert case["version"] == handled["version"] + 1
    last = case["history"][-1]
    assert (last["action"], last["actor"], last["from_status"]) == ("close", "service:vision", "handled")
    assert "passed" in last["note"]
    assert [e["kind"] for e in case["evidence"]] == ["detection", "after", "recheck"]
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=6)
    assert events[-1].type == "case.case.closed.v1"
    assert events[-1].data["origin"] == {"service": "vision", "reference": reference}


async def test_a_failed_recheck_sends_the_case_back_to_the_unit_with_the_note_and_snapshot(stack):
    reference = str(uuid.uuid4())
    handled = await handled_video_case(stack, reference)

    await publish(stack, recheck(handled, reference, passed=False, note="garbage still beside the bin"))
    await drained(stack, "vision.recheck.completed", 1)

    case = await detail(stack, handled["id"])
    assert case["status"] == "accepted"
    assert case["unit"] == handled["unit"]
    last = case["history"][-1]
    assert (last["action"], last["actor"]) == ("rework", "service:vision")
    assert "failed: garbage still beside the bin" in last["note"]
    recheck_snapshot = snapshot(f"recheck-{reference}-False")
    assert [(e["kind"], e["sha256"]) for e in case["evidence"]][-1] == ("recheck", recheck_snapshot.sha256)
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=6)
    assert events[-1].type == "case.case.reworked.v1"
    assert events[-1].data["note"] == last["note"]


async def test_a_recheck_of_a_case_that_is_not_handled_is_recorded_and_changes_nothing(stack):
    reference = str(uuid.uuid4())
    await publish(stack, as_event(alarm(reference)))
    await drained(stack, "vision.alarm.confirmed", 1)
    before = await the_one_case(stack)

    await publish(stack, recheck(before, reference, passed=True))
    await drained(stack, "vision.recheck.completed", 1)

    after = await detail(stack, before["id"])
    assert (after["status"], after["version"]) == (before["status"], before["version"])
    last = after["history"][-1]
    assert last["action"] == "recheck_ignored"
    assert f"ignored: the case is {before['status']}, not handled" in last["note"]
    assert [e["kind"] for e in after["evidence"]] == ["detection"]
    assert await dead_letters(stack) == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"category_code": "29999"}, "case.unknown_category"),
        # Off the unit grid (Beijing) and naming no district: nowhere to place it.
        ({"district_code": None, "location": GeoPoint.of(116.40, 39.90)}, "case.intake.district_unknown"),
        ({"district_code": "110101"}, "case.intake.invalid_event"),  # Beijing: not this city
    ],
)
async def test_an_alarm_the_case_service_cannot_take_is_dead_lettered_at_once_and_the_next_is_handled(
    stack, overrides, code
):
    await publish(stack, as_event(alarm(**overrides)))
    good = str(uuid.uuid4())
    await publish(stack, as_event(alarm(good)))
    await drained(stack, "vision.alarm.confirmed", 2)

    [letter] = await dead_letters(stack)
    assert letter["consumer"] == "case-vision-alarm-confirmed"
    assert letter["deliveries"] == 1
    assert letter["error"].startswith(f"{code}: ")
    case = await the_one_case(stack)
    assert case["origin"]["reference"] == good


async def test_an_alarm_naming_no_district_takes_the_district_of_its_grid_cell(stack):
    await publish(stack, as_event(alarm(district_code=None)))
    await drained(stack, "vision.alarm.confirmed", 1)

    case = await the_one_case(stack)
    assert case["district_code"] == "440106"
    assert case["grid_code"].startswith("440106")
    assert await dead_letters(stack) == []


async def test_an_event_that_breaks_its_schema_is_dead_lettered_naming_the_field(stack):
    body = violation("gas").model_dump(mode="json")
    del body["reasons"]
    await publish_raw(stack, "gas.violation.detected", body)
    await drained(stack, "gas.violation.detected", 1)

    [letter] = await dead_letters(stack)
    assert letter["error"].startswith("case.intake.invalid_event: ")
    assert "reasons" in letter["error"]
    assert await cases(stack) == []


async def test_a_recheck_of_a_case_that_does_not_exist_is_dead_lettered(stack):
    missing = {"id": str(uuid.uuid4())}
    await publish(stack, recheck(missing, str(uuid.uuid4()), passed=True))
    await drained(stack, "vision.recheck.completed", 1)

    [letter] = await dead_letters(stack)
    assert letter["consumer"] == "case-vision-recheck-completed"
    assert letter["error"].startswith("case.not_found: ")


async def test_two_replicas_raising_the_same_alarm_at_once_open_one_case(stack):
    # Two event ids for one alarm, handled at the same moment as two replicas would: the loser of
    # the race fails on the unique origin and, handled again as its redelivery would be, opens nothing.
    runner = stack.case_runtime.consumers["case-vision-alarm-confirmed"]
    reference = str(uuid.uuid4())
    events = [as_event(alarm(reference)), as_event(alarm(reference))]
    outcomes = await asyncio.gather(*(runner.process(event) for event in events), return_exceptions=True)
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            assert await runner.process(event) is True
        else:
            assert outcome is True

    case = await the_one_case(stack)
    assert case["origin"] == {"service": "vision", "reference": reference}


async def test_an_incident_closed_before_its_case_was_opened_is_written_into_it_once_it_is(stack):
    incident_id = uuid.uuid4()
    reported = gas.IncidentReported(
        **problem(str(incident_id), category_code="20406", description="Gas smell in a restaurant kitchen"),
        incident_id=incident_id,
        premises_type=gas.PremisesType.RESTAURANT,
        source=gas.LeakSource.CYLINDER,
    )
    closed = gas.IncidentClosed(incident_id=incident_id, closed_at=datetime.now(UTC))
    # The close comes first (the two come by different consumers): there is no case to write into yet.
    await publish(stack, as_event(closed, str(incident_id)))
    await publish(stack, as_event(reported, str(incident_id)))

    async def noted() -> list[dict[str, Any]]:
        raised = [
            case
            for case in await cases(stack)
            if case["origin"] == {"service": "gas", "reference": str(incident_id)}
        ]
        if not raised:
            return []
        shown = await stack.client.get(f"/api/case/v1/cases/{raised[0]['id']}", headers=stack.as_("reader"))
        return [entry for entry in shown.json()["history"] if entry["action"] == "origin_closed"]

    await wait_until(noted, timeout=30)
    assert len(await noted()) == 1
    assert await dead_letters(stack) == []
