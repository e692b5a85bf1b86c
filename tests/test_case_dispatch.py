"""Responsible units and dispatch rules through the gateway: automatic dispatch, the queue, refusals."""

from __future__ import annotations

import pytest

from citygrid.testing import stream_events
from tests.test_bad_input import assert_problem
from tests.test_case_flow import REPORT, report, step

API = "/api/case/v1"
RULES = f"{API}/admin/dispatch-rules"


async def add_rule(stack, category_code, area_code, unit_code):
    response = await stack.client.post(
        RULES,
        json={"category_code": category_code, "area_code": area_code, "unit_code": unit_code},
        headers=stack.as_("admin"),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def put_unit(stack, code, **fields):
    body = {"name": f"unit {code}", "type": "street_office", "district_code": "440106"} | fields
    return await stack.client.put(f"{API}/admin/units/{code}", json=body, headers=stack.as_("admin"))


async def queue(stack, **params):
    response = await stack.client.get(f"{API}/dispatch-queue", params=params, headers=stack.as_("reader"))
    assert response.status_code == 200, response.text
    return response.json()


# -- units ---------------------------------------------------------------------------------------


async def test_the_shipped_units_of_guangzhou_are_listed_with_their_hierarchy(stack):
    tianhe = (
        await stack.client.get(f"{API}/units", params={"district": "440106"}, headers=stack.as_("reader"))
    ).json()
    codes = [unit["code"] for unit in tianhe["items"]]
    assert codes == sorted(codes)
    assert {"tianhe-sanitation", "power-supply-tianhe", "tianhe-city-management"} <= set(codes)
    unit = (await stack.client.get(f"{API}/units/tianhe-sanitation", headers=stack.as_("reader"))).json()
    assert (unit["type"], unit["parent_code"], unit["active"]) == (
        "sanitation",
        "tianhe-city-management",
        True,
    )
    children = (
        await stack.client.get(
            f"{API}/units", params={"parent": "gz-city-management"}, headers=stack.as_("reader")
        )
    ).json()
    assert len(children["items"]) == 11
    assert_problem(
        await stack.client.get(f"{API}/units/nobody", headers=stack.as_("reader")), 404, "case.unit_not_found"
    )


async def test_an_admin_adds_a_unit_under_a_parent_and_a_cycle_or_unknown_parent_is_refused(stack):
    created = await put_unit(stack, "tianhe-shipai-street", parent_code="tianhe-city-management")
    assert created.status_code == 201, created.text
    changed = await put_unit(
        stack, "tianhe-shipai-street", name="石牌街道办事处", parent_code="tianhe-city-management"
    )
    assert (changed.status_code, changed.json()["name"]) == (200, "石牌街道办事处")
    assert_problem(await put_unit(stack, "x-street", parent_code="nobody"), 422, "case.invalid_unit")
    cycle = await put_unit(
        stack, "tianhe-city-management", type="district_office", parent_code="tianhe-shipai-street"
    )
    assert_problem(cycle, 422, "case.invalid_unit")
    assert_problem(await put_unit(stack, "x-street", type="no-such-type"), 422, "validation_failed")
    refused = await stack.client.put(
        f"{API}/admin/units/x-street", json={"name": "x", "type": "parks"}, headers=stack.as_("clerk")
    )
    assert refused.status_code == 403


async def test_dispatch_must_name_a_known_active_unit(stack):
    case_id = (await report(stack)).json()["id"]
    await step(stack, case_id, "register", 1)
    unknown = await step(stack, case_id, "dispatch", 2, {"unit": "no-such-unit"})
    assert_problem(unknown, 422, "case.unknown_unit")
    retired = await put_unit(
        stack, "tianhe-parks", type="parks", active=False, parent_code="tianhe-city-management"
    )
    assert retired.json()["active"] is False
    inactive = await step(stack, case_id, "dispatch", 2, {"unit": "tianhe-parks"})
    assert_problem(inactive, 422, "case.inactive_unit")
    case = (await stack.client.get(f"{API}/cases/{case_id}", headers=stack.as_("reader"))).json()
    assert (case["status"], case["version"], case["unit"]) == ("registered", 2, None)
    assert (await step(stack, case_id, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200


# -- rules ---------------------------------------------------------------------------------------


async def test_a_matching_rule_dispatches_the_case_as_the_system_when_it_is_registered(stack):
    await add_rule(stack, "201", "440106", "tianhe-sanitation")
    case_id = (await report(stack)).json()["id"]
    registered = await step(stack, case_id, "register", 1)
    assert registered.status_code == 200, registered.text
    case = registered.json()
    assert (case["status"], case["unit"], case["version"]) == ("dispatched", "tianhe-sanitation", 3)
    assert registered.headers["etag"] == '"3"'
    assert [(h["action"], h["actor"]) for h in case["history"]][1:] == [
        ("register", case["history"][1]["actor"]),
        ("dispatch", "system:case"),
    ]
    assert "201 × 440106 → tianhe-sanitation" in case["history"][2]["note"]
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=3)
    assert [(e.type, e.data["actor"] if e.data else None) for e in events][1:] == [
        ("case.case.registered.v1", case["history"][1]["actor"]),
        ("case.case.dispatched.v1", "system:case"),
    ]
    assert events[2].data is not None
    assert events[2].data["unit"] == "tianhe-sanitation"
    assert (await queue(stack))["items"] == []


async def test_the_most_specific_rule_wins(stack):
    await put_unit(stack, "tianhe-street-office", parent_code="tianhe-city-management")
    street = (await report(stack)).json()["street_code"]
    await add_rule(stack, "201", "", "gz-city-management")
    await add_rule(stack, "201", street, "tianhe-street-office")
    await add_rule(stack, "20106", "440106", "tianhe-sanitation")
    bin_case = (await report(stack)).json()["id"]
    garbage = (await report(stack, body={**REPORT, "category_code": "20101"})).json()["id"]
    elsewhere = {
        **REPORT,
        "district_code": "440104",
        "location": {"type": "Point", "coordinates": [113.2668, 23.1291]},
    }
    yuexiu = (await report(stack, body={**elsewhere, "category_code": "20101"})).json()["id"]
    units = [
        (await step(stack, case_id, "register", 1)).json()["unit"] for case_id in (bin_case, garbage, yuexiu)
    ]
    assert units == ["tianhe-sanitation", "tianhe-street-office", "gz-city-management"]


async def test_a_rule_to_a_retired_unit_does_not_dispatch(stack):
    await add_rule(stack, "20106", "440106", "tianhe-parks")
    await put_unit(stack, "tianhe-parks", type="parks", active=False, parent_code="tianhe-city-management")
    case_id = (await report(stack)).json()["id"]
    assert (await step(stack, case_id, "register", 1)).json()["status"] == "registered"


async def test_without_a_matching_rule_registered_cases_wait_in_the_dispatchers_queue_oldest_first(stack):
    await add_rule(stack, "20106", "440104", "yuexiu-sanitation")  # another district: no match
    ids = []
    for category in ["20106", "20101", "20106"]:
        case_id = (await report(stack, body={**REPORT, "category_code": category})).json()["id"]
        assert (await step(stack, case_id, "register", 1)).json()["status"] == "registered"
        ids.append(case_id)
    ids.append((await report(stack)).json()["id"])  # reported, not registered: not in the queue
    seen, cursor = [], None
    while True:
        page = await queue(stack, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[:3]
    assert [item["id"] for item in (await queue(stack, category="20106"))["items"]] == [ids[0], ids[2]]
    assert (await queue(stack, district="440104"))["items"] == []
    street = (await queue(stack))["items"][0]["street_code"]
    assert len((await queue(stack, street=street))["items"]) == 3
    await step(stack, ids[0], "dispatch", 2, {"unit": "tianhe-sanitation"})
    assert [item["id"] for item in (await queue(stack))["items"]] == ids[1:3]


async def test_rules_are_listed_and_deleted_and_bad_rules_are_refused(stack):
    rule = await add_rule(stack, "20106", "440106", "tianhe-sanitation")
    listed = (await stack.client.get(f"{API}/dispatch-rules", headers=stack.as_("reader"))).json()
    assert [item["id"] for item in listed["items"]] == [rule["id"]]
    duplicate = await stack.client.post(
        RULES,
        json={"category_code": "20106", "area_code": "440106", "unit_code": "tianhe-parks"},
        headers=stack.as_("admin"),
    )
    assert_problem(duplicate, 409, "case.duplicate_dispatch_rule")
    for body, status, code in [
        (
            {"category_code": "29999", "area_code": "440106", "unit_code": "tianhe-sanitation"},
            422,
            "case.invalid_dispatch_rule",
        ),
        (
            {"category_code": "20106", "area_code": "999999", "unit_code": "tianhe-sanitation"},
            422,
            "case.invalid_dispatch_rule",
        ),
        ({"category_code": "20106", "area_code": "440106", "unit_code": "nobody"}, 422, "case.unknown_unit"),
        (
            {"category_code": "2010", "area_code": "440106", "unit_code": "tianhe-sanitation"},
            422,
            "validation_failed",
        ),
        (
            {"category_code": "20106", "area_code": "4401061", "unit_code": "tianhe-sanitation"},
            422,
            "validation_failed",
        ),
    ]:
        assert_problem(await stack.client.post(RULES, json=body, headers=stack.as_("admin")), status, code)
    deleted = await stack.client.delete(f"{RULES}/{rule['id']}", headers=stack.as_("admin"))
    assert deleted.status_code == 204
    again = await stack.client.delete(f"{RULES}/{rule['id']}", headers=stack.as_("admin"))
    assert_problem(again, 404, "case.dispatch_rule_not_found")
    refused = await stack.client.post(
        RULES,
        json={"category_code": "20106", "area_code": "", "unit_code": "gz-gas"},
        headers=stack.as_("clerk"),
    )
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("units", {"parent": "tianhe\x00"}),
        ("dispatch-rules", {"unit": "tianhe\x00"}),
        ("units", {"parent": "Tianhe Sanitation"}),
    ],
    ids=["nul-parent", "nul-unit", "not-a-unit-code"],
)
async def test_a_unit_filter_that_is_no_unit_code_is_refused_with_422(stack, path, params):
    response = await stack.client.get(f"{API}/{path}", params=params, headers=stack.as_("reader"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
