"""The vision service on real PostgreSQL and NATS: registry, intake, dedup across replicas, review,
the confirmed event, false-positive rates, metrics and the NATS intake."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from citygrid.testing import stream_events
from contract.vision import AlarmConfirmed
from services.vision.intake import expire_candidates
from services.vision.models import Alarm, Camera, Review
from services.vision.registry import import_file, mark_offline
from services.vision.tests.conftest import (
    CONFIGURER,
    INGEST,
    TIANHE_CAMERA,
    YUEXIU_CAMERA,
    camera,
    detection,
    snapshot,
)

ALARMS = "/v1/alarms"


async def alarm_rows(vision, status: str | None = None) -> list[Alarm]:
    async with vision.runtime.db() as session:
        query = select(Alarm).order_by(Alarm.created_at)
        if status is not None:
            query = query.where(Alarm.status == status)
        return list((await session.scalars(query)).all())


async def raise_alarm(vision, camera_id=TIANHE_CAMERA, algorithm="exposed_garbage", **changes):
    """One pending alarm (exposed garbage persists 120 s: two detections two minutes apart)."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    response = await vision.ingest(
        detection(camera_id, algorithm, at=start, **changes),
        detection(
            camera_id,
            algorithm,
            at=start + timedelta(seconds=130),
            snapshot_base64=snapshot("best"),
            **changes,
        ),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1]["outcome"] == "raised", results
    alarm_id = results[1]["alarm_ids"][0]
    detail = await vision.client.get(f"{ALARMS}/{alarm_id}", headers=vision.as_())
    return detail.json()


# -- registry ----------------------------------------------------------------------------------------


