"""After a video case is handled the service asks the engine (here the simulator) to look again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import nats
import pytest
from sqlalchemy import func, select

from citygrid.events import envelope
from citygrid.inbox import InboxEntry
from citygrid.messaging import ensure_stream, stream_config
from citygrid.testing import stream_events, wait_until
from contract.case import CaseClosed, CaseEvent, CaseHandled, CaseMerged, CaseSource, CaseStatus
from contract.common import GeoPoint, Origin
from contract.vision import RecheckCompleted
from services.vision.events import CASE_CONSUMER
from services.vision.models import Alarm, Recheck
from services.vision.tests.conftest import TIANHE_CAMERA, camera
from services.vision.tests.test_service import raise_alarm

CASE_ID = uuid.UUID("01900000-0000-7000-8000-000000000001")


async def publish_case_event(vision, event_type: type[CaseEvent], alarm_id: str, status: CaseStatus) -> None:
    data = event_type(
        case_id=CASE_ID,
        number="440106-20261126-0001",
        status=status,
        category_code="20101",
        district_code="440106",
        location=GeoPoint.of(113.3245, 23.1291),
        source=CaseSource.VIDEO,
        version=5,
        actor="unit-1",
        occurred_at=datetime.now(UTC),
        origin=Origin(service="vision", reference=alarm_id),
    )
    event = envelope(data, source="case", aggregate_id=str(CASE_ID), aggregate_version=data.version)
    client = await nats.connect(vision.infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        await ensure_stream(jetstream, stream_config("case"))
        await jetstream.publish(
            event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
        )
    finally:
        await client.close()


async def confirmed_alarm(vision) -> str:
    await vision.register(camera())
    alarm = await raise_alarm(vision)
    response = await vision.client.post(
        f"/v1/alarms/{alarm['id']}/confirm", headers=vision.as_(**{"If-Match": '"1"'})
    )
    assert response.status_code == 200, response.text
    return str(alarm["id"])


async def recheck_events(vision, count: int) -> list[RecheckCompleted]:
    events = await stream_events(vision.infrastructure.nats_url, "VISION", at_least=1 + count)
    return [RecheckCompleted.from_envelope(e) for e in events if e.type == "vision.recheck.completed.v1"]


async def test_a_handled_case_whose_problem_is_gone_passes_the_recheck(vision):
    alarm_id = await confirmed_alarm(vision)
    await publish_case_event(vision, CaseHandled, alarm_id, CaseStatus.HANDLED)
    (completed,) = await recheck_events(vision, 1)
    assert completed.passed
    assert (str(completed.alarm_id), completed.case_id) == (alarm_id, CASE_ID)
    assert (completed.camera_id, completed.algorithm_code) == (TIANHE_CAMERA, "exposed_garbage")
    assert completed.evidence[0].content_type == "image/jpeg"
    assert vision.simulator.state.calls == [(TIANHE_CAMERA, "exposed_garbage")]
    detail = (await vision.client.get(f"/v1/alarms/{alarm_id}", headers=vision.as_())).json()
    assert detail["case_id"] == str(CASE_ID)
    assert [r["status"] for r in detail["rechecks"]] == ["passed"]


async def test_a_handled_case_whose_problem_is_still_there_fails_the_recheck(vision):
    alarm_id = await confirmed_alarm(vision)
    scene = await vision_scene(vision, present=True)
    assert scene.status_code == 204
    await publish_case_event(vision, CaseHandled, alarm_id, CaseStatus.HANDLED)
    (completed,) = await recheck_events(vision, 1)
    assert not completed.passed
    assert completed.note is not None
    assert "still in the region" in completed.note
    assert completed.evidence


async def vision_scene(vision, *, present: bool):
    async with httpx.AsyncClient(base_url=vision.simulator_url) as client:
        path = f"/v1/scene/{TIANHE_CAMERA}/exposed_garbage"
        if present:
            return await client.put(path, json={"box": {"x": 0.41, "y": 0.4, "width": 0.2, "height": 0.2}})
        return await client.delete(path)


@pytest.mark.parametrize(
    ("event_type", "status"),
    [(CaseClosed, CaseStatus.CLOSED), (CaseMerged, CaseStatus.MERGED)],
    ids=["closed", "merged-into-another-case"],
)
async def test_the_alarm_follows_its_case_to_resolved(vision, event_type, status):
    alarm_id = await confirmed_alarm(vision)
    await publish_case_event(vision, event_type, alarm_id, status)

    async def resolved() -> bool:
        async with vision.runtime.db() as session:
            alarm = await session.get(Alarm, uuid.UUID(alarm_id), populate_existing=True)
        return alarm is not None and alarm.status == "resolved"

    await wait_until(resolved)


async def test_a_handled_event_arriving_after_the_case_closed_changes_nothing(vision):
    alarm_id = await confirmed_alarm(vision)
    await publish_case_event(vision, CaseClosed, alarm_id, CaseStatus.CLOSED)
    await publish_case_event(vision, CaseHandled, alarm_id, CaseStatus.HANDLED)

    async def both_handled() -> bool:
        async with vision.runtime.db() as session:
            count = await session.scalar(
                select(func.count()).select_from(InboxEntry).where(InboxEntry.consumer == CASE_CONSUMER)
            )
        return bool(count == 2)

    await wait_until(both_handled)
    async with vision.runtime.db() as session:
        alarm = await session.get(Alarm, uuid.UUID(alarm_id), populate_existing=True)
        rechecks = await session.scalar(select(func.count()).select_from(Recheck))
    assert alarm is not None
    assert (alarm.status, alarm.case_status) == ("resolved", "closed")
    assert rechecks == 0


async def test_an_unreachable_engine_leaves_the_recheck_scheduled_with_the_error(vision_factory):
    async with vision_factory(analysis_engines={"simulator": "http://127.0.0.1:9"}) as vision:
        alarm_id = await confirmed_alarm(vision)
        await publish_case_event(vision, CaseHandled, alarm_id, CaseStatus.HANDLED)

        async def attempted() -> bool:
            async with vision.runtime.db() as session:
                row = await session.scalar(select(Recheck))
            return row is not None and row.last_error is not None

        await wait_until(attempted)
        async with vision.runtime.db() as session:
            row = await session.scalar(select(Recheck))
        assert row is not None
        assert row.status == "scheduled"
        assert "simulator" in (row.last_error or "")
        text = (await vision.client.get("/metrics")).text
        assert 'citygrid_vision_rechecks_total{outcome="error"}' in text
        assert (
            'citygrid_vision_engine_call_duration_seconds_count{engine="simulator",outcome="error"}' in text
        )
