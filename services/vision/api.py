"""HTTP routes of the vision service: thin, they parse, call the service modules and shape responses."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from citygrid.auth import (
    ADMIN_SCOPE,
    CurrentPrincipal,
    OtherDistrict,
    district_scope,
    require_city_wide,
    require_district,
    require_scope,
)
from citygrid.clock import CityTime
from citygrid.db import transaction_time
from citygrid.errors import InvalidInput
from citygrid.pagination import Cursor, Limit, Page
from citygrid.runtime import RuntimeDep
from citygrid.versioning import IfMatch, etag, expected_version
from contract.common import DistrictCode, GeoPoint
from contract.vision import AlgorithmCode, Box, CameraId
from services.vision import intake, registry, review
from services.vision.catalogue import active_of, get_algorithm, load_algorithms
from services.vision.context import Vision
from services.vision.domain.catalogue import Group
from services.vision.events import snapshot_url
from services.vision.models import Alarm, AlarmStatus, AlgorithmRow, CameraStatus
from services.vision.schemas import (
    AlarmDetailOut,
    AlarmOut,
    AlgorithmOut,
    AlgorithmPatch,
    BatchResult,
    BulkItem,
    BulkResult,
    BulkReview,
    CameraImport,
    CameraOut,
    Confirm,
    DetectionBatch,
    FalsePositiveStats,
    GatesOut,
    GatesPatch,
    HeartbeatResult,
    Heartbeats,
    ImportResult,
    Owner,
    RecheckOut,
    Refusal,
    RegionsIn,
    Reject,
)

router = APIRouter(prefix="/v1", tags=["vision"])
INGEST_SCOPE = "vision:ingest"


class InvalidBoundingBox(InvalidInput):
    code = "vision.invalid_bbox"


class ReasonRequired(InvalidInput):
    code = "vision.reason_required"


def camera_out(view: registry.CameraView) -> CameraOut:
    camera = view.camera
    return CameraOut(
        camera_id=camera.camera_id,
        name=camera.name,
        owner=camera.owner,
        division_code=camera.division_code,
        district_code=camera.district_code,
        industry_code=camera.industry_code,
        device_type=camera.device_type,
        network_code=camera.network_code,
        location=GeoPoint.of(camera.lon, camera.lat),
        address=camera.address,
        grid_code=camera.grid_code,
        engine=camera.engine,
        status=camera.status,
        last_heartbeat_at=view.last_heartbeat_at,
        regions=camera.regions,
        version=camera.version,
        updated_at=camera.updated_at,
    )


def alarm_out(alarm: Alarm) -> AlarmOut:
    return AlarmOut(
        id=alarm.id,
        camera_id=alarm.camera_id,
        algorithm_code=alarm.algorithm_code,
        category_code=alarm.category_code,
        district_code=alarm.district_code,
        severity=alarm.severity,
        status=alarm.status,
        auto_confirmed=alarm.auto_confirmed,
        box=Box(**alarm.box),
        best_box=Box(**alarm.best_box),
        track_id=alarm.track_id,
        confidence=alarm.best_confidence,
        detections=alarm.detections,
        first_seen_at=alarm.first_seen_at,
        last_seen_at=alarm.last_seen_at,
        raised_at=alarm.raised_at,
        snapshot_url=snapshot_url(alarm.snapshot_sha256) if alarm.snapshot_sha256 else None,
        case_id=alarm.case_id,
        case_status=alarm.case_status,
        reviewed_by=alarm.reviewed_by,
        reviewed_at=alarm.reviewed_at,
        review_note=alarm.review_note,
        resolved_at=alarm.resolved_at,
        version=alarm.version,
    )


# -- cameras -----------------------------------------------------------------------------------------


@router.post("/cameras/import", operation_id="import_cameras")
async def import_cameras(
    body: CameraImport, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ImportResult:
    """Register or update up to 5,000 cameras (upsert by id); larger loads use the registry command.

    Camera configuration (registration, regions, per-camera gates) needs the ``admin`` scope: a
    reviewer with ``vision:write`` must not be able to silence a camera."""
    require_scope(principal, ADMIN_SCOPE)
    require_city_wide(principal, "the camera registry")
    records, refused = [], []
    for index, camera in enumerate(body.cameras):
        try:
            records.append(registry.record_of_model(camera))
        except registry.InvalidCameraRow as error:
            refused.append(Refusal(index=index, code="vision.invalid_camera", detail=str(error)))
    unique = list({r[0]: r for r in records}.values())
    async with runtime.uow() as uow:
        imported = await registry.import_cameras(uow.session, unique)
    return ImportResult(imported=imported, refused=refused)


@router.get("/cameras", operation_id="list_cameras")
async def list_cameras(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictCode | None = None,
    owner: Owner | None = None,
    status: CameraStatus | None = None,
    bbox: Annotated[
        str | None, Query(max_length=100, description="min_lon,min_lat,max_lon,max_lat (WGS84)")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CameraOut]:
    box = None
    if bbox is not None:
        try:
            values = [float(v) for v in bbox.split(",")]
        except ValueError:
            raise InvalidBoundingBox("bbox is four numbers: min_lon,min_lat,max_lon,max_lat") from None
        if len(values) != 4 or not (
            -180 <= values[0] <= values[2] <= 180 and -90 <= values[1] <= values[3] <= 90
        ):
            raise InvalidBoundingBox("bbox is min_lon,min_lat,max_lon,max_lat with min ≤ max on Earth")
        box = registry.BBox(*values)
    async with runtime.db() as session:
        cameras, next_cursor = await registry.list_cameras(
            session,
            limit=limit,
            cursor=cursor,
            district_code=district_scope(principal, district),
            owner=owner.value if owner else None,
            status=status.value if status else None,
            bbox=box,
        )
    return Page[CameraOut](items=[camera_out(c) for c in cameras], next_cursor=next_cursor)


@router.get("/cameras/{camera_id}", operation_id="get_camera")
async def get_camera(
    camera_id: CameraId, response: Response, runtime: RuntimeDep, principal: CurrentPrincipal
) -> CameraOut:
    async with runtime.db() as session:
        view = await registry.get_camera_view(session, camera_id)
    require_district(principal, view.camera.district_code)
    response.headers["ETag"] = etag(view.camera.version)
    return camera_out(view)


@router.put("/cameras/{camera_id}/regions", operation_id="set_camera_regions")
async def set_regions(
    camera_id: CameraId,
    body: RegionsIn,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> CameraOut:
    """Replace the camera's regions of interest (per algorithm; none means the whole image; admin)."""
    require_scope(principal, ADMIN_SCOPE)
    version = expected_version(if_match)
    regions: dict[str, Any] = {
        code: [[list(v) for v in p] for p in polygons] for code, polygons in body.regions.items()
    }
    async with runtime.uow() as uow:
        await registry.set_regions(uow.session, camera_id, regions, version, principal)
        view = await registry.get_camera_view(uow.session, camera_id)
    response.headers["ETag"] = etag(view.camera.version)
    return camera_out(view)