async def test_cameras_are_registered_with_their_id_parsed_and_bad_rows_refused_alone(vision):
    response = await vision.client.post(
        "/v1/cameras/import",
        json={"cameras": [camera(), camera(YUEXIU_CAMERA, owner="public_security", name="Beijing Road")]},
        headers=vision.as_(CONFIGURER),
    )
    assert response.json() == {"imported": 2, "refused": []}
    detail = (await vision.client.get(f"/v1/cameras/{TIANHE_CAMERA}", headers=vision.as_())).json()
    assert detail["district_code"] == "440106"
    assert detail["industry_code"] == "08"
    assert detail["device_type"] == "132"
    assert detail["status"] == "unknown"
    bad = await vision.client.post(
        "/v1/cameras/import",
        json={"cameras": [camera("44010600081180000001")]},
        headers=vision.as_(CONFIGURER),
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_failed"


async def test_importing_a_camera_again_updates_it(vision):
    await vision.register(camera())
    await vision.register(camera(name="Renamed"))
    detail = (await vision.client.get(f"/v1/cameras/{TIANHE_CAMERA}", headers=vision.as_())).json()
    assert (detail["name"], detail["version"]) == ("Renamed", 2)


async def test_cameras_are_listed_by_district_owner_status_and_box(vision):
    await vision.register(
        camera(),
        camera(
            YUEXIU_CAMERA,
            owner="public_security",
            location={"type": "Point", "coordinates": [113.2668, 23.1291]},
        ),
    )

    async def ids(**params) -> list[str]:
        response = await vision.client.get("/v1/cameras", params=params, headers=vision.as_())
        assert response.status_code == 200, response.text
        return [c["camera_id"] for c in response.json()["items"]]

    assert await ids(district="440106") == [TIANHE_CAMERA]
    assert await ids(owner="public_security") == [YUEXIU_CAMERA]
    assert await ids(bbox="113.30,23.0,113.40,23.2") == [TIANHE_CAMERA]
    assert await ids(status="online") == []
    first = await vision.client.get("/v1/cameras", params={"limit": 1}, headers=vision.as_())
    second = await vision.client.get(
        "/v1/cameras", params={"limit": 1, "cursor": first.json()["next_cursor"]}, headers=vision.as_()
    )
    assert [c["camera_id"] for c in second.json()["items"]] == [TIANHE_CAMERA]
    bad = await vision.client.get("/v1/cameras", params={"bbox": "1,2,3"}, headers=vision.as_())
    assert bad.json()["code"] == "vision.invalid_bbox"


async def test_heartbeats_put_cameras_online_and_silence_takes_them_offline(vision):
    await vision.register(camera())
    response = await vision.client.post(
        "/v1/cameras/heartbeats",
        json={"camera_ids": [TIANHE_CAMERA, YUEXIU_CAMERA]},
        headers=vision.as_(INGEST),
    )
    assert response.json() == {"online": 1, "unknown": [YUEXIU_CAMERA]}
    assert await mark_offline(vision.runtime.db, 3600) == 0
    await asyncio.sleep(0.05)
    assert await mark_offline(vision.runtime.db, 0.01) == 1
    detail = (await vision.client.get(f"/v1/cameras/{TIANHE_CAMERA}", headers=vision.as_())).json()
    assert detail["status"] == "offline"


async def test_heartbeats_need_the_ingest_scope(vision):
    response = await vision.client.post(
        "/v1/cameras/heartbeats", json={"camera_ids": [TIANHE_CAMERA]}, headers=vision.as_()
    )
    assert response.status_code == 403
    assert response.json()["code"] == "auth.missing_scope"


async def test_a_csv_file_is_imported_with_copy_and_its_bad_rows_reported(vision, vision_database, tmp_path):
    path = tmp_path / "cameras.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["camera_id", "name", "owner", "lon", "lat", "regions"])
        for n in range(3000):
            writer.writerow([f"44010600081320{n:06d}", f"cam {n}", "transport", 113.3, 23.1, ""])
        writer.writerow(["not-an-id", "bad", "transport", 113.3, 23.1, ""])
        writer.writerow(
            [
                "44010600081320999999",
                "roi",
                "transport",
                113.3,
                23.1,
                json.dumps({"littering": [[[0, 0.5], [1, 0.5], [1, 1]]]}),
            ]
        )
    imported, refused, _ = await import_file(vision_database, path)
    assert imported == 3001
    assert [(r.index, r.code) for r in refused] == [(3000, "vision.invalid_camera")]
    async with vision.runtime.db() as session:
        assert await session.scalar(select(func.count()).select_from(Camera)) == 3001
        roi = await session.get(Camera, "44010600081320999999")
        assert roi is not None
        assert roi.regions == {"littering": [[[0, 0.5], [1, 0.5], [1, 1]]]}


# -- intake -----------------------------------------------------------------------------------------


async def test_each_item_of_a_batch_gets_its_own_result_and_bad_items_never_sink_the_others(vision):
    await vision.register(camera())
    response = await vision.ingest(
        detection(algorithm="littering"),
        detection(camera_id=YUEXIU_CAMERA, algorithm="littering"),
        detection(algorithm="teleportation"),
        detection(algorithm="littering", boxes=[{"x": 2, "y": 0, "width": 0.1, "height": 0.1}]),
        detection(algorithm="littering", snapshot_base64="bm90IGFuIGltYWdl"),
        detection(algorithm="littering", snapshot_base64="***"),
        detection(algorithm="littering", confidence=0.5),
        detection(algorithm="littering", at=datetime.now(UTC) - timedelta(days=3)),
        "not an object",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["received"], body["accepted"], body["refused"]) == (9, 2, 7)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(9))
    assert results[0]["accepted"]
    assert results[0]["outcome"] == "raised"
    assert [r["code"] for r in results[1:6]] == [
        "vision.unknown_camera",
        "vision.unknown_algorithm",
        "validation_failed",
        "blob.not_an_image",
        "vision.invalid_snapshot",
    ]
    assert results[3]["detail"].startswith("boxes.0.x")
    assert results[6] == {**results[6], "accepted": True, "outcome": "below_confidence", "alarm_ids": []}
    assert results[7]["code"] == "vision.detection_out_of_time"
    assert results[8]["code"] == "validation_failed"
    assert len(await alarm_rows(vision)) == 1


async def test_detections_need_the_ingest_scope(vision):
    response = await vision.client.post(
        "/v1/detections", json={"detections": [detection()]}, headers=vision.as_()
    )
    assert response.status_code == 403


async def test_a_burst_of_duplicates_becomes_one_alarm_with_the_best_snapshot(vision):
    await vision.register(camera())
    start = datetime.now(UTC) - timedelta(minutes=10)
    burst = [
        detection(
            at=start + timedelta(seconds=n),
            confidence=0.8 + (0.1 if n == 150 else 0.0),
            box={"x": 0.4 + (n % 3) / 100, "y": 0.4, "width": 0.2, "height": 0.2},
            snapshot_base64=snapshot(f"frame {n}"),
        )
        for n in range(0, 300, 2)
    ]
    response = await vision.ingest(*burst)
    outcomes = [r["outcome"] for r in response.json()["results"]]
    assert outcomes.count("raised") == 1
    assert set(outcomes) == {"persisting", "raised", "merged"}
    (alarm,) = await alarm_rows(vision)
    assert alarm.status == "pending_review"
    assert alarm.detections == 150
    assert alarm.best_confidence == 0.9
    snap = await vision.client.get(f"/v1/snapshots/{alarm.snapshot_sha256}", headers=vision.as_())
    assert snap.status_code == 200
    assert snap.headers["content-type"] == "image/jpeg"
    assert b"frame 150" in snap.content


