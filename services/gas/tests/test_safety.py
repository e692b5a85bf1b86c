"""Household gas safety on real PostgreSQL: the notice lists of old stoves and cylinders near their
end, household inspections and the rectification of their hazards, and outreach activities."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from citygrid.clock import CITY_TIMEZONE
from citygrid.settings import to_libpq_url
from services.gas.domain import rules
from services.gas.safety import stove_sold_cutoff
from services.gas.tests.conftest import READER, TIANHE, Gas, cylinder

BAIYUN = "440111"
PII_READER = ("gas:read", "pii:read")
PII_WRITER = ("gas:read", "gas:write", "pii:read")
SAFETY_TABLES = ("hazards", "safety_inspections", "outreach_activities")


async def rows(gas: Gas, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def assert_nothing_written(gas: Gas) -> None:
    for table in SAFETY_TABLES:
        assert await rows(gas, f"SELECT 1 FROM {table}") == [], table  # noqa: S608


def city_today() -> date:
    return datetime.now(CITY_TIMEZONE).date()


def city_moment(days_ago: float = 0, minutes_ago: float = 0) -> str:
    return (datetime.now(CITY_TIMEZONE) - timedelta(days=days_ago, minutes=minutes_ago)).isoformat()


async def new_user(
    gas: Gas,
    name: str = "陈小明",
    *,
    district: str = TIANHE,
    stove_sold_on: date | None = None,
    phone: str = "13800138000",
    address: str = "天河区体育西路 100 号 1501 室",
) -> str:
    body: dict[str, Any] = {
        "kind": "household",
        "name": name,
        "phone": phone,
        "address": address,
        "district_code": district,
    }
    if stove_sold_on is not None:
        body["stove_sold_on"] = stove_sold_on.isoformat()
    response = await gas.post("/v1/users", body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def inspection(user_id: str, *hazards: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "inspected_at": city_moment(minutes_ago=30),
        "inspector": "李安检",
        "note": "厨房通风良好",
        "hazards": list(hazards),
        **changes,
    }


def hazard(kind: str = "hose_aged_or_damaged", rectify_in_days: int = 7, **changes: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "description": "胶管老化开裂",
        "rectify_by": (city_today() + timedelta(days=rectify_in_days)).isoformat(),
        **changes,
    }


async def inspect(gas: Gas, body: dict[str, Any], **as_: Any) -> dict[str, Any]:
    response = await gas.post("/v1/safety/inspections", body, **as_)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def all_pages(gas: Gas, path: str, **as_: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        separator = "&" if "?" in path else "?"
        response = await gas.get(path + (f"{separator}cursor={cursor}" if cursor else ""), **as_)
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "the pages do not end"


# -- stoves past their life ----------------------------------------------------------------------------


def test_the_stove_cutoff_is_the_last_sale_day_the_rule_calls_past_life() -> None:
    days = [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1), date(2100, 2, 28), date(2108, 2, 29)]
    days += [date(2026, 12, 2) + timedelta(days=n) for n in range(400)]
    for today in days:
        cutoff = stove_sold_cutoff(today)
        assert rules.stove_past_life(cutoff, today), today
        assert not rules.stove_past_life(cutoff + timedelta(days=1), today), today
    # 29 February 2092 ends its life on 28 February 2100 (no 29th that year): listed that day.
    assert stove_sold_cutoff(date(2100, 2, 28)) == date(2092, 2, 29)


async def test_a_stove_sold_eight_years_ago_today_is_listed_and_one_a_day_younger_is_not(gas: Gas) -> None:
    exactly = rules.add_years(city_today(), -8)
    oldest = await new_user(gas, "王老炉", stove_sold_on=exactly - timedelta(days=900))
    boundary = await new_user(gas, "赵八年", stove_sold_on=exactly)
    await new_user(gas, "钱新炉", stove_sold_on=exactly + timedelta(days=1))
    await new_user(gas, "孙无炉")
    await new_user(gas, "白云户", district=BAIYUN, stove_sold_on=exactly - timedelta(days=10))
    response = await gas.get(f"/v1/safety/stoves-past-life?district={TIANHE}", scopes=PII_READER)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["user"]["id"] for item in items] == [oldest, boundary]
    assert [item["user"]["name"] for item in items] == ["王老炉", "赵八年"]
    assert items[1]["life_ended_on"] == city_today().isoformat()
    assert items[0]["life_ended_on"] == rules.stove_life_ends(exactly - timedelta(days=900)).isoformat()
    assert items[1]["user"]["stove_sold_on"] == exactly.isoformat()
    assert response.json()["next_cursor"] is None


async def test_the_stove_list_masks_names_phones_and_addresses_without_pii_read(gas: Gas) -> None:
    await new_user(gas, "陈小明", stove_sold_on=date(2010, 5, 1))
    response = await gas.get(f"/v1/safety/stoves-past-life?district={TIANHE}", scopes=READER)
    (item,) = response.json()["items"]
    assert item["user"]["name"] == "陈**"
    assert item["user"]["phone"] == "138****8000"
    assert "100" not in item["user"]["address"]
    assert "1501" not in item["user"]["address"]
    assert "体育西路" in item["user"]["address"]


async def test_the_stove_list_pages_oldest_first_without_losing_a_tie(gas: Gas) -> None:
    sold = [date(2011, 3, 1), date(2012, 6, 1), date(2012, 6, 1), date(2013, 1, 9), date(2015, 7, 7)]
    ids = [await new_user(gas, f"户{n}", stove_sold_on=day) for n, day in enumerate(sold)]
    pages = await all_pages(gas, f"/v1/safety/stoves-past-life?district={TIANHE}&limit=2")
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [item["user"] for page in pages for item in page]
    assert [user["stove_sold_on"] for user in listed] == [day.isoformat() for day in sold]
    assert sorted(user["id"] for user in listed) == sorted(ids)


async def test_the_stove_list_is_one_districts_and_a_district_bound_caller_gets_its_own(gas: Gas) -> None:
    await new_user(gas, "天河户", stove_sold_on=date(2010, 1, 1))
    await new_user(gas, "白云户", district=BAIYUN, stove_sold_on=date(2010, 1, 1))
    city_wide = await gas.get("/v1/safety/stoves-past-life", scopes=READER)
    assert city_wide.status_code == 422
    assert city_wide.json()["code"] == "gas.district_required"
    own = await gas.get("/v1/safety/stoves-past-life", scopes=READER, district=BAIYUN)
    assert [item["user"]["district_code"] for item in own.json()["items"]] == [BAIYUN]
    other = await gas.get(f"/v1/safety/stoves-past-life?district={TIANHE}", scopes=READER, district=BAIYUN)
    assert other.status_code == 403
    assert other.json()["code"] == "auth.other_district"


# -- cylinders near their end of life ------------------------------------------------------------------


def made_for_end(end: date) -> date:
    made = rules.add_years(end, -rules.DESIGN_LIFE_YEARS)
    assert rules.end_of_life(made, None) == end
    return made


async def test_cylinders_whose_life_ends_within_the_window_are_listed_soonest_first(gas: Gas) -> None:
    today = city_today()
    window_end = rules.add_months(today, 6)
    ends = {
        "GZ0000000001": today,  # ends today: past, not near
        "GZ0000000002": today + timedelta(days=1),
        "GZ0000000003": rules.add_months(today, 3),
        "GZ0000000004": window_end,  # the window's last day is in it
        "GZ0000000005": window_end + timedelta(days=1),
        "GZ0000000006": rules.add_months(today, 2),  # scrapped below
        "NF0000000007": rules.add_months(today, 1),  # another company's
    }
    await gas.register_demo()
    imported = await gas.post(
        "/v1/cylinders/import",
        {
            "cylinders": [
                cylinder(code, owner="NANFANG" if code.startswith("NF") else "GZGAS", made=made_for_end(end))
                for code, end in ends.items()
            ]
        },
    )
    assert imported.json()["created"] == len(ends), imported.text
    await rows(gas, "UPDATE cylinders SET status = 'scrapped' WHERE code = 'GZ0000000006'")
    listed = await gas.get("/v1/safety/cylinders-near-end-of-life?owner=GZGAS", scopes=READER)
    assert listed.status_code == 200, listed.text
    assert [(c["code"], c["end_of_life"]) for c in listed.json()["items"]] == [
        (code, ends[code].isoformat()) for code in ("GZ0000000002", "GZ0000000003", "GZ0000000004")
    ]
    whole_city = await gas.get("/v1/safety/cylinders-near-end-of-life?months=1", scopes=READER)
    assert [c["code"] for c in whole_city.json()["items"]] == ["GZ0000000002", "NF0000000007"]
    wider = await all_pages(gas, "/v1/safety/cylinders-near-end-of-life?owner=GZGAS&months=7&limit=2")
    assert [[c["code"] for c in page] for page in wider] == [
        ["GZ0000000002", "GZ0000000003"],
        ["GZ0000000004", "GZ0000000005"],
    ]


async def test_the_cylinder_list_is_the_whole_citys_and_checks_its_parameters(gas: Gas) -> None:
    await gas.register_demo()
    bound = await gas.get("/v1/safety/cylinders-near-end-of-life", scopes=READER, district=TIANHE)
    assert bound.status_code == 403
    assert bound.json()["code"] == "auth.other_district"
    for months in ("0", "25", "six"):
        bad = await gas.get(f"/v1/safety/cylinders-near-end-of-life?months={months}", scopes=READER)
        assert bad.status_code == 422, months
        assert bad.json()["code"] == "validation_failed"
    unknown = await gas.get("/v1/safety/cylinders-near-end-of-life?owner=NOBODY", scopes=READER)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "gas.unknown_enterprise"
    cursor = await gas.get("/v1/safety/cylinders-near-end-of-life?cursor=bm90LWEtY3Vyc29y", scopes=READER)
    assert cursor.status_code == 400
    assert cursor.json()["code"] == "pagination.invalid_cursor"


# -- inspections and hazards ---------------------------------------------------------------------------


async def test_an_inspection_is_recorded_with_its_hazards_in_the_users_district(gas: Gas) -> None:
    user_id = await new_user(gas)
    body = inspection(
        user_id,
        hazard("hose_aged_or_damaged", 7),
        hazard("no_leak_alarm", 30, description=None),
    )
    response = await gas.post("/v1/safety/inspections", body, scopes=PII_WRITER)
    assert response.status_code == 201, response.text
    recorded = response.json()
    assert response.headers["Location"] == f"/v1/safety/inspections/{recorded['id']}"
    assert recorded["user_id"] == user_id
    assert recorded["district_code"] == TIANHE
    assert recorded["inspector"] == "李安检"
    assert recorded["note"] == "厨房通风良好"
    assert recorded["version"] == 1
    assert datetime.fromisoformat(recorded["inspected_at"]) == datetime.fromisoformat(body["inspected_at"])
    assert [(h["kind"], h["rectify_by"], h["description"]) for h in recorded["hazards"]] == [
        ("hose_aged_or_damaged", body["hazards"][0]["rectify_by"], "胶管老化开裂"),
        ("no_leak_alarm", body["hazards"][1]["rectify_by"], None),
    ]
    assert all(h["district_code"] == TIANHE and h["rectified_at"] is None for h in recorded["hazards"])
    again = await gas.get(f"/v1/safety/inspections/{recorded['id']}", scopes=PII_READER)
    assert again.status_code == 200
    assert again.json() == recorded
    stored = await rows(gas, "SELECT kind, district_code, inspection_id FROM hazards ORDER BY rectify_by")
    assert [(r["kind"], r["district_code"], str(r["inspection_id"])) for r in stored] == [
        ("hose_aged_or_damaged", TIANHE, recorded["id"]),
        ("no_leak_alarm", TIANHE, recorded["id"]),
    ]


async def test_a_users_inspections_are_listed_newest_first_page_by_page(gas: Gas) -> None:
    user_id = await new_user(gas)
    other = await new_user(gas, "邻居")
    ids = []
    for days_ago in (30, 10, 20):
        done = await inspect(gas, inspection(user_id, hazard(), inspected_at=city_moment(days_ago=days_ago)))
        ids.append(done["id"])
    await inspect(gas, inspection(other))
    pages = await all_pages(gas, f"/v1/users/{user_id}/inspections?limit=2")
    assert [[i["id"] for i in page] for page in pages] == [[ids[1], ids[2]], [ids[0]]]
    assert all(len(i["hazards"]) == 1 for page in pages for i in page)
    missing = await gas.get(f"/v1/users/{uuid.uuid4()}/inspections")
    assert missing.status_code == 404
    assert missing.json()["code"] == "gas.unknown_user"


@pytest.mark.parametrize(
    "cursor",
    [
        # A time whose offset takes it before year 1 in UTC; a time without its offset.
        "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzA1OjAwIiwiMDE5MGUwYTAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAwIl0",
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiMDE5MGUwYTAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAwIl0",
        "WzEsMl0",
    ],
)
async def test_a_forged_inspection_cursor_is_a_400_problem(gas: Gas, cursor: str) -> None:
    user_id = await new_user(gas)
    response = await gas.get(f"/v1/users/{user_id}/inspections?cursor={cursor}")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "pagination.invalid_cursor"


async def test_an_inspection_of_an_unknown_user_is_404_and_writes_nothing(gas: Gas) -> None:
    response = await gas.post("/v1/safety/inspections", inspection(str(uuid.uuid4()), hazard()))
    assert response.status_code == 404
    assert response.json()["code"] == "gas.unknown_user"
    await assert_nothing_written(gas)
    unknown = await gas.get(f"/v1/safety/inspections/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "gas.unknown_inspection"


async def test_an_inspection_more_than_ten_minutes_ahead_is_refused_and_writes_nothing(gas: Gas) -> None:
    user_id = await new_user(gas)
    ahead = await gas.post(
        "/v1/safety/inspections", inspection(user_id, hazard(), inspected_at=city_moment(minutes_ago=-20))
    )
    assert ahead.status_code == 422
    assert ahead.json()["code"] == "gas.inspection_in_the_future"
    await assert_nothing_written(gas)
    # A handset's clock a few minutes fast is not a mistake.
    await inspect(gas, inspection(user_id, inspected_at=city_moment(minutes_ago=-5)))


async def test_a_hazard_is_rectified_once_and_leaves_the_open_list(gas: Gas) -> None:
    user_id = await new_user(gas)
    recorded = await inspect(gas, inspection(user_id, hazard(rectify_in_days=3), hazard("valve_leak", 1)))
    valve, hose = recorded["hazards"]
    assert valve["kind"] == "valve_leak"
    done = await gas.post(f"/v1/safety/hazards/{valve['id']}/rectify", {}, subject="officer-7")
    assert done.status_code == 200, done.text
    assert done.json()["rectified_by"] == "officer-7"
    assert done.json()["rectified_at"] is not None
    stored = await rows(
        gas, "SELECT rectified_at, rectified_by, now() AS now FROM hazards WHERE kind = 'valve_leak'"
    )
    assert stored[0]["rectified_by"] == "officer-7"
    assert stored[0]["rectified_at"] <= stored[0]["now"]
    twice = await gas.post(f"/v1/safety/hazards/{valve['id']}/rectify", {}, subject="officer-8")
    assert twice.status_code == 409
    assert twice.json()["code"] == "gas.hazard_already_rectified"
    assert (await rows(gas, "SELECT rectified_by FROM hazards WHERE kind = 'valve_leak'"))[0][
        0
    ] == "officer-7"
    open_list = await gas.get("/v1/safety/hazards")
    assert [h["id"] for h in open_list.json()["items"]] == [hose["id"]]
    shown = await gas.get(f"/v1/safety/inspections/{recorded['id']}")
    assert shown.json()["version"] == 2
    assert [h["rectified_by"] for h in shown.json()["hazards"]] == ["officer-7", None]
    # Without a body at all, as a button press sends it.
    bare = await gas.client.post(f"/v1/safety/hazards/{hose['id']}/rectify", headers=gas.as_())
    assert bare.status_code == 200, bare.text
    unknown = await gas.post(f"/v1/safety/hazards/{uuid.uuid4()}/rectify", {})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "gas.unknown_hazard"


async def test_open_hazards_are_listed_soonest_deadline_first_and_overdue_ones_alone(gas: Gas) -> None:
    user_id = await new_user(gas)
    baiyun_user = await new_user(gas, "白云户", district=BAIYUN)
    recorded = await inspect(
        gas,
        inspection(
            user_id,
            hazard("valve_leak", 7),
            hazard("no_leak_alarm", -1),  # due yesterday: overdue
            hazard("other", 0),  # due today: not overdue yet
            hazard("illegal_cylinder", -2),
            inspected_at=city_moment(days_ago=5),
        ),
    )
    await inspect(
        gas, inspection(baiyun_user, hazard("valve_leak", -3), inspected_at=city_moment(days_ago=5))
    )
    by_kind = {h["kind"]: h["id"] for h in recorded["hazards"]}
    every = await all_pages(gas, f"/v1/safety/hazards?district={TIANHE}&limit=3")
    assert [[h["kind"] for h in page] for page in every] == [
        ["illegal_cylinder", "no_leak_alarm", "other"],
        ["valve_leak"],
    ]
    overdue = await gas.get(f"/v1/safety/hazards?district={TIANHE}&overdue=true")
    assert [h["id"] for h in overdue.json()["items"]] == [
        by_kind["illegal_cylinder"],
        by_kind["no_leak_alarm"],
    ]
    within = await gas.get(f"/v1/safety/hazards?district={TIANHE}&overdue=false")
    assert [h["kind"] for h in within.json()["items"]] == ["other", "valve_leak"]
    city_wide = await gas.get("/v1/safety/hazards?overdue=true")
    assert [h["district_code"] for h in city_wide.json()["items"]] == [BAIYUN, TIANHE, TIANHE]
    bad = await gas.get("/v1/safety/hazards?overdue=perhaps")
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_failed"


async def test_a_district_bound_officer_works_in_its_own_district_only(gas: Gas) -> None:
    tianhe_user = await new_user(gas)
    baiyun_user = await new_user(gas, "白云户", district=BAIYUN)
    own = await inspect(gas, inspection(tianhe_user, hazard()), district=TIANHE)
    baiyun = await inspect(gas, inspection(baiyun_user, hazard("valve_leak")))
    refused = await gas.post("/v1/safety/inspections", inspection(baiyun_user, hazard()), district=TIANHE)
    assert refused.status_code == 403
    assert refused.json()["code"] == "auth.other_district"
    assert len(await rows(gas, "SELECT 1 FROM safety_inspections")) == 2
    shown = await gas.get(f"/v1/safety/inspections/{own['id']}", district=TIANHE)
    assert shown.status_code == 200
    other = await gas.get(f"/v1/safety/inspections/{baiyun['id']}", district=TIANHE)
    assert other.status_code == 403
    assert other.json()["code"] == "auth.other_district"
    history = await gas.get(f"/v1/users/{baiyun_user}/inspections", district=TIANHE)
    assert history.status_code == 403
    listed = await gas.get("/v1/safety/hazards", district=TIANHE)
    assert [h["district_code"] for h in listed.json()["items"]] == [TIANHE]
    asked_for_other = await gas.get(f"/v1/safety/hazards?district={BAIYUN}", district=TIANHE)
    assert asked_for_other.status_code == 403
    assert asked_for_other.json()["code"] == "auth.other_district"
    rectify = await gas.post(f"/v1/safety/hazards/{baiyun['hazards'][0]['id']}/rectify", {}, district=TIANHE)
    assert rectify.status_code == 403
    assert rectify.json()["code"] == "auth.other_district"
    assert await rows(gas, "SELECT 1 FROM hazards WHERE rectified_at IS NOT NULL") == []


async def test_an_inspections_free_text_is_masked_without_pii_read(gas: Gas) -> None:
    user_id = await new_user(gas)
    recorded = await inspect(
        gas,
        inspection(
            user_id,
            hazard(description="邻居电话 13912345678 反映气味"),
            note="户主电话 13800138000，已告知",
        ),
        scopes=PII_WRITER,
    )
    assert "13800138000" in recorded["note"]
    masked = (await gas.get(f"/v1/safety/inspections/{recorded['id']}", scopes=READER)).json()
    assert "13800138000" not in masked["note"]
    assert "已告知" in masked["note"]
    assert "13912345678" not in masked["hazards"][0]["description"]
    hazards = (await gas.get("/v1/safety/hazards", scopes=READER)).json()["items"]
    assert "13912345678" not in hazards[0]["description"]


# -- outreach ------------------------------------------------------------------------------------------


def outreach(
    days_ago: int = 1, district: str = TIANHE, attendance: Any = 120, **changes: Any
) -> dict[str, Any]:
    return {
        "district_code": district,
        "street": "石牌街道",
        "held_on": (city_today() - timedelta(days=days_ago)).isoformat(),
        "place": "石牌村文化广场",
        "topic": "瓶装液化气安全使用",
        "attendance": attendance,
        "organiser": "天河区城管局",
        **changes,
    }


async def record(gas: Gas, body: dict[str, Any], **as_: Any) -> dict[str, Any]:
    response = await gas.post("/v1/safety/outreach", body, **as_)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_an_outreach_activity_is_recorded_once_held(gas: Gas) -> None:
    response = await gas.post("/v1/safety/outreach", outreach(days_ago=0), subject="campaign-1")
    assert response.status_code == 201, response.text
    activity = response.json()
    assert response.headers["Location"] == f"/v1/safety/outreach/{activity['id']}"
    assert {k: activity[k] for k in ("district_code", "street", "held_on", "attendance", "recorded_by")} == {
        "district_code": TIANHE,
        "street": "石牌街道",
        "held_on": city_today().isoformat(),
        "attendance": 120,
        "recorded_by": "campaign-1",
    }
    assert (await gas.get(f"/v1/safety/outreach/{activity['id']}")).json() == activity
    tomorrow = await gas.post("/v1/safety/outreach", outreach(days_ago=-1))
    assert tomorrow.status_code == 422
    assert tomorrow.json()["code"] == "gas.outreach_in_the_future"
    assert len(await rows(gas, "SELECT 1 FROM outreach_activities")) == 1
    unknown = await gas.get(f"/v1/safety/outreach/{uuid.uuid4()}")
    assert unknown.json()["code"] == "gas.unknown_outreach"


async def test_outreach_is_listed_newest_first_within_the_period(gas: Gas) -> None:
    for days_ago in (40, 3, 10, 20, 1):
        await record(gas, outreach(days_ago=days_ago))
    await record(gas, outreach(days_ago=2, district=BAIYUN))
    since = (city_today() - timedelta(days=25)).isoformat()
    until = (city_today() - timedelta(days=1)).isoformat()
    pages = await all_pages(gas, f"/v1/safety/outreach?district={TIANHE}&from={since}&to={until}&limit=2")
    held = [[a["held_on"] for a in page] for page in pages]
    expected = [(city_today() - timedelta(days=n)).isoformat() for n in (1, 3, 10, 20)]
    assert held == [expected[:2], expected[2:]]
    bound = await gas.get("/v1/safety/outreach", district=BAIYUN)
    assert [a["district_code"] for a in bound.json()["items"]] == [BAIYUN]
    backwards = await gas.get(f"/v1/safety/outreach?from={until}&to={since}")
    assert backwards.status_code == 422
    assert backwards.json()["code"] == "gas.invalid_period"


async def test_the_campaign_figures_count_activities_and_attendance_per_district(gas: Gas) -> None:
    await record(gas, outreach(days_ago=5, attendance=120))
    await record(gas, outreach(days_ago=3, attendance=80))
    await record(gas, outreach(days_ago=60, attendance=1000))  # before the period
    await record(gas, outreach(days_ago=2, district=BAIYUN, attendance=45))
    since = (city_today() - timedelta(days=30)).isoformat()
    figures = await gas.get(f"/v1/safety/outreach/figures?from={since}&to={city_today().isoformat()}")
    assert figures.status_code == 200, figures.text
    by_district = {
        d["district_code"]: (d["activities"], d["attendance"]) for d in figures.json()["districts"]
    }
    assert by_district[TIANHE] == (2, 200)
    assert by_district[BAIYUN] == (1, 45)
    assert by_district["440103"] == (0, 0), "a district that held none is shown with zeros"
    assert figures.json()["first_day"] == since
    everything = await gas.get("/v1/safety/outreach/figures")
    assert {d["district_code"]: d["attendance"] for d in everything.json()["districts"]}[TIANHE] == 1200
    bound = await gas.get(f"/v1/safety/outreach/figures?from={since}", district=BAIYUN)
    assert bound.json()["districts"] == [{"district_code": BAIYUN, "activities": 1, "attendance": 45}]
    refused = await gas.post("/v1/safety/outreach", outreach(), district=BAIYUN)
    assert refused.status_code == 403
    assert refused.json()["code"] == "auth.other_district"


# -- bad input -----------------------------------------------------------------------------------------


def _inspection_with(**changes: Any) -> dict[str, Any]:
    return {**inspection(str(uuid.uuid4()), hazard()), **changes}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/safety/inspections", _inspection_with(hazards=[hazard()] * 21)),
        ("/v1/safety/inspections", _inspection_with(hazards=[hazard(), hazard("gas_smell")])),
        ("/v1/safety/inspections", _inspection_with(hazards=[hazard(rectify_by="soon")])),
        ("/v1/safety/inspections", _inspection_with(hazards=[hazard(rectify_in_days=-40)])),
        ("/v1/safety/inspections", _inspection_with(inspector="  ")),
        ("/v1/safety/inspections", _inspection_with(inspected_at="yesterday")),
        ("/v1/safety/inspections", _inspection_with(user_id="not-a-user")),
        ("/v1/safety/inspections", _inspection_with(note="x" * 1001)),
        ("/v1/safety/inspections", _inspection_with(note="a\x00b")),
        ("/v1/safety/inspections", _inspection_with(district_code=TIANHE)),
        ("/v1/safety/inspections", {"inspector": "李安检"}),
        ("/v1/safety/outreach", outreach(attendance=100_001)),
        ("/v1/safety/outreach", outreach(attendance=-1)),
        ("/v1/safety/outreach", outreach(attendance="120")),
        ("/v1/safety/outreach", outreach(attendance=True)),
        ("/v1/safety/outreach", outreach(district="999999")),
        ("/v1/safety/outreach", outreach(held_on="2026-02-30")),
        ("/v1/safety/outreach", outreach(place="")),
        ("/v1/safety/outreach", {"district_code": TIANHE}),
    ],
)
async def test_a_bad_body_is_a_validation_problem_and_writes_nothing(gas: Gas, path: str, body: Any) -> None:
    await new_user(gas)
    response = await gas.post(path, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_failed"
    await assert_nothing_written(gas)


async def test_a_rectification_with_a_note_is_refused_until_the_note_can_be_kept(gas: Gas) -> None:
    user_id = await new_user(gas)
    recorded = await inspect(gas, inspection(user_id, hazard()))
    hazard_id = recorded["hazards"][0]["id"]
    response = await gas.post(f"/v1/safety/hazards/{hazard_id}/rectify", {"note": "已更换胶管"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert await rows(gas, "SELECT 1 FROM hazards WHERE rectified_at IS NOT NULL") == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/safety/hazards?cursor=%7B%7D",
        "/v1/safety/hazards?cursor=WyJub3QtYS1kYXRlIiwieCJd",
        "/v1/safety/hazards?limit=0",
        "/v1/safety/hazards?district=44010",
        f"/v1/safety/stoves-past-life?district={TIANHE}&cursor=WzEsMl0",
        "/v1/safety/outreach?from=2026-13-01",
        "/v1/safety/outreach/figures?to=someday",
        "/v1/safety/inspections/not-a-uuid",
        "/v1/users/not-a-uuid/inspections",
    ],
)
async def test_a_bad_query_or_path_is_a_4xx_problem(gas: Gas, path: str) -> None:
    response = await gas.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
