"""A case from report to close through the gateway, with its events read back from JetStream."""

from __future__ import annotations

from citygrid.testing import stream_events
from contract.case import CaseClosed, CaseStatus
from tests.images import png

REPORT = {
    "category_code": "20106",
    "description": "Overflowing bin at the bus stop",
    "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
    "district_code": "440106",
    "address": "Tianhe Road bus stop",
    "source": "inspector",
    "reporter": {"name": "Li Ming", "phone": "13812345678"},
}


async def report(stack, consumer="clerk", body=None, **headers):
    response = await stack.client.post(
        "/api/case/v1/cases", json=body or REPORT, headers=stack.as_(consumer, **headers)
    )
    assert response.status_code == 201, response.text
    return response


async def add_photo(stack, case_id, kind="after", consumer="clerk", data=None, content_type="image/png"):
    return await stack.client.post(
        f"/api/case/v1/cases/{case_id}/evidence",
        params={"kind": kind},
        content=png() if data is None else data,
        headers=stack.as_(consumer, **{"Content-Type": content_type}),
    )


async def step(stack, case_id, action, version, body=None, consumer="clerk", photo=True):
    """Take a workflow step; a unit reports a case handled with a fresh after-photo, as its phone does."""
    if action == "handle" and photo:
        await add_photo(stack, case_id, consumer=consumer)
    return await stack.client.post(
        f"/api/case/v1/cases/{case_id}/{action}",
        json=body,
        headers=stack.as_(consumer, **{"If-Match": f'"{version}"'}),
    )


async def test_case_goes_from_report_to_close_and_publishes_each_step_in_order(stack):
    created = await report(stack)
    case = created.json()
    assert case["status"] == "reported"
    assert case["number"].startswith("440106-")
    assert created.headers["etag"] == '"1"'
    case_id = case["id"]

    for action, version, body, status in [
        ("register", 1, {"note": "confirmed on site"}, "registered"),
        ("dispatch", 2, {"unit": "tianhe-sanitation"}, "dispatched"),
        ("accept", 3, None, "accepted"),
        ("handle", 4, None, "handled"),
        ("verify", 5, {"passed": False, "note": "still overflowing"}, "accepted"),
        ("handle", 6, {"note": "emptied"}, "handled"),
        ("verify", 7, {"passed": True}, "closed"),
    ]:
        response = await step(stack, case_id, action, version, body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
        assert response.headers["etag"] == f'"{version + 1}"'

    detail = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))).json()
    assert [h["action"] for h in detail["history"]] == [
        "report",
        "register",
        "dispatch",
        "accept",
        "handle",
        "rework",
        "handle",
        "close",
    ]
    assert detail["unit"] == "tianhe-sanitation"

    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=8)
    assert [e.type for e in events] == [
        "case.case.reported.v1",
        "case.case.registered.v1",
        "case.case.dispatched.v1",
        "case.case.accepted.v1",
        "case.case.handled.v1",
        "case.case.reworked.v1",
        "case.case.handled.v1",
        "case.case.closed.v1",
    ]
    for event in events:
        assert event.specversion == "1.0"
        assert event.source == "citygrid/case"
        assert event.subject == case_id
        assert event.datacontenttype == "application/json"
        assert event.traceparent is not None
        assert event.model_extra["msg_id"] == event.id
        assert event.model_extra["nats_subject"] == event.type.rsplit(".", 1)[0]
    assert [e.data["version"] for e in events] == list(range(1, 9))
    closed = CaseClosed.from_envelope(events[-1])
    assert closed.status == CaseStatus.CLOSED
    assert closed.location.coordinates == (113.3245, 23.1291)


async def test_a_transition_not_allowed_from_the_current_status_is_refused_with_409(stack):
    case_id = (await report(stack)).json()["id"]
    response = await step(stack, case_id, "handle", 1)
    assert response.status_code == 409
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "case.invalid_transition"
    assert problem["allowed_actions"] == ["register", "reject", "merge", "cancel"]


async def test_a_stale_if_match_gets_412_and_a_missing_one_428(stack):
    case_id = (await report(stack)).json()["id"]
    assert (await step(stack, case_id, "register", 1)).status_code == 200
    stale = await step(stack, case_id, "dispatch", 1, {"unit": "u1"})
    assert stale.status_code == 412
    assert stale.json()["code"] == "case.stale_version"
    missing = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/dispatch", json={"unit": "u1"}, headers=stack.as_("clerk")
    )
    assert missing.status_code == 428
    assert missing.json()["code"] == "http.if_match_required"


async def test_a_caller_without_the_role_cannot_take_the_step(stack):
    case_id = (await report(stack, consumer="reporter")).json()["id"]
    response = await step(stack, case_id, "register", 1, consumer="reporter")
    assert response.status_code == 403
    assert response.json()["code"] == "case.role_not_allowed"


async def test_rejecting_needs_a_reason_and_ends_the_case(stack):
    case_id = (await report(stack)).json()["id"]
    assert (await step(stack, case_id, "reject", 1, {})).status_code == 422
    response = await step(stack, case_id, "reject", 1, {"note": "not city management's matter"})
    assert response.json()["status"] == "rejected"
    assert (await step(stack, case_id, "register", 2)).status_code == 409


