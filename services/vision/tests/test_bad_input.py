"""Bad input to the vision service: a 4xx problem+json with a stable code, never a 500, nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from services.vision.models import Alarm, Camera
from services.vision.tests.conftest import CONFIGURER, INGEST, TIANHE_CAMERA, camera, detection

UNKNOWN = "00000000-0000-4000-8000-000000000000"
SHA = "0" * 64

CASES = [
    ("post", "/v1/cameras/import", {"cameras": []}, (), 422, "validation_failed"),
    ("post", "/v1/cameras/import", {"cameras": [camera(name="")]}, (), 422, "validation_failed"),
    (
        "post",
        "/v1/cameras/import",
        {"cameras": [camera(location={"type": "Point", "coordinates": [200, 0]})]},
        (),
        422,
        "validation_failed",
    ),
    ("post", "/v1/cameras/import", {"cameras": [camera(owner="aliens")]}, (), 422, "validation_failed"),
    (
        "post",
        "/v1/cameras/import",
        {"cameras": [camera(district_code="999999")]},
        (),
        422,
        "validation_failed",
    ),
    (
        "post",
        "/v1/cameras/import",
        {"cameras": [camera(regions={"littering": [[[0, 0], [2, 0], [1, 1]]]})]},
        (),
        422,
        "validation_failed",
    ),
    ("post", "/v1/cameras/import", {"cameras": [camera(name="a\x00b")]}, (), 422, "validation_failed"),
    ("get", "/v1/cameras?bbox=a,b,c,d", None, (), 422, "vision.invalid_bbox"),
    ("get", "/v1/cameras?bbox=nan,0,1,1", None, (), 422, "vision.invalid_bbox"),
    ("get", "/v1/cameras?cursor=!!", None, (), 400, "pagination.invalid_cursor"),
    ("get", "/v1/cameras?limit=501", None, (), 422, "validation_failed"),
    ("get", "/v1/cameras/123", None, (), 422, "validation_failed"),
    ("get", f"/v1/cameras/{TIANHE_CAMERA}", None, (), 404, "vision.camera_not_found"),
    ("put", f"/v1/cameras/{TIANHE_CAMERA}/regions", {"regions": {}}, (), 428, "http.if_match_required"),
    (
        "put",
        f"/v1/cameras/{TIANHE_CAMERA}/overrides/littering",
        {"min_confidence": 2},
        (),
        422,
        "validation_failed",
    ),
    (
        "put",
        f"/v1/cameras/{TIANHE_CAMERA}/overrides/littering",
        {"min_confidence": 0.9},
        (),
        404,
        "vision.camera_not_found",
    ),
    ("post", "/v1/cameras/heartbeats", {"camera_ids": ["x"]}, INGEST, 422, "validation_failed"),
    ("post", "/v1/detections", {"detections": []}, INGEST, 422, "validation_failed"),
    ("post", "/v1/detections", {"detections": [detection()] * 1001}, INGEST, 422, "validation_failed"),
    ("post", "/v1/detections", {"detections": [detection()], "extra": 1}, INGEST, 422, "validation_failed"),
    ("post", "/v1/detections", [detection()], INGEST, 422, "validation_failed"),
    ("get", "/v1/alarms?status=candidate", None, (), 422, "invalid_input"),
    ("get", "/v1/alarms?status=lost", None, (), 422, "validation_failed"),
    ("get", "/v1/alarms?cursor=WyJ4IiwieSJd", None, (), 400, "pagination.invalid_cursor"),
    ("get", f"/v1/alarms/{UNKNOWN}", None, (), 404, "vision.alarm_not_found"),
    ("get", "/v1/alarms/not-a-uuid", None, (), 422, "validation_failed"),
    ("post", f"/v1/alarms/{UNKNOWN}/reject", {"reason": " "}, (), 422, "validation_failed"),
    ("post", f"/v1/alarms/{UNKNOWN}/confirm", None, (), 428, "http.if_match_required"),
    ("post", "/v1/alarms/review", {"action": "shred", "alarm_ids": [UNKNOWN]}, (), 422, "validation_failed"),
    ("post", "/v1/alarms/review", {"action": "confirm", "alarm_ids": []}, (), 422, "validation_failed"),
    ("get", "/v1/stats/false-positives?days=0", None, (), 422, "validation_failed"),
    ("get", "/v1/snapshots/xyz", None, (), 422, "validation_failed"),
    ("get", f"/v1/snapshots/{SHA}", None, (), 404, "blob.not_found"),
    (
        "patch",
        "/v1/admin/algorithms/teleportation",
        {"active": False},
        ("admin",),
        404,
        "vision.unknown_algorithm",
    ),
    (
        "patch",
        "/v1/admin/algorithms/littering",
        {"gates": {"severity": "apocalyptic"}},
        ("admin",),
        422,
        "validation_failed",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "scopes", "status", "code"),
    CASES,
    ids=[f"{c[0]} {c[1][:60]} {c[5]}" for c in CASES],
)
async def test_bad_input_is_a_problem_with_a_code_and_writes_nothing(
    vision, method, path, body, scopes, status, code
):
    headers = vision.as_(scopes or CONFIGURER)
    response = await vision.client.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    async with vision.runtime.db() as session:
        assert await session.scalar(select(func.count()).select_from(Camera)) == 0
        assert await session.scalar(select(func.count()).select_from(Alarm)) == 0
        assert await session.scalar(text("SELECT count(*) FROM outbox")) == 0


async def test_a_body_that_is_not_json_is_refused_with_415(vision):
    response = await vision.client.post(
        "/v1/detections", content=b"camera=1", headers=vision.as_(INGEST, **{"Content-Type": "text/plain"})
    )
    assert response.status_code == 415


async def test_a_call_without_the_gateways_principal_is_refused(vision):
    response = await vision.client.get("/v1/alarms")
    assert response.status_code == 401
