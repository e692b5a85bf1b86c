"""Regions of interest: the file import holds them to the HTTP schema row by row, and a camera
whose stored regions are broken anyway is refused alone at intake."""

from __future__ import annotations

import csv
import json

import pytest
from sqlalchemy import select, text

from services.vision.models import Camera
from services.vision.registry import InvalidCameraRow, checked_regions, import_file
from services.vision.tests.conftest import TIANHE_CAMERA, YUEXIU_CAMERA, camera, detection

GOOD = {"littering": [[[0, 0.5], [1, 0.5], [1, 1], [0, 1]]]}
TRIANGLE = [[0, 0], [1, 0], [1, 1]]
BAD_REGIONS = {
    "not JSON": "{littering: [",
    "a polygon of two points": {"littering": [[[0, 0], [1, 1]]]},
    "a vertex outside the image": {"littering": [[[0, 0], [1.5, 0], [1, 1]]]},
    "vertices that are not numbers": {"littering": [[["left", "top"], [1, 0], [1, 1]]]},
    "a vertex of three numbers": {"littering": [[[0, 0, 0], [1, 0], [1, 1]]]},
    "a polygon that is not a list": {"littering": "the whole image"},
    "nine polygons for one class": {"littering": [TRIANGLE] * 9},
    "a class code that is none": {"Littering!": [TRIANGLE]},
    "not an object": [TRIANGLE],
    "infinity": {"littering": [[[0, 0], [float("inf"), 0], [1, 1]]]},
}


@pytest.mark.parametrize("regions", BAD_REGIONS.values(), ids=BAD_REGIONS.keys())
def test_a_file_rows_regions_must_be_polygons_of_the_http_schema(regions):
    raw = regions if isinstance(regions, str) else json.dumps(regions)
    with pytest.raises(InvalidCameraRow, match=r"^regions"):
        checked_regions(raw)


def test_good_regions_are_kept_as_lists_of_numbers():
    assert checked_regions(json.dumps(GOOD)) == GOOD
    assert checked_regions({"littering": [[["0", "0.5"], [1, 0.5], [1, 1]]]}) == {
        "littering": [[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]]
    }
    assert checked_regions("") == checked_regions(None) == checked_regions({}) == {}


async def test_the_file_import_refuses_each_row_with_bad_regions_alone(vision, vision_database, tmp_path):
    path = tmp_path / "cameras.csv"
    bad = list(BAD_REGIONS.items())
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["camera_id", "name", "owner", "lon", "lat", "regions"])
        writer.writerow([TIANHE_CAMERA, "good", "transport", 113.3, 23.1, json.dumps(GOOD)])
        for n, (_, regions) in enumerate(bad):
            cell = regions if isinstance(regions, str) else json.dumps(regions)
            writer.writerow([f"440106000813200020{n:02d}", "bad", "transport", 113.3, 23.1, cell])
        writer.writerow([YUEXIU_CAMERA, "none", "transport", 113.3, 23.1, ""])
    imported, refused, _ = await import_file(vision_database, path)
    assert imported == 2
    assert [r.index for r in refused] == list(range(1, len(bad) + 1))
    assert all(r.code == "vision.invalid_camera" and r.detail.startswith("regions") for r in refused)
    vertex = next(r for r in refused if r.index == 1 + list(BAD_REGIONS).index("a vertex outside the image"))
    assert "littering.0.1.0" in vertex.detail  # where in the document, as the HTTP route says it
    async with vision.runtime.db() as session:
        stored = {c.camera_id: c.regions for c in await session.scalars(select(Camera))}
    assert stored == {TIANHE_CAMERA: GOOD, YUEXIU_CAMERA: {}}


async def test_a_json_file_is_checked_the_same_way(vision, vision_database, tmp_path):
    path = tmp_path / "cameras.json"
    rows = [
        {"camera_id": TIANHE_CAMERA, "name": "good", "owner": "transport", "lon": 113.3, "lat": 23.1},
        {
            "camera_id": YUEXIU_CAMERA,
            "name": "bad",
            "owner": "transport",
            "lon": 113.3,
            "lat": 23.1,
            "regions": {"littering": [[[0, 0], [1, 1]]]},
        },
    ]
    path.write_text(json.dumps({"cameras": rows}))
    imported, refused, _ = await import_file(vision_database, path)
    assert imported == 1
    assert [(r.index, r.code) for r in refused] == [(1, "vision.invalid_camera")]


async def store_regions(vision, camera_id: str, regions: object) -> None:
    """What an older import, or a hand-written UPDATE, may have left in the registry."""
    async with vision.runtime.db() as session, session.begin():
        await session.execute(
            text("UPDATE cameras SET regions = CAST(:regions AS jsonb) WHERE camera_id = :id"),
            {"regions": json.dumps(regions), "id": camera_id},
        )


async def test_a_camera_with_broken_stored_regions_is_refused_alone_at_intake(vision):
    await vision.register(camera(), camera(YUEXIU_CAMERA))
    await store_regions(vision, TIANHE_CAMERA, {"littering": [[["x", 0], [1, 0]]]})
    response = await vision.ingest(
        detection(TIANHE_CAMERA, "littering"),
        detection(TIANHE_CAMERA, "flyers"),  # its other classes have no regions: fine
        detection(YUEXIU_CAMERA, "littering"),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["code"] == "vision.invalid_camera_regions"
    assert TIANHE_CAMERA in results[0]["detail"]
    assert f"PUT /v1/cameras/{TIANHE_CAMERA}/regions" in results[0]["detail"]
    assert results[1]["accepted"]
    assert (results[2]["accepted"], results[2]["outcome"]) == (True, "raised")


async def test_regions_that_are_not_an_object_refuse_every_class_of_the_camera(vision):
    await vision.register(camera(), camera(YUEXIU_CAMERA))
    await store_regions(vision, TIANHE_CAMERA, [[[0, 0], [1, 0], [1, 1]]])
    response = await vision.ingest(
        detection(TIANHE_CAMERA, "littering"),
        detection(TIANHE_CAMERA, "flyers"),
        detection(YUEXIU_CAMERA, "littering"),
    )
    codes = [r["code"] for r in response.json()["results"]]
    assert codes == ["vision.invalid_camera_regions", "vision.invalid_camera_regions", None]