async def test_a_retried_report_with_the_same_idempotency_key_creates_one_case(stack):
    first = await report(stack, **{"Idempotency-Key": "retry-1"})
    second = await report(stack, **{"Idempotency-Key": "retry-1"})
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    listed = (await stack.client.get("/api/case/v1/cases", headers=stack.as_("reader"))).json()
    assert len(listed["items"]) == 1
    other = await stack.client.post(
        "/api/case/v1/cases",
        json={**REPORT, "description": "something else"},
        headers=stack.as_("clerk", **{"Idempotency-Key": "retry-1"}),
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency.key_reused"


async def test_reporter_phone_is_masked_without_pii_scope(stack):
    case_id = (await report(stack)).json()["id"]
    masked = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))).json()
    assert masked["reporter"] == {"name": "L**", "phone": "138****5678", "email": None}
    clear = (await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("admin"))).json()
    assert clear["reporter"] == {"name": "Li Ming", "phone": "13812345678", "email": None}


async def test_list_pages_with_a_cursor_and_filters(stack):
    ids = []
    # The unit grid places each point; these lie in Tianhe and Yuexiu on the demo grid.
    points = {"440106": [113.3245, 23.1291], "440104": [113.2668, 23.1291]}
    for district in ["440106", "440106", "440104", "440106", "440104"]:
        location = {"type": "Point", "coordinates": points[district]}
        body = {**REPORT, "district_code": district, "location": location}
        ids.append((await report(stack, body=body)).json()["id"])
    await step(stack, ids[0], "register", 1)

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await stack.client.get("/api/case/v1/cases", params=params, headers=stack.as_("reader"))
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))

    tianhe = (
        await stack.client.get(
            "/api/case/v1/cases", params={"district": "440106"}, headers=stack.as_("reader")
        )
    ).json()
    assert {item["district_code"] for item in tianhe["items"]} == {"440106"}
    assert len(tianhe["items"]) == 3
    registered = (
        await stack.client.get(
            "/api/case/v1/cases", params={"status": "registered"}, headers=stack.as_("reader")
        )
    ).json()
    assert [item["id"] for item in registered["items"]] == [ids[0]]
    none_yet = (
        await stack.client.get(
            "/api/case/v1/cases",
            params={"reported_to": "2020-01-01T00:00:00+08:00"},
            headers=stack.as_("reader"),
        )
    ).json()
    assert none_yet["items"] == []
    bad = await stack.client.get(
        "/api/case/v1/cases", params={"cursor": "garbage!"}, headers=stack.as_("reader")
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "pagination.invalid_cursor"


async def dispatched(stack) -> str:
    case_id = (await report(stack)).json()["id"]
    assert (await step(stack, case_id, "register", 1)).status_code == 200
    assert (await step(stack, case_id, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
    return case_id


async def test_a_unit_returns_a_case_that_is_not_its_own_and_it_is_dispatched_again(stack):
    case_id = await dispatched(stack)
    without_reason = await step(stack, case_id, "return", 3, {})
    assert without_reason.status_code == 422
    returned = await step(stack, case_id, "return", 3, {"note": "this is a power company lamp"})
    assert returned.json()["status"] == "registered"
    redispatched = await step(stack, case_id, "dispatch", 4, {"unit": "power-supply-tianhe"})
    assert redispatched.json()["unit"] == "power-supply-tianhe"
    assert [h["action"] for h in redispatched.json()["history"]][-2:] == ["return", "dispatch"]


async def test_handling_can_be_suspended_and_resumed_by_the_dispatcher(stack):
    case_id = await dispatched(stack)
    assert (await step(stack, case_id, "accept", 3)).json()["status"] == "accepted"
    suspended = await step(stack, case_id, "suspend", 4, {"note": "waiting for the road permit"})
    assert suspended.json()["status"] == "suspended"
    assert (await step(stack, case_id, "handle", 5)).status_code == 409
    assert (await step(stack, case_id, "resume", 5)).json()["status"] == "accepted"
    assert (await step(stack, case_id, "handle", 6)).json()["status"] == "handled"


async def test_a_failed_verification_needs_a_reason(stack):
    case_id = await dispatched(stack)
    await step(stack, case_id, "accept", 3)
    await step(stack, case_id, "handle", 4)
    refused = await step(stack, case_id, "verify", 5, {"passed": False})
    assert refused.status_code == 422
    assert refused.json()["code"] == "case.note_required"


async def test_only_a_supervisor_cancels_and_a_cancelled_case_is_final(stack):
    case_id = await dispatched(stack)
    assert (await step(stack, case_id, "cancel", 3, {"note": "reported twice"})).status_code == 403
    cancelled = await step(stack, case_id, "cancel", 3, {"note": "reported twice"}, consumer="admin")
    assert cancelled.json()["status"] == "cancelled"
    assert (await step(stack, case_id, "accept", 4, consumer="admin")).status_code == 409
    (event,) = [
        e
        for e in await stream_events(stack.infrastructure.nats_url, "CASE", at_least=4)
        if e.type.endswith("cancelled.v1")
    ]
    assert event.data["note"] == "reported twice"


async def test_a_duplicate_report_is_merged_into_the_open_case(stack):
    original = await dispatched(stack)
    duplicate = (await report(stack)).json()["id"]
    into_itself = await step(stack, duplicate, "merge", 1, {"into": duplicate})
    assert into_itself.status_code == 409
    assert into_itself.json()["code"] == "case.invalid_merge"
    merged = await step(stack, duplicate, "merge", 1, {"into": original})
    assert merged.status_code == 200, merged.text
    assert merged.json()["status"] == "merged"
    assert merged.json()["merged_into"] == original
    another = (await report(stack)).json()["id"]
    into_a_report = await step(stack, another, "merge", 1, {"into": duplicate})
    assert into_a_report.status_code == 409