async def test_two_replicas_given_the_same_burst_at_once_raise_one_alarm(vision_factory):
    async with vision_factory() as first, vision_factory() as second:
        cameras = [f"440106000813200001{n:02d}" for n in range(8)]
        await first.register(*[camera(c) for c in cameras])
        start = datetime.now(UTC) - timedelta(minutes=5)
        burst = [
            detection(c, "littering", at=start + timedelta(seconds=s), confidence=0.85)
            for s in range(0, 20, 2)
            for c in cameras
        ]
        responses = await asyncio.gather(
            *[replica.ingest(*burst) for replica in (first, second) for _ in range(3)]
        )
        assert all(r.status_code == 200 for r in responses)
        raised = [r for response in responses for r in response.json()["results"] if r["outcome"] == "raised"]
        assert len(raised) == len(cameras)
        rows = await alarm_rows(first)
        assert len(rows) == len(cameras)
        assert sorted(a.camera_id for a in rows) == sorted(cameras)
        assert all(a.detections == 60 for a in rows)


async def test_a_region_of_interest_and_a_camera_override_apply_to_its_detections(vision):
    await vision.register(camera())
    current = await vision.client.get(f"/v1/cameras/{TIANHE_CAMERA}", headers=vision.as_())
    regions = {"littering": [[[0, 0.5], [1, 0.5], [1, 1], [0, 1]]]}
    put = await vision.client.put(
        f"/v1/cameras/{TIANHE_CAMERA}/regions",
        json={"regions": regions},
        headers=vision.as_(CONFIGURER, **{"If-Match": current.headers["etag"]}),
    )
    assert put.status_code == 200, put.text
    stale = await vision.client.put(
        f"/v1/cameras/{TIANHE_CAMERA}/regions",
        json={"regions": {}},
        headers=vision.as_(CONFIGURER, **{"If-Match": '"1"'}),
    )
    assert stale.status_code == 412
    override = await vision.client.put(
        f"/v1/cameras/{TIANHE_CAMERA}/overrides/littering",
        json={"min_confidence": 0.95},
        headers=vision.as_(CONFIGURER),
    )
    assert override.status_code == 204
    response = await vision.ingest(
        detection(
            algorithm="littering", box={"x": 0.4, "y": 0.1, "width": 0.2, "height": 0.2}, confidence=0.99
        ),
        detection(
            algorithm="littering", box={"x": 0.4, "y": 0.6, "width": 0.2, "height": 0.2}, confidence=0.9
        ),
        detection(
            algorithm="littering", box={"x": 0.4, "y": 0.6, "width": 0.2, "height": 0.2}, confidence=0.97
        ),
    )
    assert [r["outcome"] for r in response.json()["results"]] == [
        "outside_region",
        "below_confidence",
        "raised",
    ]


async def test_a_re_import_without_regions_keeps_the_cameras_regions(vision):
    await vision.register(camera())
    regions = {"littering": [[[0, 0.5], [1, 0.5], [1, 1], [0, 1]]]}
    put = await vision.client.put(
        f"/v1/cameras/{TIANHE_CAMERA}/regions",
        json={"regions": regions},
        headers=vision.as_(CONFIGURER, **{"If-Match": '"1"'}),
    )
    assert put.status_code == 200, put.text
    await vision.register(camera(name="Tianhe Road bus stop, renamed"))
    detail = (await vision.client.get(f"/v1/cameras/{TIANHE_CAMERA}", headers=vision.as_())).json()
    assert detail["name"] == "Tianhe Road bus stop, renamed"
    assert detail["regions"] == regions


async def test_only_an_admin_configures_a_camera(vision):
    await vision.register(camera())
    calls = [
        ("post", "/v1/cameras/import", {"cameras": [camera()]}, {}),
        ("put", f"/v1/cameras/{TIANHE_CAMERA}/regions", {"regions": {}}, {"If-Match": '"1"'}),
        ("put", f"/v1/cameras/{TIANHE_CAMERA}/overrides/littering", {"min_confidence": 1.0}, {}),
        ("patch", "/v1/admin/algorithms/littering", {"active": False}, {}),
    ]
    for method, path, body, headers in calls:
        response = await vision.client.request(method, path, json=body, headers=vision.as_(**headers))
        assert response.status_code == 403, (path, response.text)
        assert response.json()["code"] == "auth.missing_scope"


