"""Extension requests through the gateway: the unit asks, the dispatcher approves or denies, the
deadline moves (or not), and each step is a history row and an event."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update

from citygrid.testing import stream_events, wait_until
from services.case.models import Case
from tests.test_case_deadlines import escalated
from tests.test_case_flow import report, step

UNIT = "tianhe-sanitation"


async def consumer(stack, name: str, roles: list[str], unit: str | None = None) -> str:
    """Register an API consumer with these roles through the gateway's admin API; its key."""
    response = await stack.client.post(
        "/admin/v1/consumers",
        json={"name": name, "scopes": ["cases:read", "cases:write"], "roles": roles, "unit": unit},
        headers=stack.as_("admin"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["unit"] == unit
    return str(response.json()["api_key"])


async def in_hand(stack) -> tuple[str, dict]:
    """A case dispatched to the unit and accepted: version 4, handling clock running."""
    case_id = (await report(stack)).json()["id"]
    await step(stack, case_id, "register", 1)
    await step(stack, case_id, "dispatch", 2, {"unit": UNIT})
    accepted = await step(stack, case_id, "accept", 3)
    assert accepted.json()["status"] == "accepted"
    return case_id, accepted.json()


def later(case: dict, **delta: float) -> str:
    return (datetime.fromisoformat(case["deadline_at"]) + timedelta(**delta)).isoformat()


async def ask(stack, case_id, version, body, consumer="clerk", **headers):
    return await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions",
        json=body,
        headers=stack.as_(consumer, **{"If-Match": f'"{version}"', **headers}),
    )


async def decide(stack, case_id, extension_id, verdict, version, body=None, consumer="clerk"):
    return await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions/{extension_id}/{verdict}",
        json=body,
        headers=stack.as_(consumer, **{"If-Match": f'"{version}"'}),
    )


async def detail(stack, case_id) -> dict:
    response = await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))
    return dict(response.json())


async def test_an_approved_extension_moves_the_handling_deadline_and_is_recorded_and_published(stack):
    case_id, case = await in_hand(stack)
    wanted = later(case, days=2)
    asked = await ask(
        stack, case_id, 4, {"reason": "the bin's base is rusted through", "new_deadline": wanted}
    )
    assert asked.status_code == 201, asked.text
    assert asked.headers["etag"] == '"5"'
    extension = asked.json()
    assert extension["status"] == "pending"
    assert datetime.fromisoformat(extension["requested_deadline"]) == datetime.fromisoformat(wanted)
    assert (await detail(stack, case_id))["deadline_at"] == case["deadline_at"]  # not before approval

    approved = await decide(stack, case_id, extension["id"], "approve", 5, {"note": "granted"})
    assert approved.status_code == 200, approved.text
    assert approved.headers["etag"] == '"6"'
    assert approved.json()["status"] == "approved"
    assert approved.json()["previous_deadline"] == case["deadline_at"]
    after = await detail(stack, case_id)
    assert datetime.fromisoformat(after["deadline_at"]) == datetime.fromisoformat(wanted)
    assert after["status"] == "accepted"
    assert [h["action"] for h in after["history"]][-2:] == ["extension_requested", "extension_approved"]
    assert after["history"][-2]["note"] == "the bin's base is rusted through"

    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=6)
    assert [e.type for e in events][-2:] == [
        "case.case.extension_requested.v1",
        "case.case.extension_approved.v1",
    ]
    assert events[-1].data["extension_id"] == extension["id"]
    assert datetime.fromisoformat(events[-1].data["deadline_at"]) == datetime.fromisoformat(wanted)
    assert [e.data["version"] for e in events][-2:] == [5, 6]


async def test_the_dispatcher_may_grant_less_time_than_asked(stack):
    case_id, case = await in_hand(stack)
    extension = (
        await ask(stack, case_id, 4, {"reason": "parts", "new_deadline": later(case, days=5)})
    ).json()
    granted = later(case, hours=6)
    approved = await decide(stack, case_id, extension["id"], "approve", 5, {"deadline": granted})
    assert datetime.fromisoformat(approved.json()["granted_deadline"]) == datetime.fromisoformat(granted)
    assert datetime.fromisoformat((await detail(stack, case_id))["deadline_at"]) == datetime.fromisoformat(
        granted
    )


async def test_a_denied_extension_keeps_the_deadline_and_needs_a_reason(stack):
    case_id, case = await in_hand(stack)
    extension = (await ask(stack, case_id, 4, {"reason": "busy", "new_deadline": later(case, days=1)})).json()
    without_reason = await decide(stack, case_id, extension["id"], "deny", 5, {})
    assert without_reason.status_code == 422
    denied = await decide(stack, case_id, extension["id"], "deny", 5, {"note": "a bin is a four-hour job"})
    assert denied.status_code == 200, denied.text
    assert denied.json()["status"] == "denied"
    after = await detail(stack, case_id)
    assert after["deadline_at"] == case["deadline_at"]
    assert after["history"][-1]["action"] == "extension_denied"
    assert after["history"][-1]["note"] == "a bin is a four-hour job"
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=6)
    assert events[-1].type == "case.case.extension_denied.v1"
    again = await decide(stack, case_id, extension["id"], "approve", 6)
    assert again.status_code == 409
    assert again.json()["code"] == "case.extension_decided"


async def test_a_second_request_waits_until_the_first_is_decided(stack):
    case_id, case = await in_hand(stack)
    first = await ask(stack, case_id, 4, {"reason": "parts", "new_deadline": later(case, days=1)})
    second = await ask(stack, case_id, 5, {"reason": "more parts", "new_deadline": later(case, days=2)})
    assert second.status_code == 409
    assert second.json()["code"] == "case.extension_pending"
    await decide(stack, case_id, first.json()["id"], "deny", 5, {"note": "no"})
    third = await ask(stack, case_id, 6, {"reason": "more parts", "new_deadline": later(case, days=2)})
    assert third.status_code == 201
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/extensions", headers=stack.as_("reader"))
    assert [e["status"] for e in listed.json()["items"]] == ["denied", "pending"]


