"""The unit grid through the gateway: reports placed on it, look-ups, and a city's grid imported."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.testing import serve_app, wait_until
from services.case.domain.demo_grid import DISTRICT_BOXES
from services.case.grid_store import GridHolder, seed_demo_grid_if_empty
from services.case.main import create_app as create_case_app
from services.case.main import shipped_demo_cells
from tests.conftest import case_settings
from tests.test_bad_input import assert_problem
from tests.test_case_flow import REPORT, report

GRID = "/api/case/v1/grid"
TIANHE_POINT = [113.3245, 23.1291]
YUEXIU_POINT = [113.2668, 23.1291]
OFF_GRID_POINT = [112.0, 22.0]


def square(code: str, x0: float, y0: float, size: float = 0.01, **properties: str) -> dict:
    ring = [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]
    return {
        "type": "Feature",
        "properties": {"code": code, **properties},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


async def locate(stack, point, consumer="reader"):
    return await stack.client.get(
        f"{GRID}/locate", params={"lon": point[0], "lat": point[1]}, headers=stack.as_(consumer)
    )


async def import_grid(stack, document, **params):
    return await stack.client.post(
        "/api/case/v1/admin/grid/import", json=document, params=params, headers=stack.as_("admin")
    )


# -- reports on the grid ---------------------------------------------------------------------------


async def test_a_report_takes_the_grid_cell_community_street_and_district_of_its_point(stack):
    case = (await report(stack)).json()
    response = await locate(stack, TIANHE_POINT)
    assert response.status_code == 200, response.text
    located = response.json()
    assert located["district_code"] == "440106"
    assert case["grid_code"] == located["grid_code"]
    assert case["community_code"] == located["community_code"] == located["grid_code"][:12]
    assert case["street_code"] == located["street_code"] == located["grid_code"][:9]
    assert case["district_code"] == "440106"
    assert case["number"].startswith("440106-")


async def test_the_grid_decides_the_district_when_the_reporter_named_another(stack):
    body = {**REPORT, "district_code": "440104"}  # the point lies in Tianhe
    case = (await report(stack, body=body)).json()
    assert case["district_code"] == "440106"
    assert case["number"].startswith("440106-")
    detail = (await stack.client.get(f"/api/case/v1/cases/{case['id']}", headers=stack.as_("reader"))).json()
    note = detail["history"][0]["note"]
    assert "reported in district 440104" in note
    assert case["grid_code"] in note


async def test_a_point_outside_every_cell_keeps_the_reporters_district_and_no_grid_codes(stack):
    body = {**REPORT, "district_code": "440115", "location": {"type": "Point", "coordinates": OFF_GRID_POINT}}
    case = (await report(stack, body=body)).json()
    assert case["district_code"] == "440115"
    assert (case["grid_code"], case["community_code"], case["street_code"]) == (None, None, None)
    detail = (await stack.client.get(f"/api/case/v1/cases/{case['id']}", headers=stack.as_("reader"))).json()
    assert detail["history"][0]["note"] is None


# -- reading the grid ----------------------------------------------------------------------------


async def test_the_demo_grid_is_stored_at_startup_and_covers_the_eleven_districts(stack):
    summary = (await stack.client.get(GRID, headers=stack.as_("reader"))).json()
    assert set(summary["districts"]) == set(DISTRICT_BOXES)
    assert summary["cells"] == sum(summary["districts"].values()) > 4000
    assert summary["version"] is not None


async def test_locating_a_point_names_its_cell_and_outside_the_grid_is_a_404_problem(stack):
    located = await locate(stack, YUEXIU_POINT)
    assert located.status_code == 200
    assert located.json()["district_code"] == "440104"
    assert located.json()["name"].startswith("越秀区")
    assert_problem(await locate(stack, OFF_GRID_POINT), 404, "case.off_grid")
    bad = await stack.client.get(
        f"{GRID}/locate", params={"lon": 200, "lat": 23}, headers=stack.as_("reader")
    )
    assert_problem(bad, 422, "validation_failed")


async def test_cells_are_listed_by_street_in_code_order_across_pages(stack):
    street = (await locate(stack, TIANHE_POINT)).json()["street_code"]
    codes, cursor = [], None
    while True:
        params = {"street": street, "limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await stack.client.get(f"{GRID}/cells", params=params, headers=stack.as_("reader"))).json()
        codes += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert codes == sorted(codes)
    assert len(codes) == len(set(codes)) > 7
    assert all(code.startswith(street) for code in codes)
    district = (
        await stack.client.get(
            f"{GRID}/cells", params={"district": "440104", "limit": 500}, headers=stack.as_("reader")
        )
    ).json()
    assert {item["district_code"] for item in district["items"]} == {"440104"}
    one = await stack.client.get(f"{GRID}/cells/{codes[0]}", headers=stack.as_("reader"))
    assert one.json()["feature"]["geometry"]["type"] == "MultiPolygon"
    assert_problem(
        await stack.client.get(f"{GRID}/cells/440106999999999", headers=stack.as_("reader")),
        404,
        "case.grid_cell_not_found",
    )
    assert_problem(
        await stack.client.get(f"{GRID}/cells", params={"cursor": "nope"}, headers=stack.as_("reader")),
        400,
        "pagination.invalid_cursor",
    )


# -- importing a city's grid ------------------------------------------------------------------------


async def test_an_import_replaces_the_districts_it_covers_and_reports_follow_it(stack):
    # Two cells covering the Tianhe reference point replace the whole demo Tianhe district.
    document = collection(
        square("440106001001001", 113.32, 23.12, name="石牌 1", street_name="石牌街道"),
        square("440106001001002", 113.33, 23.12, name="石牌 2", street_name="石牌街道"),
    )
    imported = await import_grid(stack, document)
    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert (result["imported"], result["replaced_districts"]) == (2, ["440106"])
    assert result["districts"]["440106"] == 2
    assert result["districts"]["440104"] > 100  # other districts stay
    located = (await locate(stack, TIANHE_POINT)).json()
    assert (located["grid_code"], located["street_name"]) == ("440106001001001", "石牌街道")
    case = (await report(stack)).json()
    assert case["grid_code"] == "440106001001001"


async def test_an_import_of_everything_removes_the_districts_the_file_lacks(stack):
    imported = await import_grid(stack, collection(square("440106001001001", 113.32, 23.12)), replace="all")
    assert imported.json()["districts"] == {"440106": 1}
    assert_problem(await locate(stack, YUEXIU_POINT), 404, "case.off_grid")


async def test_a_bad_grid_file_is_refused_whole_naming_the_feature_and_nothing_changes(stack):
    before = (await stack.client.get(GRID, headers=stack.as_("reader"))).json()
    bowtie = square("440106001001002", 113.33, 23.12)
    bowtie["geometry"]["coordinates"] = [[[113.33, 23.12], [113.35, 23.13], [113.35, 23.12], [113.33, 23.14]]]
    refused = await import_grid(stack, collection(square("440106001001001", 113.32, 23.12), bowtie))
    problem = assert_problem(refused, 422, "case.invalid_grid")
    assert problem["errors"][0]["loc"] == ["body", "features", 1]
    assert "not simple" in problem["errors"][0]["msg"]

    cases = [
        (collection(square("44010600100100", 113.32, 23.12)), ["body", "features", 0]),
        ({"type": "Feature"}, ["body"]),
        (collection(), ["body", "features"]),
        (collection(square("999999001001001", 113.32, 23.12)), ["body", "features", 0]),
        (
            collection(square("440106001001001", 113.32, 23.12), square("440106001001002", 113.325, 23.12)),
            ["body", "features"],
        ),
    ]
    for document, loc in cases:
        problem = assert_problem(await import_grid(stack, document), 422, "case.invalid_grid")
        assert problem["errors"][0]["loc"] == loc, problem
    # An import may not overlap a district it leaves in place either.
    over_yuexiu = collection(square("440106001001001", 113.26, 23.12))
    assert_problem(await import_grid(stack, over_yuexiu), 422, "case.invalid_grid")
    assert (await stack.client.get(GRID, headers=stack.as_("reader"))).json() == before


async def test_only_an_admin_imports_a_grid(stack):
    refused = await stack.client.post(
        "/api/case/v1/admin/grid/import", json=collection(), headers=stack.as_("clerk")
    )
    assert refused.status_code == 403


async def test_another_replica_picks_up_an_imported_grid(stack, infrastructure, databases):
    settings = case_settings(infrastructure, databases).model_copy(update={"grid_refresh_seconds": 0.2})
    other_app = create_case_app(settings)
    principal = Principal(subject="t", kind="service", name="t", scopes=frozenset({"cases:read"}))
    headers = {PRINCIPAL_HEADER: infrastructure.token(principal, audience="case")}
    async with serve_app(other_app) as other_url, httpx.AsyncClient(base_url=other_url) as other:

        async def other_cell() -> str | None:
            found = await other.get(
                "/v1/grid/locate", params={"lon": 113.3245, "lat": 23.1291}, headers=headers
            )
            return found.json().get("grid_code")

        assert await other_cell() not in (None, "440106001001001")
        imported = await import_grid(stack, collection(square("440106001001001", 113.32, 23.12)))
        assert imported.status_code == 200

        async def caught_up() -> bool:
            return await other_cell() == "440106001001001"

        await wait_until(caught_up)


async def test_a_grid_file_that_is_not_a_json_object_or_a_bad_replace_mode_is_refused(stack):
    as_list = await stack.client.post(
        "/api/case/v1/admin/grid/import", json=[collection()], headers=stack.as_("admin")
    )
    assert_problem(as_list, 422, "validation_failed")
    bad_mode = await import_grid(stack, collection(square("440106001001001", 113.32, 23.12)), replace="some")
    assert_problem(bad_mode, 422, "validation_failed")


async def test_replicas_starting_together_store_the_demo_grid_once(stack):
    sessions = stack.case_runtime.db
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM grid_cells"))
    cells = shipped_demo_cells()
    stored = await asyncio.gather(*(seed_demo_grid_if_empty(sessions, cells) for _ in range(3)))
    assert sorted(stored) == [0, 0, len(cells)]
    holder = GridHolder()
    assert await holder.reload(sessions) == len(cells)
    assert await holder.refresh_if_changed(sessions) == 0  # nothing new: no reload
