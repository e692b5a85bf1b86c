"""The register over HTTP, on real PostgreSQL: imports by key with every refusal named, keyset
pages, one record by key, personal data masked, districts kept apart."""

from __future__ import annotations

from typing import Any

from services.waste.tests.conftest import HUANGPU, READER, TIANHE, Waste, point


def vehicle(plate: str, terminal: int = 1001, **changes: Any) -> dict[str, Any]:
    return {
        "plate": plate,
        "kind": "collection",
        "stream": "food",
        "company": "Huangpu Sanitation",
        "district_code": HUANGPU,
        "terminal_phone": f"0139{terminal:08d}",
        "driver_name": "王强",
        "driver_phone": "13987654321",
        **changes,
    }


FACILITY = {
    "code": "HP-FOOD-1",
    "name": "Huangpu food waste treatment plant",
    "kind": "food_waste_treatment",
    "district_code": HUANGPU,
    "location": {"type": "Point", "coordinates": [113.52, 23.15]},
    "streams": ["food"],
    "weighbridges": ["WB-1", "WB-2"],
}


def route(code: str = "R-FOOD-1", **changes: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": "Xiagang food round",
        "plate": "粤A1001F",
        "district_code": HUANGPU,
        "stream": "food",
        "days": [1, 2, 3, 4, 5, 6, 7],
        "time_window": "21:00-01:00",
        "stops": ["HP-0001", "HP-0002"],
        "facility_code": "HP-FOOD-1",
        **changes,
    }


async def test_a_point_is_registered_with_its_bins_and_read_back_with_its_location(waste: Waste):
    await waste.register_points(point("HP-0001"))
    shown = await waste.get("/v1/points/HP-0001", scopes=(*READER, "pii:read"))
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["location"] == {"type": "Point", "coordinates": [113.481, 23.11]}
    assert "lon" not in body
    assert {b["stream"] for b in body["bins"]} == {"food", "recyclable", "hazardous", "other"}
    assert (body["contact_name"], body["contact_phone"]) == ("李明", "13812345678")
    assert body["opening_hours"] == ["07:00-09:00", "19:00-21:00"]


async def test_importing_a_point_again_updates_it_and_replaces_its_bins(waste: Waste):
    await waste.register_points(point("HP-0001"))
    again = point("HP-0001", bins=[{"rfid": "HP-0001-NEW", "stream": "other"}], name="Xiagang renamed")
    response = await waste.post("/v1/points/import", {"points": [again]})
    assert response.json() == {"received": 1, "created": 0, "updated": 1, "refused": []}
    body = (await waste.get("/v1/points/HP-0001")).json()
    assert (body["name"], [b["rfid"] for b in body["bins"]], body["version"]) == (
        "Xiagang renamed",
        ["HP-0001-NEW"],
        2,
    )


async def test_a_bin_tag_registered_at_another_point_is_refused(waste: Waste):
    await waste.register_points(point("HP-0001"))
    thief = point("HP-0002", bins=[{"rfid": "HP-0001-FOO", "stream": "food"}])
    response = await waste.post("/v1/points/import", {"points": [thief, point("HP-0003")]})
    body = response.json()
    assert (body["created"], [r["code"] for r in body["refused"]]) == (1, ["waste.rfid_taken"])
    assert body["refused"][0]["index"] == 0


async def test_a_contact_is_masked_without_pii_read(waste: Waste):
    await waste.register_points(point("HP-0001"))
    body = (await waste.get("/v1/points/HP-0001", scopes=READER)).json()
    assert (body["contact_name"], body["contact_phone"]) == ("李**", "138****5678")


async def test_an_invalid_point_is_a_problem_naming_the_field(waste: Waste):
    bad = point("HP-0001", opening_hours=["25:00-26:00"], district_code="999999")
    response = await waste.post("/v1/points/import", {"points": [bad]})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_failed"
    fields = {tuple(error["loc"][-2:]) for error in body["errors"]}
    assert ("district_code",) in {f[-1:] for f in fields}
    assert any("opening_hours" in error["loc"] for error in body["errors"])


async def test_an_unknown_record_is_a_404_problem_with_its_code(waste: Waste):
    response = await waste.get("/v1/points/HP-9999")
    assert response.status_code == 404
    assert response.json()["code"] == "waste.not_found"


async def test_points_are_listed_by_keyset_pages(waste: Waste):
    await waste.register_points(*(point(f"HP-{n:04d}") for n in range(1, 6)))
    codes: list[str] = []
    cursor = None
    while True:
        query = "/v1/points?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await waste.get(query)).json()
        codes += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert codes == [f"HP-{n:04d}" for n in range(1, 6)]
    forged = await waste.get("/v1/points?cursor=not-a-cursor")
    assert (forged.status_code, forged.json()["code"]) == (400, "pagination.invalid_cursor")


async def test_a_district_bound_reader_sees_its_district_only(waste: Waste):
    await waste.register_points(point("HP-0001"), point("TH-0002", district=TIANHE))
    listed = (await waste.get("/v1/points", scopes=READER, district=HUANGPU)).json()
    assert [item["code"] for item in listed["items"]] == ["HP-0001"]
    other = await waste.get("/v1/points/TH-0002", scopes=READER, district=HUANGPU)
    assert (other.status_code, other.json()["code"]) == (403, "auth.other_district")
    asked = await waste.get(f"/v1/points?district={TIANHE}", scopes=READER, district=HUANGPU)
    assert asked.status_code == 403
    imported = await waste.post("/v1/points/import", {"points": [point("HP-0003")]}, district=HUANGPU)
    assert (imported.status_code, imported.json()["code"]) == (403, "auth.other_district")