async def test_refused_requests_change_nothing(stack):
    case_id, case = await in_hand(stack)
    valid = {"reason": "parts", "new_deadline": later(case, days=1)}
    for body, status, code in [
        ({"reason": "parts", "new_deadline": later(case, hours=-1)}, 422, "case.invalid_extension_deadline"),
        ({"reason": "parts", "new_deadline": later(case, days=120)}, 422, "case.invalid_extension_deadline"),
        ({"reason": "", "new_deadline": later(case, days=1)}, 422, "validation_failed"),
        ({"new_deadline": later(case, days=1)}, 422, "validation_failed"),
        ({"reason": "parts", "new_deadline": "tomorrow"}, 422, "validation_failed"),
    ]:
        response = await ask(stack, case_id, 4, body)
        assert (response.status_code, response.json()["code"]) == (status, code), body
    stale = await ask(stack, case_id, 3, valid)
    assert (stale.status_code, stale.json()["code"]) == (412, "case.stale_version")
    missing = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions", json=valid, headers=stack.as_("clerk")
    )
    assert missing.status_code == 428
    unknown = await decide(stack, case_id, "00000000-0000-0000-0000-000000000000", "approve", 4)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "case.extension_not_found")
    after = await detail(stack, case_id)
    assert after["version"] == 4
    assert after["deadline_at"] == case["deadline_at"]


async def test_only_a_case_being_handled_gets_an_extension(stack):
    case_id = (await report(stack)).json()["id"]
    response = await ask(stack, case_id, 1, {"reason": "x", "new_deadline": "2030-01-01T00:00:00+08:00"})
    assert response.status_code == 409
    assert response.json()["code"] == "case.invalid_transition"


async def test_the_unit_asks_and_the_dispatcher_decides_not_the_other_way_round(stack):
    handler = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    dispatcher = await consumer(stack, "dispatcher", ["dispatcher"])
    other_unit = await consumer(stack, "yuexiu handler", ["handler"], unit="yuexiu-municipal")
    case_id, case = await in_hand(stack)
    body = {"reason": "parts", "new_deadline": later(case, days=1)}

    by_dispatcher = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions",
        json=body,
        headers={"X-API-Key": dispatcher, "If-Match": '"4"'},
    )
    assert (by_dispatcher.status_code, by_dispatcher.json()["code"]) == (403, "case.role_not_allowed")
    by_other_unit = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions",
        json=body,
        headers={"X-API-Key": other_unit, "If-Match": '"4"'},
    )
    assert (by_other_unit.status_code, by_other_unit.json()["code"]) == (403, "case.not_your_unit")
    asked = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions",
        json=body,
        headers={"X-API-Key": handler, "If-Match": '"4"'},
    )
    assert asked.status_code == 201, asked.text
    extension_id = asked.json()["id"]
    by_handler = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions/{extension_id}/approve",
        headers={"X-API-Key": handler, "If-Match": '"5"'},
    )
    assert (by_handler.status_code, by_handler.json()["code"]) == (403, "case.role_not_allowed")
    approved = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/extensions/{extension_id}/approve",
        headers={"X-API-Key": dispatcher, "If-Match": '"5"'},
    )
    assert approved.status_code == 200, approved.text


async def test_an_overdue_case_given_more_time_is_watched_again_at_the_new_deadline(stack):
    case_id, _ = await in_hand(stack)
    async with stack.case_runtime.uow() as uow:
        await uow.session.execute(
            update(Case).where(Case.id == case_id).values(deadline_at=Case.created_at - timedelta(hours=1))
        )
    await wait_until(lambda: escalated(stack, case_id))  # by this call or the service's own scan
    overdue = await detail(stack, case_id)
    assert overdue["overdue_at"] is not None
    wanted = (datetime.fromisoformat(overdue["updated_at"]) + timedelta(days=1)).isoformat()
    assert overdue["version"] == 5  # the escalation is a version of its own
    asked = await ask(stack, case_id, 5, {"reason": "late, sorry", "new_deadline": wanted})
    assert asked.status_code == 201, asked.text
    await decide(stack, case_id, asked.json()["id"], "approve", 6)
    extended = await detail(stack, case_id)
    assert extended["overdue_at"] is None
    assert datetime.fromisoformat(extended["deadline_at"]) == datetime.fromisoformat(wanted)


async def test_a_request_still_waiting_when_the_case_is_reworked_lapses_and_a_new_one_may_be_made(stack):
    case_id, case = await in_hand(stack)
    old = (await ask(stack, case_id, 4, {"reason": "parts", "new_deadline": later(case, days=1)})).json()
    assert (await step(stack, case_id, "handle", 5)).json()["status"] == "handled"
    reworked = await step(stack, case_id, "verify", 6, {"passed": False, "note": "lid still broken"})
    assert reworked.json()["status"] == "accepted"
    late_approval = await decide(stack, case_id, old["id"], "approve", 7)
    assert (late_approval.status_code, late_approval.json()["code"]) == (409, "case.extension_lapsed")
    new = await ask(
        stack, case_id, 7, {"reason": "new lid ordered", "new_deadline": later(reworked.json(), days=2)}
    )
    assert new.status_code == 201, new.text
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/extensions", headers=stack.as_("reader"))
    assert [e["status"] for e in listed.json()["items"]] == ["lapsed", "pending"]
    assert (await decide(stack, case_id, new.json()["id"], "approve", 8)).status_code == 200