async def test_an_unknown_class_in_a_region_or_override_is_refused(vision):
    await vision.register(camera())
    response = await vision.client.put(
        f"/v1/cameras/{TIANHE_CAMERA}/overrides/teleportation",
        json={"min_confidence": 0.9},
        headers=vision.as_(CONFIGURER),
    )
    assert response.status_code == 404
    assert response.json()["code"] == "vision.unknown_algorithm"


async def test_candidates_never_seen_again_expire_and_alarms_stay(vision):
    await vision.register(camera())
    response = await vision.ingest(
        detection(algorithm="road_occupying_stall"), detection(algorithm="littering")
    )
    assert [r["outcome"] for r in response.json()["results"]] == ["persisting", "raised"]
    assert await expire_candidates(vision.runtime.db, timedelta(days=1)) == 0
    assert await expire_candidates(vision.runtime.db, timedelta(seconds=-60)) == 1
    assert [a.algorithm_code for a in await alarm_rows(vision)] == ["littering"]


# -- review and dispatch ----------------------------------------------------------------------------


async def test_confirming_an_alarm_with_one_click_publishes_it_with_its_evidence(vision):
    await vision.register(camera())
    alarm = await raise_alarm(vision)
    queue = await vision.client.get(
        ALARMS, params={"status": "pending_review", "district": "440106"}, headers=vision.as_()
    )
    assert [a["id"] for a in queue.json()["items"]] == [alarm["id"]]
    confirmed = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_(**{"If-Match": '"1"'})
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed"
    assert confirmed.headers["etag"] == '"2"'
    events = await stream_events(vision.infrastructure.nats_url, "VISION", at_least=1)
    assert [e.type for e in events] == ["vision.alarm.confirmed.v1"]
    event = AlarmConfirmed.from_envelope(events[0])
    assert event.reference == alarm["id"]
    assert event.category_code == "20101"
    assert event.district_code == "440106"
    assert event.location.coordinates == (113.3245, 23.1291)
    assert event.confirmed_by == "reviewer-1"
    assert not event.auto_confirmed
    assert event.evidence[0].url == alarm["snapshot_url"]
    assert event.evidence[0].url.startswith("/api/vision/v1/snapshots/")
    assert event.evidence[0].content_type == "image/jpeg"
    again = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_(**{"If-Match": '"2"'})
    )
    assert again.status_code == 409
    assert again.json()["code"] == "vision.alarm_not_pending"


async def test_a_stale_version_or_a_caller_without_the_role_cannot_review(vision):
    await vision.register(camera())
    alarm = await raise_alarm(vision)
    stale = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_(**{"If-Match": '"7"'})
    )
    assert stale.status_code == 412
    missing = await vision.client.post(f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_())
    assert missing.status_code == 428
    no_role = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_(roles=(), **{"If-Match": '"1"'})
    )
    assert no_role.status_code == 403
    assert no_role.json()["code"] == "vision.role_not_allowed"
    unknown = await vision.client.post(
        f"{ALARMS}/{uuid.uuid4()}/confirm", headers=vision.as_(**{"If-Match": '"1"'})
    )
    assert unknown.status_code == 404


async def test_a_precise_class_dispatches_itself_without_review(vision):
    await vision.register(camera())
    response = await vision.ingest(detection(algorithm="truck_not_covered"))
    (result,) = response.json()["results"]
    assert result["outcome"] == "raised"
    (alarm,) = await alarm_rows(vision)
    assert (alarm.status, alarm.auto_confirmed) == ("auto_confirmed", True)
    events = await stream_events(vision.infrastructure.nats_url, "VISION", at_least=1)
    event = AlarmConfirmed.from_envelope(events[0])
    assert (event.auto_confirmed, event.confirmed_by, event.category_code) == (True, "auto", "20311")


async def test_rejecting_needs_a_reason_and_counts_as_a_false_positive(vision):
    await vision.register(camera())
    alarm = await raise_alarm(vision)
    no_reason = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/reject", json={}, headers=vision.as_(**{"If-Match": '"1"'})
    )
    assert no_reason.status_code == 422
    rejected = await vision.client.post(
        f"{ALARMS}/{alarm['id']}/reject",
        json={"reason": "a parked bicycle, not garbage"},
        headers=vision.as_(**{"If-Match": '"1"'}),
    )
    assert rejected.json()["status"] == "rejected"
    async with vision.runtime.db() as session:
        (review,) = (await session.scalars(select(Review))).all()
    assert review.false_positive
    assert review.reason == "a parked bicycle, not garbage"