@router.put(
    "/cameras/{camera_id}/overrides/{algorithm_code}", status_code=204, operation_id="set_camera_override"
)
async def set_override(
    camera_id: CameraId,
    algorithm_code: AlgorithmCode,
    body: GatesPatch,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> Response:
    """This camera's own gates for one class; an empty body removes them (admin)."""
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.uow() as uow:
        await registry.set_override(
            uow.session, camera_id, algorithm_code, body.model_dump(exclude_none=True, mode="json"), principal
        )
    return Response(status_code=204)


@router.post("/cameras/heartbeats", operation_id="camera_heartbeats")
async def heartbeats(body: Heartbeats, runtime: RuntimeDep, principal: CurrentPrincipal) -> HeartbeatResult:
    """Engines and platforms report the cameras they can see (scope ``vision:ingest``)."""
    require_scope(principal, INGEST_SCOPE)
    require_city_wide(principal, "the camera fleet's heartbeat feed")
    async with runtime.uow() as uow:
        online, unknown = await registry.record_heartbeats(uow.session, body.camera_ids)
    return HeartbeatResult(online=online, unknown=unknown)


# -- catalogue ---------------------------------------------------------------------------------------


def algorithm_out(row: AlgorithmRow) -> AlgorithmOut:
    active = active_of(row)
    return AlgorithmOut(
        code=active.code,
        group=active.group,
        name_zh=active.name_zh,
        name_en=active.name_en,
        category_code=active.category_code,
        gates=GatesOut(**active.gates.as_dict()),
        active=active.active,
    )


@router.get("/algorithms", operation_id="list_algorithms")
async def list_algorithms(runtime: RuntimeDep, group: Group | None = None) -> list[AlgorithmOut]:
    """The catalogue with each class's gates as this city runs them."""
    async with runtime.db() as session:
        rows = await load_algorithms(session)
    return [
        AlgorithmOut(
            code=a.code,
            group=a.group,
            name_zh=a.name_zh,
            name_en=a.name_en,
            category_code=a.category_code,
            gates=GatesOut(**a.gates.as_dict()),
            active=a.active,
        )
        for a in rows.values()
        if group is None or a.group is group
    ]


@router.patch("/admin/algorithms/{algorithm_code}", operation_id="update_algorithm")
async def update_algorithm(
    algorithm_code: AlgorithmCode,
    body: AlgorithmPatch,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    vision: Vision,
) -> AlgorithmOut:
    """Change a class's defaults or switch it off (admin). In force in this replica at once, in
    the others within ``CITYGRID_CATALOGUE_REFRESH_SECONDS``."""
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.uow() as uow:
        row = await get_algorithm(uow.session, algorithm_code)
        if body.gates is not None:
            row.gates = {**row.gates, **body.gates.model_dump(exclude_none=True, mode="json")}
        if body.active is not None:
            row.active = body.active
        row.updated_at = await transaction_time(uow.session)
        await uow.session.flush()
        out = algorithm_out(row)
    vision.catalogue.invalidate()
    return out


# -- detections --------------------------------------------------------------------------------------


@router.post("/detections", operation_id="ingest_detections")
async def ingest_detections(
    body: DetectionBatch, runtime: RuntimeDep, principal: CurrentPrincipal, vision: Vision
) -> BatchResult:
    """Up to 1,000 raw detections; each gets its own result, so one bad item never sinks the others."""
    require_scope(principal, INGEST_SCOPE)
    require_city_wide(principal, "the detection feed")
    # Snapshots are written before the transaction opens: no advisory lock waits on an fsync.
    staged = await intake.stage(body.detections, blobs=vision.blobs, limits=vision.limits)
    async with runtime.uow() as uow:
        results = await intake.ingest(
            uow,
            staged,
            blobs=vision.blobs,
            metrics=vision.metrics,
            limits=vision.limits,
            catalogue=vision.catalogue,
        )
    accepted = sum(r.accepted for r in results)
    return BatchResult(
        received=len(results), accepted=accepted, refused=len(results) - accepted, results=results
    )


# -- alarms and review -------------------------------------------------------------------------------


@router.get("/alarms", operation_id="list_alarms")
async def list_alarms(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    status: AlarmStatus | None = None,
    district: DistrictCode | None = None,
    algorithm: AlgorithmCode | None = None,
    camera: CameraId | None = None,
    raised_before: Annotated[
        CityTime | None, Query(description="Only alarms raised before this time.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlarmOut]:
    """The review queue is ``status=pending_review``, oldest first."""
    if status is AlarmStatus.CANDIDATE:
        raise InvalidInput("candidates are not alarms yet and are not listed")
    async with runtime.db() as session:
        alarms, next_cursor = await review.list_alarms(
            session,
            limit=limit,
            cursor=cursor,
            status=status,
            district_code=district_scope(principal, district),
            algorithm_code=algorithm,
            camera_id=camera,
            raised_before=raised_before,
        )
    return Page[AlarmOut](items=[alarm_out(a) for a in alarms], next_cursor=next_cursor)


@router.get("/alarms/{alarm_id}", operation_id="get_alarm")
async def get_alarm(
    alarm_id: uuid.UUID, response: Response, runtime: RuntimeDep, principal: CurrentPrincipal
) -> AlarmDetailOut:
    async with runtime.db() as session:
        alarm = await review.visible_alarm(session, alarm_id, principal)
        rechecks = await review.rechecks_of(session, alarm_id)
    response.headers["ETag"] = etag(alarm.version)
    return AlarmDetailOut(
        **alarm_out(alarm).model_dump(), rechecks=[RecheckOut.model_validate(r) for r in rechecks]
    )


@router.post("/alarms/{alarm_id}/confirm", operation_id="confirm_alarm")
async def confirm_alarm(
    alarm_id: uuid.UUID,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    vision: Vision,
    if_match: IfMatch = None,
    body: Confirm | None = None,
) -> AlarmOut:
    """一键派案: confirm the alarm; the case service raises the case from ``vision.alarm.confirmed``."""
    version = expected_version(if_match)
    async with runtime.uow() as uow:
        alarm = await review.confirm(
            uow,
            alarm_id,
            principal,
            expected_version=version,
            note=body.note if body else None,
            metrics=vision.metrics,
        )
    response.headers["ETag"] = etag(alarm.version)
    return alarm_out(alarm)


@router.post("/alarms/{alarm_id}/reject", operation_id="reject_alarm")
async def reject_alarm(
    alarm_id: uuid.UUID,
    body: Reject,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    vision: Vision,
    if_match: IfMatch = None,
) -> AlarmOut:
    """A false positive, with the reason: counted in the class's and the camera's false-positive rate."""
    version = expected_version(if_match)
    async with runtime.uow() as uow:
        alarm = await review.reject(
            uow, alarm_id, principal, expected_version=version, reason=body.reason, metrics=vision.metrics
        )
    response.headers["ETag"] = etag(alarm.version)
    return alarm_out(alarm)


@router.post("/alarms/review", operation_id="review_alarms")
async def review_alarms(
    body: BulkReview, runtime: RuntimeDep, principal: CurrentPrincipal, vision: Vision
) -> BulkResult:
    """Confirm or reject many alarms; each is its own transaction and gets its own result."""
    review.require_reviewer(principal)
    if body.action == "reject" and not body.reason:
        raise ReasonRequired("rejecting needs a reason")
    results = []
    for alarm_id in dict.fromkeys(body.alarm_ids):
        try:
            async with runtime.uow() as uow:
                if body.action == "confirm":
                    alarm = await review.confirm(
                        uow,
                        alarm_id,
                        principal,
                        expected_version=None,
                        note=body.reason,
                        metrics=vision.metrics,
                    )
                else:
                    alarm = await review.reject(
                        uow,
                        alarm_id,
                        principal,
                        expected_version=None,
                        reason=body.reason or "",
                        metrics=vision.metrics,
                    )
            results.append(BulkItem(alarm_id=alarm_id, ok=True, status=alarm.status))
        except (review.AlarmNotFound, review.NotPendingReview, OtherDistrict) as error:
            results.append(BulkItem(alarm_id=alarm_id, ok=False, code=error.code, detail=error.detail))
    return BulkResult(results=results)


@router.get("/stats/false-positives", operation_id="false_positive_stats")
async def false_positives(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    vision: Vision,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> FalsePositiveStats:
    """Per class and per camera, from people's reviews; with the threshold that would meet the target rate."""
    require_city_wide(principal, "the catalogue's false-positive statistics")
    async with runtime.db() as session:
        return await review.false_positive_stats(session, days=days, target_rate=vision.false_positive_target)


@router.get(
    "/snapshots/{sha256}",
    operation_id="get_snapshot",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
async def get_snapshot(
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    vision: Vision,
) -> Response:
    """The snapshot an alarm or a re-check names, by its SHA-256; for a district-bound caller, one
    of its district's alarms or their re-checks."""
    if principal.district is not None:
        async with runtime.db() as session:
            owned = await review.snapshot_in_district(session, sha256, principal.district)
        if not owned:
            require_district(principal, None)
    data = await vision.blobs.get(sha256)
    content_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return Response(
        content=data,
        media_type=content_type,
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )
