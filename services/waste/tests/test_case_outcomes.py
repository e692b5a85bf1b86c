"""The cases raised for the waste service's violations, followed on real NATS and PostgreSQL: each
violation keeps its case's id and status, is resolved when the case ends, and a step that arrives
late or again does not undo it; other services' cases are not this service's business."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats

from citygrid.events import envelope
from citygrid.messaging import ensure_stream, stream_config
from citygrid.testing import wait_until
from contract.case import (
    CaseClosed,
    CaseDispatched,
    CaseEvent,
    CaseHandled,
    CaseMerged,
    CaseSource,
    CaseStatus,
)
from contract.common import GeoPoint, Origin
from services.waste.tests.conftest import HUANGPU, READER, Waste
from services.waste.tests.test_chain_intake import lift, register, report, weighed
from services.waste.tests.test_chain_trips import BASE, chain_violations, run_round
from services.waste.tests.test_supervision import event, send


async def publish_case_event(
    waste: Waste,
    event_type: type[CaseEvent],
    reference: str,
    status: CaseStatus,
    version: int,
    *,
    service: str = "waste",
    case_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Publish as the case service's outbox relay does, onto the stream it declares."""
    case_id = case_id or uuid.uuid4()
    data = event_type(
        case_id=case_id,
        number="440112-20261203-0001",
        status=status,
        category_code="20405",
        district_code=HUANGPU,
        location=GeoPoint.of(113.481, 23.11),
        source=CaseSource.SYSTEM,
        version=version,
        actor="unit-1",
        occurred_at=datetime.now(UTC),
        origin=Origin(service=service, reference=reference),  # type: ignore[arg-type]
    )
    message = envelope(data, source="case", aggregate_id=str(case_id), aggregate_version=version)
    client = await nats.connect(waste.infrastructure.nats_url)
    try:
        jetstream = client.jetstream()
        await ensure_stream(jetstream, stream_config("case"))
        await jetstream.publish(
            message.nats_subject, message.model_dump_json().encode(), headers={"Nats-Msg-Id": message.id}
        )
    finally:
        await client.close()
    return case_id


async def bin_violation(waste: Waste) -> str:
    await waste.register_points()
    (result,) = (await send(waste, event("mixed_deposit", bin_rfid="HP-0001-FOO")))["results"]
    return str(result["violation_id"])


async def shown(waste: Waste, path: str) -> dict[str, Any]:
    response = await waste.get(path, scopes=READER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def becomes(waste: Waste, path: str, **fields: Any) -> dict[str, Any]:
    async def there() -> bool:
        body = await shown(waste, path)
        return all(body[name] == value for name, value in fields.items())

    await wait_until(there, timeout=15.0)
    return await shown(waste, path)


async def test_a_bin_violation_follows_its_case_and_is_resolved_when_the_case_closes(waste: Waste):
    violation_id = await bin_violation(waste)
    path = f"/v1/violations/{violation_id}"
    assert (await shown(waste, path))["case_status"] is None
    case_id = await publish_case_event(waste, CaseDispatched, violation_id, CaseStatus.DISPATCHED, 3)
    dispatched = await becomes(waste, path, case_status="dispatched")
    assert (dispatched["case_id"], dispatched["resolved_at"]) == (str(case_id), None)
    await publish_case_event(waste, CaseClosed, violation_id, CaseStatus.CLOSED, 6, case_id=case_id)
    closed = await becomes(waste, path, case_status="closed")
    assert closed["resolved_at"] is not None
    # A step of the case delivered late (an older version) changes nothing.
    await publish_case_event(waste, CaseHandled, violation_id, CaseStatus.HANDLED, 5, case_id=case_id)
    # A case of no violation of ours, published after it: once it is consumed, so is the late step.
    await publish_case_event(waste, CaseDispatched, str(uuid.uuid4()), CaseStatus.DISPATCHED, 1)

    async def drained() -> bool:
        info = await waste.runtime.jetstream.consumer_info("CASE", "waste-case-events")  # type: ignore[union-attr]
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await wait_until(drained, timeout=15.0)
    after = await shown(waste, path)
    assert (after["case_status"], after["resolved_at"]) == ("closed", closed["resolved_at"])


async def test_a_chain_violation_is_resolved_when_its_case_is_merged_into_another(waste: Waste):
    await register(waste)
    await report(
        waste,
        "pickups",
        lift(BASE, "HP-0001"),
        lift(BASE + timedelta(minutes=10), "HP-0002", stream="REC", weight_kg=60.0),
    )
    await report(waste, "weighings", weighed(BASE + timedelta(hours=1), 10_180.0, 10_000.0))
    await run_round(waste)
    (violation,) = await chain_violations(waste)
    path = f"/v1/chain-violations/{violation['id']}"
    await publish_case_event(waste, CaseMerged, violation["id"], CaseStatus.CLOSED, 2)
    merged = await becomes(waste, path, case_status="closed")
    assert merged["resolved_at"] is not None


async def test_another_services_case_naming_the_same_id_is_not_followed(waste: Waste):
    violation_id = await bin_violation(waste)
    await publish_case_event(waste, CaseClosed, violation_id, CaseStatus.CLOSED, 6, service="vision")

    async def drained() -> bool:
        try:
            info = await waste.runtime.jetstream.consumer_info("CASE", "waste-case-events")  # type: ignore[union-attr]
        except nats.js.errors.NotFoundError:
            return False
        return bool(info.delivered.stream_seq and info.num_pending == 0 and info.num_ack_pending == 0)

    await wait_until(drained, timeout=15.0)
    body = await shown(waste, f"/v1/violations/{violation_id}")
    assert (body["case_status"], body["resolved_at"]) == (None, None)
