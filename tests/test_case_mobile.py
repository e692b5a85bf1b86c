"""The unit handler's phone through the gateway: my tasks by unit and person, check-in with GPS,
the unit's steps kept to the unit's own cases, and the unit carried from key or token to the service."""

from __future__ import annotations

from citygrid.auth import PRINCIPAL_HEADER, Principal
from tests.conftest import people_token
from tests.test_case_extensions import consumer
from tests.test_case_flow import REPORT, add_photo, report, step

UNIT = "tianhe-sanitation"
CASE_POINT = REPORT["location"]["coordinates"]  # [113.3245, 23.1291]


async def dispatched_to(stack, unit: str) -> str:
    case_id = (await report(stack)).json()["id"]
    await step(stack, case_id, "register", 1)
    assert (await step(stack, case_id, "dispatch", 2, {"unit": unit})).status_code == 200
    return str(case_id)


async def tasks(stack, key: str, **params) -> dict:
    response = await stack.client.get("/api/case/v1/my/tasks", params=params, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def as_key(key: str, **headers: str) -> dict[str, str]:
    return {"X-API-Key": key, **headers}


async def test_a_handler_sees_the_cases_in_the_unit_s_hands_soonest_deadline_first(stack):
    handler = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    ours = [await dispatched_to(stack, UNIT) for _ in range(3)]
    theirs = await dispatched_to(stack, "yuexiu-municipal")
    await step(stack, ours[1], "accept", 3)
    await step(stack, ours[1], "suspend", 4, {"note": "waiting for the road permit"})
    listed = await tasks(stack, handler)
    ids = [task["id"] for task in listed["items"]]
    assert set(ids) == set(ours)
    assert theirs not in ids
    assert ids[-1] == ours[1]  # suspended: no running clock, listed last
    deadlines = [task["deadline_at"] for task in listed["items"][:-1]]
    assert deadlines == sorted(deadlines)
    assert {task["status"] for task in listed["items"]} == {"dispatched", "suspended"}
    assert listed["items"][0]["location"]["coordinates"] == CASE_POINT

    pages, cursor = [], None
    while True:
        page = await tasks(stack, handler, limit=1, **({"cursor": cursor} if cursor else {}))
        pages.extend(task["id"] for task in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == ids
    only_suspended = await tasks(stack, handler, status="suspended")
    assert [task["id"] for task in only_suspended["items"]] == [ours[1]]


async def test_mine_lists_the_cases_this_handler_accepted(stack):
    first = await consumer(stack, "handler one", ["handler"], unit=UNIT)
    second = await consumer(stack, "handler two", ["handler"], unit=UNIT)
    a, b = await dispatched_to(stack, UNIT), await dispatched_to(stack, UNIT)
    accepted = await stack.client.post(
        f"/api/case/v1/cases/{a}/accept", headers=as_key(first, **{"If-Match": '"3"'})
    )
    assert accepted.status_code == 200, accepted.text
    assert [t["id"] for t in (await tasks(stack, first, scope="mine"))["items"]] == [a]
    assert (await tasks(stack, second, scope="mine"))["items"] == []
    assert {t["id"] for t in (await tasks(stack, second))["items"]} == {a, b}
    mine = (await tasks(stack, first, scope="mine"))["items"][0]
    assert mine["accepted_by"].startswith("consumer:")


async def test_the_task_list_needs_a_unit_and_the_handler_role(stack):
    no_unit = await stack.client.get("/api/case/v1/my/tasks", headers=stack.as_("unitless-handler"))
    assert (no_unit.status_code, no_unit.json()["code"]) == (403, "case.no_unit")
    inspector = await consumer(stack, "inspector", ["inspector"], unit=UNIT)
    no_role = await stack.client.get("/api/case/v1/my/tasks", headers=as_key(inspector))
    assert (no_role.status_code, no_role.json()["code"]) == (403, "case.role_not_allowed")
    handler = await consumer(stack, "handler", ["handler"], unit=UNIT)
    bad_cursor = await stack.client.get(
        "/api/case/v1/my/tasks", params={"cursor": "nope"}, headers=as_key(handler)
    )
    assert (bad_cursor.status_code, bad_cursor.json()["code"]) == (400, "pagination.invalid_cursor")


async def test_a_person_s_unit_comes_from_the_identity_provider_s_token(stack):
    case_id = await dispatched_to(stack, UNIT)
    claims = {"sub": "h-17", "name": "Chen Jie", "groups": ["handlers"], "unit": UNIT}
    bearer = {"Authorization": f"Bearer {people_token(claims)}"}
    listed = await stack.client.get("/api/case/v1/my/tasks", headers=bearer)
    assert [task["id"] for task in listed.json()["items"]] == [case_id]
    bad = people_token({**claims, "unit": ["a", "b"]})
    refused = await stack.client.get("/api/case/v1/my/tasks", headers={"Authorization": f"Bearer {bad}"})
    assert (refused.status_code, refused.json()["code"]) == (401, "auth.invalid_credentials")


async def test_a_handler_of_another_unit_cannot_take_the_unit_s_steps(stack):
    other = await consumer(stack, "yuexiu handler", ["handler"], unit="yuexiu-municipal")
    case_id = await dispatched_to(stack, UNIT)
    for path, body in [
        ("accept", None),
        ("return", {"note": "not ours"}),
        ("check-ins", {"location": {"type": "Point", "coordinates": CASE_POINT}}),
    ]:
        response = await stack.client.post(
            f"/api/case/v1/cases/{case_id}/{path}", json=body, headers=as_key(other, **{"If-Match": '"3"'})
        )
        assert (response.status_code, response.json()["code"]) == (403, "case.not_your_unit"), path
    await step(stack, case_id, "accept", 3)
    photo = await add_photo(stack, case_id, "after", consumer="clerk")
    assert photo.status_code == 201
    foreign_photo = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/evidence",
        params={"kind": "after"},
        content=b"\x89PNG\r\n\x1a\n" + b"0" * 20 + b"IEND\xaeB`\x82",
        headers=as_key(other, **{"Content-Type": "image/png"}),
    )
    assert (foreign_photo.status_code, foreign_photo.json()["code"]) == (403, "case.not_your_unit")
    handle = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/handle", headers=as_key(other, **{"If-Match": '"4"'})
    )
    assert (handle.status_code, handle.json()["code"]) == (403, "case.not_your_unit")