async def test_bulk_review_gives_each_alarm_its_own_result(vision):
    cameras = [f"440106000813200002{n:02d}" for n in range(3)]
    await vision.register(*[camera(c) for c in cameras])
    alarms = [await raise_alarm(vision, c) for c in cameras]
    unknown = str(uuid.uuid4())
    response = await vision.client.post(
        f"{ALARMS}/review",
        json={
            "action": "reject",
            "alarm_ids": [alarms[0]["id"], alarms[1]["id"], unknown],
            "reason": "shadows",
        },
        headers=vision.as_(),
    )
    assert [(r["ok"], r["status"] or r["code"]) for r in response.json()["results"]] == [
        (True, "rejected"),
        (True, "rejected"),
        (False, "vision.alarm_not_found"),
    ]
    no_reason = await vision.client.post(
        f"{ALARMS}/review", json={"action": "reject", "alarm_ids": [alarms[2]["id"]]}, headers=vision.as_()
    )
    assert no_reason.json()["code"] == "vision.reason_required"
    confirmed = await vision.client.post(
        f"{ALARMS}/review",
        json={"action": "confirm", "alarm_ids": [alarms[2]["id"], alarms[0]["id"]]},
        headers=vision.as_(),
    )
    assert [(r["ok"], r["status"] or r["code"]) for r in confirmed.json()["results"]] == [
        (True, "confirmed"),
        (False, "vision.alarm_not_pending"),
    ]


async def test_false_positive_rates_per_class_and_camera_come_from_the_reviews(vision):
    cameras = [f"440106000813200003{n:02d}" for n in range(4)]
    await vision.register(*[camera(c) for c in cameras])
    alarms = [await raise_alarm(vision, c) for c in cameras]
    for alarm in alarms[:1]:
        await vision.client.post(
            f"{ALARMS}/{alarm['id']}/reject",
            json={"reason": "shadow"},
            headers=vision.as_(**{"If-Match": '"1"'}),
        )
    for alarm in alarms[1:]:
        await vision.client.post(f"{ALARMS}/{alarm['id']}/confirm", headers=vision.as_(**{"If-Match": '"1"'}))
    stats = (await vision.client.get("/v1/stats/false-positives", headers=vision.as_())).json()
    (bins,) = stats["classes"]
    assert bins["algorithm_code"] == "exposed_garbage"
    assert (bins["reviewed"], bins["false_positives"], bins["false_positive_rate"]) == (4, 1, 0.25)
    assert bins["recommended_min_confidence"] is None  # too few reviews to say
    assert stats["cameras"][0] == {
        "camera_id": cameras[0],
        "reviewed": 1,
        "false_positives": 1,
        "false_positive_rate": 1.0,
    }


async def test_the_catalogue_lists_57_classes_and_an_admin_changes_a_class(vision):
    listed = (await vision.client.get("/v1/algorithms", headers=vision.as_())).json()
    assert len(listed) == 57
    stalls = next(a for a in listed if a["code"] == "road_occupying_stall")
    assert stalls["category_code"] == "20501"
    assert stalls["gates"]["min_persistence_seconds"] == 300
    changed = await vision.client.patch(
        "/v1/admin/algorithms/littering",
        json={"gates": {"min_confidence": 0.9}},
        headers=vision.as_(("admin",)),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["gates"]["min_confidence"] == 0.9
    await vision.register(camera())
    response = await vision.ingest(detection(algorithm="littering", confidence=0.85))
    assert response.json()["results"][0]["outcome"] == "below_confidence"


# -- metrics (the NATS intake: test_nats_intake.py) ------------------------------------------------


async def test_metrics_count_detections_by_class_and_outcome(vision):
    await vision.register(camera())
    await vision.ingest(
        detection(algorithm="littering"),
        detection(algorithm="littering", confidence=0.1),
        detection(algorithm="littering", boxes=[]),
        detection(algorithm="no_such_class"),
    )
    text = (await vision.client.get("/metrics")).text
    assert 'citygrid_vision_detections_total{algorithm="littering",outcome="received"} 3.0' in text
    assert 'citygrid_vision_detections_total{algorithm="littering",outcome="refused"} 1.0' in text
    assert 'citygrid_vision_detections_total{algorithm="unknown",outcome="refused"} 1.0' in text
    assert 'citygrid_vision_detections_total{algorithm="littering",outcome="raised"} 1.0' in text
    assert 'citygrid_vision_detections_total{algorithm="littering",outcome="below_confidence"} 1.0' in text
    assert 'citygrid_vision_alarms_raised_total{algorithm="littering",dispatch="review"} 1.0' in text
    assert "citygrid_vision_review_queue_depth" in text