async def test_a_vehicles_terminal_is_the_registers_and_its_driver_is_personal(waste: Waste):
    response = await waste.post("/v1/vehicles/import", {"vehicles": [vehicle("粤A1001F")]})
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1, response.text
    registrar = (await waste.get("/v1/vehicles/粤A1001F", scopes=(*READER, "waste:write", "pii:read"))).json()
    assert registrar["terminal_phone"] == "00000000013900001001"
    assert registrar["driver_name"] == "王强"
    reader = (await waste.get("/v1/vehicles/粤A1001F", scopes=READER)).json()
    assert (reader["terminal_phone"], reader["driver_name"], reader["driver_phone"]) == (
        None,
        "王**",
        "139****4321",
    )


async def test_one_terminal_is_one_vehicles(waste: Waste):
    await waste.post("/v1/vehicles/import", {"vehicles": [vehicle("粤A1001F")]})
    second = vehicle("粤A1002F", terminal_phone="013900001001")
    body = (await waste.post("/v1/vehicles/import", {"vehicles": [second]})).json()
    assert [r["code"] for r in body["refused"]] == ["waste.terminal_taken"]


async def test_a_collection_vehicle_names_its_stream_and_a_cleaning_vehicle_none(waste: Waste):
    for bad in (vehicle("粤A1001F", stream=None), vehicle("粤A1002F", 1002, kind="cleaning")):
        response = await waste.post("/v1/vehicles/import", {"vehicles": [bad]})
        assert response.status_code == 422, response.text
    sweeper = vehicle("粤A1003Q", 1003, kind="cleaning", stream=None)
    assert (await waste.post("/v1/vehicles/import", {"vehicles": [sweeper]})).json()["created"] == 1


async def test_a_route_names_registered_records_and_keeps_its_stream_apart(waste: Waste):
    await waste.register_points(point("HP-0001"), point("HP-0002"))
    await waste.post("/v1/vehicles/import", {"vehicles": [vehicle("粤A1001F")]})
    assert (await waste.post("/v1/facilities/import", {"facilities": [FACILITY]})).json()["created"] == 1
    routes = [
        route(),
        route("R-2", plate="粤A9999F"),
        route("R-3", stops=["HP-0001", "HP-0404"]),
        route("R-4", stream="other"),
        route("R-5", facility_code="NOWHERE"),
    ]
    body = (await waste.post("/v1/routes/import", {"routes": routes})).json()
    assert body["created"] == 1
    assert [(r["key"], r["code"]) for r in body["refused"]] == [
        ("R-2", "waste.unknown_vehicle"),
        ("R-3", "waste.unknown_stop"),
        ("R-4", "waste.stream_mismatch"),
        ("R-5", "waste.unknown_facility"),
    ]
    shown = (await waste.get("/v1/routes/R-FOOD-1")).json()
    assert (shown["time_window"], shown["stops"], shown["days"]) == (
        "21:00-01:00",
        ["HP-0001", "HP-0002"],
        [1, 2, 3, 4, 5, 6, 7],
    )
    listed = (await waste.get("/v1/routes?plate=粤A1001F")).json()["items"]
    assert [r["code"] for r in listed] == ["R-FOOD-1"]


async def test_a_facility_that_does_not_accept_the_stream_is_refused_as_a_routes_end(waste: Waste):
    await waste.register_points(point("HP-0001"))
    await waste.post("/v1/vehicles/import", {"vehicles": [vehicle("粤A1001F")]})
    landfill = {**FACILITY, "code": "HP-LF-1", "kind": "landfill", "streams": ["other"]}
    await waste.post("/v1/facilities/import", {"facilities": [landfill]})
    body = (
        await waste.post("/v1/routes/import", {"routes": [route(stops=["HP-0001"], facility_code="HP-LF-1")]})
    ).json()
    assert [r["code"] for r in body["refused"]] == ["waste.facility_refuses_stream"]


async def test_collection_points_and_facilities_are_listed_by_district_and_kind(waste: Waste):
    collection = {
        "code": "CP-1",
        "name": "Xiagang collection point",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [113.49, 23.12]},
        "streams": ["food", "other"],
    }
    assert (await waste.post("/v1/collection-points/import", {"collection_points": [collection]})).json()[
        "created"
    ] == 1
    await waste.post("/v1/facilities/import", {"facilities": [FACILITY]})
    assert [c["code"] for c in (await waste.get("/v1/collection-points")).json()["items"]] == ["CP-1"]
    assert (await waste.get("/v1/collection-points/CP-1")).json()["streams"] == ["food", "other"]
    assert (await waste.get("/v1/facilities?kind=landfill")).json()["items"] == []
    assert (await waste.get("/v1/facilities/HP-FOOD-1")).json()["weighbridges"] == ["WB-1", "WB-2"]


async def test_a_direct_call_without_the_gateways_token_is_refused(waste: Waste):
    response = await waste.client.get("/v1/points")
    assert response.status_code == 401