async def test_a_check_in_records_the_distance_to_the_case_and_flags_a_far_one(stack):
    handler = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    case_id = await dispatched_to(stack, UNIT)
    lon, lat = CASE_POINT
    near = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/check-ins",
        json={"location": {"type": "Point", "coordinates": [lon, lat + 0.0003]}, "accuracy_m": 8.0},
        headers=as_key(handler),
    )
    assert near.status_code == 201, near.text
    assert 30 < near.json()["distance_m"] < 37  # 0.0003° of latitude is about 33 m
    assert near.json()["far"] is False
    assert near.json()["unit"] == UNIT
    far = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/check-ins",
        json={"location": {"type": "Point", "coordinates": [lon + 0.01, lat]}, "note": "GPS drifts here"},
        headers=as_key(handler),
    )
    assert far.status_code == 201
    assert 1000 < far.json()["distance_m"] < 1050
    assert far.json()["far"] is True
    listed = await stack.client.get(f"/api/case/v1/cases/{case_id}/check-ins", headers=stack.as_("reader"))
    assert [c["far"] for c in listed.json()["items"]] == [False, True]


async def test_bad_check_ins_are_refused(stack):
    handler = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    reported = (await report(stack)).json()["id"]
    too_early = await stack.client.post(
        f"/api/case/v1/cases/{reported}/check-ins",
        json={"location": {"type": "Point", "coordinates": CASE_POINT}},
        headers=stack.as_("clerk"),
    )
    assert (too_early.status_code, too_early.json()["code"]) == (409, "case.invalid_transition")
    case_id = await dispatched_to(stack, UNIT)
    for body in [
        {},
        {"location": {"type": "Point", "coordinates": [200, 23]}},
        {"location": {"type": "Point", "coordinates": ["113.3", "23.1"]}},
        {"location": {"type": "Point", "coordinates": CASE_POINT}, "accuracy_m": -1},
    ]:
        response = await stack.client.post(
            f"/api/case/v1/cases/{case_id}/check-ins", json=body, headers=as_key(handler)
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_failed"), body


async def test_a_handler_s_day_on_the_phone(stack):
    handler = await consumer(stack, "tianhe handler", ["handler"], unit=UNIT)
    case_id = await dispatched_to(stack, UNIT)
    (task,) = (await tasks(stack, handler))["items"]
    version = task["version"]
    accepted = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/accept", headers=as_key(handler, **{"If-Match": f'"{version}"'})
    )
    assert accepted.status_code == 200
    checked = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/check-ins",
        json={"location": {"type": "Point", "coordinates": CASE_POINT}},
        headers=as_key(handler),
    )
    assert checked.json()["distance_m"] == 0.0
    photo = await add_photo(stack, case_id, "after")
    assert photo.status_code == 201
    handled = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/handle",
        json={"note": "emptied and cleaned"},
        headers=as_key(handler, **{"If-Match": accepted.headers["etag"]}),
    )
    assert handled.json()["status"] == "handled", handled.text
    assert (await tasks(stack, handler))["items"] == []


async def test_a_service_principal_acts_as_the_platform_and_a_person_claiming_to_be_it_does_not(stack):
    case_id = (await report(stack)).json()["id"]
    platform = Principal(
        subject="service:dispatch-rules",
        kind="service",
        name="dispatch rules",
        roles=frozenset({"supervisor"}),  # named, but a service acts only as the platform
        scopes=frozenset({"cases:read", "cases:write"}),
    )
    token = stack.infrastructure.token(platform, "case")

    async def as_platform(action, version, body=None):
        return await stack.client.post(
            f"{stack.case_url}/v1/cases/{case_id}/{action}",
            json=body,
            headers={PRINCIPAL_HEADER: token, "If-Match": f'"{version}"'},
        )

    assert (await as_platform("register", 1)).status_code == 200
    assert (await as_platform("dispatch", 2, {"unit": UNIT})).status_code == 200
    accept = await as_platform("accept", 3)
    assert (accept.status_code, accept.json()["code"]) == (403, "case.role_not_allowed")
    cancel = await as_platform("cancel", 3, {"note": "no"})
    assert (cancel.status_code, cancel.json()["code"]) == (403, "case.role_not_allowed")
    await step(stack, case_id, "accept", 3)
    await step(stack, case_id, "handle", 4)

    claims = {"sub": "p-9", "name": "Zhou Min", "groups": ["system-role"]}
    bearer = {"Authorization": f"Bearer {people_token(claims)}"}
    close = await stack.client.post(
        f"/api/case/v1/cases/{case_id}/verify", json={"passed": True}, headers={**bearer, "If-Match": '"5"'}
    )
    assert (close.status_code, close.json()["code"]) == (403, "case.role_not_allowed")
    assert (await as_platform("verify", 5, {"passed": True})).json()["status"] == "closed"
