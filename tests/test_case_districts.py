"""District-bound principals in the case service: a district centre's key or a district's person
sees and changes only its district's cases, in every route that reads or changes one (lists, reads,
steps, photos, extensions, check-ins, the dispatch queue, evaluation, the live feed, Open311), and
nothing the whole city shares; a handler without a unit takes no unit's steps at all."""

from __future__ import annotations

from typing import Any

from citygrid.testing import wait_until
from tests.conftest import people_token
from tests.test_bad_input import assert_problem
from tests.test_case_flow import REPORT, add_photo, report, step
from tests.test_live import YUEXIU, case_feed, follow

TIANHE, YUEXIU_CODE = "440106", "440104"
CASES = "/api/case/v1/cases"


async def one_case_in_each(stack) -> tuple[str, str]:
    """A Tianhe case and a Yuexiu case, reported by the city-wide clerk and registered."""
    tianhe = (await report(stack)).json()["id"]
    yuexiu = (await report(stack, body=YUEXIU)).json()["id"]
    for case_id in (tianhe, yuexiu):
        assert (await step(stack, case_id, "register", 1)).status_code == 200
    return tianhe, yuexiu


async def case_as_admin(stack, case_id: str) -> dict[str, Any]:
    response = await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("admin"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


async def test_a_district_key_lists_and_reads_its_own_district_s_cases_only(stack):
    tianhe, yuexiu = await one_case_in_each(stack)
    assert ids(await stack.client.get(CASES, headers=stack.as_("reader"))) == {tianhe, yuexiu}
    assert ids(await stack.client.get(CASES, headers=stack.as_("tianhe-reader"))) == {tianhe}
    own_filter = await stack.client.get(
        CASES, params={"district": TIANHE}, headers=stack.as_("tianhe-reader")
    )
    assert ids(own_filter) == {tianhe}
    widened = await stack.client.get(
        CASES, params={"district": YUEXIU_CODE}, headers=stack.as_("tianhe-reader")
    )
    problem = assert_problem(widened, 403, "auth.other_district")
    assert problem["district"] == TIANHE

    assert (
        await stack.client.get(f"{CASES}/{tianhe}", headers=stack.as_("tianhe-reader"))
    ).status_code == 200
    for path in ("", "/evidence", "/extensions", "/check-ins"):
        response = await stack.client.get(f"{CASES}/{yuexiu}{path}", headers=stack.as_("tianhe-reader"))
        assert_problem(response, 403, "auth.other_district")
    queue = await stack.client.get("/api/case/v1/dispatch-queue", headers=stack.as_("tianhe-reader"))
    assert ids(queue) == {tianhe}


async def test_a_district_key_changes_nothing_of_another_district(stack):
    tianhe, yuexiu = await one_case_in_each(stack)
    before = await case_as_admin(stack, yuexiu)

    dispatched = await step(
        stack, yuexiu, "dispatch", 2, {"unit": "tianhe-sanitation"}, consumer="tianhe-clerk"
    )
    assert_problem(dispatched, 403, "auth.other_district")
    photo = await add_photo(stack, yuexiu, kind="before", consumer="tianhe-clerk")
    assert_problem(photo, 403, "auth.other_district")
    extension = await stack.client.post(
        f"{CASES}/{yuexiu}/extensions",
        json={"reason": "road permit", "new_deadline": "2030-01-01T00:00:00+08:00"},
        headers=stack.as_("tianhe-clerk", **{"If-Match": '"2"'}),
    )
    assert_problem(extension, 403, "auth.other_district")
    check_in = await stack.client.post(
        f"{CASES}/{yuexiu}/check-ins",
        json={"location": YUEXIU["location"]},
        headers=stack.as_("tianhe-clerk"),
    )
    assert_problem(check_in, 403, "auth.other_district")
    assert await case_as_admin(stack, yuexiu) == before  # no step, no photo, no history

    # Its own district's case it works as before.
    ours = await step(stack, tianhe, "dispatch", 2, {"unit": "tianhe-sanitation"}, consumer="tianhe-clerk")
    assert ours.status_code == 200, ours.text


async def test_a_district_key_reports_only_within_its_district_and_merges_only_into_it(stack):
    refused = await stack.client.post(CASES, json=YUEXIU, headers=stack.as_("tianhe-clerk"))
    assert_problem(refused, 403, "auth.other_district")
    # Where the point lies decides: a Yuexiu point named as Tianhe is still Yuexiu's.
    disguised = {**YUEXIU, "district_code": TIANHE}
    assert_problem(
        await stack.client.post(CASES, json=disguised, headers=stack.as_("tianhe-clerk")),
        403,
        "auth.other_district",
    )
    assert ids(await stack.client.get(CASES, headers=stack.as_("admin"))) == set()

    tianhe, yuexiu = await one_case_in_each(stack)
    duplicate = (await report(stack, consumer="tianhe-clerk")).json()["id"]
    merged = await step(
        stack, duplicate, "merge", 1, {"into": yuexiu, "note": "same bin"}, consumer="tianhe-clerk"
    )
    assert_problem(merged, 403, "auth.other_district")
    assert (await case_as_admin(stack, duplicate))["status"] == "reported"
    into_own = await step(
        stack, duplicate, "merge", 1, {"into": tianhe, "note": "same bin"}, consumer="tianhe-clerk"
    )
    assert into_own.status_code == 200, into_own.text


async def test_a_district_key_evaluates_and_follows_its_own_district(stack):
    tianhe, _ = await one_case_in_each(stack)
    params = {"from": "2020-01-01T00:00:00+08:00", "to": "2020-12-31T00:00:00+08:00", "by": "district"}
    evaluation = await stack.client.get(
        "/api/case/v1/evaluation", params=params, headers=stack.as_("tianhe-reader")
    )
    assert evaluation.status_code == 200, evaluation.text
    assert evaluation.json()["district"] == TIANHE
    other = await stack.client.get(
        "/api/case/v1/evaluation",
        params={**params, "district": YUEXIU_CODE},
        headers=stack.as_("tianhe-reader"),
    )
    assert_problem(other, 403, "auth.other_district")

    widened = await stack.client.get(
        f"{CASES}/live",
        params={"district": YUEXIU_CODE},
        headers=stack.as_("tianhe-reader", Accept="text/event-stream"),
    )
    assert_problem(widened, 403, "auth.other_district")
    # The feed has passed both reports and registrations before the screen opens.
    await wait_until(lambda: case_feed(stack).ready and (case_feed(stack).position or 0) >= 4)
    async with follow(stack, consumer="tianhe-reader") as screen:
        await report(stack, body=YUEXIU)
        latest = (await report(stack)).json()["id"]
        (change,) = await screen.take(1)
    assert (change.json()["case_id"], change.json()["district_code"]) == (latest, TIANHE)
    assert tianhe != latest


async def test_open311_reads_for_a_district_key_are_its_district_s_requests(stack):
    public = {**REPORT, "source": "public"}
    tianhe = (await report(stack, body=public)).json()
    yuexiu = (await report(stack, body={**YUEXIU, "source": "public"})).json()
    listed = await stack.client.get("/open311/v2/requests.json", headers=stack.as_("tianhe-reader"))
    assert listed.status_code == 200, listed.text
    assert [item["service_request_id"] for item in listed.json()] == [tianhe["number"]]
    everyone = await stack.client.get("/open311/v2/requests.json", headers=stack.as_("reader"))
    assert {item["service_request_id"] for item in everyone.json()} == {tianhe["number"], yuexiu["number"]}
    one = await stack.client.get(
        f"/open311/v2/requests/{yuexiu['number']}.json", headers=stack.as_("tianhe-reader")
    )
    # In the standard's error shape: [{"code": 403, "description": …}], the kit's code beside it.
    assert one.status_code == 403, one.text
    assert one.json()[0]["problem"] == "auth.other_district"
    token = await stack.client.get(
        f"/open311/v2/tokens/{yuexiu['id']}.json", headers=stack.as_("tianhe-reader")
    )
    assert token.status_code == 404, token.text


async def test_a_person_of_a_district_group_is_bound_to_it_as_a_key_is(stack):
    tianhe, yuexiu = await one_case_in_each(stack)
    token = people_token({"sub": "p-7", "name": "Zhou Min", "groups": ["readers", "tianhe"]})
    headers = {"Authorization": f"Bearer {token}"}
    assert ids(await stack.client.get(CASES, headers=headers)) == {tianhe}
    assert_problem(await stack.client.get(f"{CASES}/{yuexiu}", headers=headers), 403, "auth.other_district")


async def test_a_district_admin_does_not_edit_what_the_whole_city_shares(stack):
    calendar = await stack.client.put(
        "/api/case/v1/admin/calendars/2031",
        json={"holidays": [], "workdays": []},
        headers=stack.as_("tianhe-admin"),
    )
    assert_problem(calendar, 403, "auth.other_district")
    category = await stack.client.patch(
        "/api/case/v1/admin/categories/20106", json={"active": False}, headers=stack.as_("tianhe-admin")
    )
    assert_problem(category, 403, "auth.other_district")
    rule = await stack.client.post(
        "/api/case/v1/admin/dispatch-rules",
        json={"category_code": "20106", "area_code": TIANHE, "unit_code": "tianhe-sanitation"},
        headers=stack.as_("tianhe-admin"),
    )
    assert_problem(rule, 403, "auth.other_district")
    shown = await stack.client.get("/api/case/v1/categories/20106", headers=stack.as_("tianhe-reader"))
    assert shown.status_code == 200
    assert shown.json()["active"] is True


async def test_a_handler_without_a_unit_takes_no_unit_s_step(stack):
    case_id = (await report(stack)).json()["id"]
    await step(stack, case_id, "register", 1)
    assert (await step(stack, case_id, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
    refused = await step(stack, case_id, "accept", 3, consumer="unitless-handler")
    assert_problem(refused, 403, "case.no_unit")
    assert (await case_as_admin(stack, case_id))["status"] == "dispatched"
    accepted = await step(stack, case_id, "accept", 3)  # the clerk, of tianhe-sanitation
    assert accepted.status_code == 200, accepted.text


async def test_a_district_admin_mints_no_key_and_replays_no_event(stack):
    """The gateway's register of keys and the services' dead letters are the whole city's: a
    district's admin could otherwise mint itself a city-wide key or replay another district's events."""
    minted = await stack.client.post(
        "/admin/v1/consumers",
        json={"name": "wider", "scopes": ["cases:read", "pii:read"], "roles": ["supervisor"]},
        headers=stack.as_("tianhe-admin"),
    )
    assert_problem(minted, 403, "auth.other_district")
    listed = await stack.client.get("/admin/v1/consumers", headers=stack.as_("tianhe-admin"))
    assert_problem(listed, 403, "auth.other_district")
    for path in ("dead-letters", "outbox/quarantined"):
        response = await stack.client.get(f"/api/case/v1/admin/{path}", headers=stack.as_("tianhe-admin"))
        assert_problem(response, 403, "auth.other_district")
    assert (await stack.client.get("/admin/v1/consumers", headers=stack.as_("admin"))).status_code == 200


async def test_a_video_report_is_never_merged_into_another_district_s_case(stack):
    """Off the grid the named district stands: two video reports at one point, named for two
    districts, are two districts' cases, neither flagged nor merged into the other."""
    point = {"type": "Point", "coordinates": [112.0, 22.0]}
    video = {**REPORT, "source": "video", "location": point}
    first = (await report(stack, body={**video, "district_code": YUEXIU_CODE})).json()
    assert (await step(stack, first["id"], "register", 1)).status_code == 200
    same_district = (await report(stack, body={**video, "district_code": YUEXIU_CODE})).json()
    assert (same_district["likely_duplicate_of"], same_district["status"]) == (first["id"], "merged")
    other = (await report(stack, body={**video, "district_code": TIANHE})).json()
    assert (other["likely_duplicate_of"], other["status"], other["district_code"]) == (
        None,
        "reported",
        TIANHE,
    )
