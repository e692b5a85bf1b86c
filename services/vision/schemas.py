"""The vision service's HTTP contract: request and response models."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from citygrid.clock import CityTime
from citygrid.schemas import RequestModel
from contract.common import GUANGZHOU_DISTRICTS, DistrictCode, GeoPoint
from contract.vision import AlgorithmCode, Box, CameraId, Unit
from services.vision.domain.camera_ids import InvalidCameraId, parse_camera_id
from services.vision.domain.catalogue import Group, Severity
from services.vision.domain.pipeline import Outcome


def _camera_id(value: str) -> str:
    try:
        parse_camera_id(value)
    except InvalidCameraId as error:
        raise ValueError(str(error)) from None
    return value


def _known_district(code: str) -> str:
    if code not in GUANGZHOU_DISTRICTS:
        raise ValueError(f"unknown district code {code}")
    return code


ValidCameraId = Annotated[CameraId, AfterValidator(_camera_id)]
KnownDistrict = Annotated[DistrictCode, AfterValidator(_known_district)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
EngineName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
GridCode = Annotated[str, StringConstraints(pattern=r"^\d{15}$")]
Vertex = tuple[Unit, Unit]
RegionPolygon = Annotated[list[Vertex], Field(min_length=3, max_length=64)]
Regions = Annotated[
    dict[AlgorithmCode, Annotated[list[RegionPolygon], Field(min_length=1, max_length=8)]],
    Field(
        max_length=57, description="Per algorithm code, polygons of [x, y] in normalised image coordinates."
    ),
]


class Owner(StrEnum):
    """The department that owns the stream."""

    PUBLIC_SECURITY = "public_security"
    HOUSING_CONSTRUCTION = "housing_construction"
    TRANSPORT = "transport"
    CITY_MANAGEMENT = "city_management"
    WATER_AFFAIRS = "water_affairs"
    ECOLOGY_ENVIRONMENT = "ecology_environment"
    OTHER = "other"


class CameraIn(RequestModel):
    camera_id: ValidCameraId
    name: Name
    owner: Owner
    location: GeoPoint
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    district_code: KnownDistrict | None = Field(
        default=None, description="Only needed when the id's division is not one of the city's districts."
    )
    grid_code: GridCode | None = None
    engine: EngineName | None = Field(default=None, description="The analysis engine that watches it.")
    regions: Regions = Field(default_factory=dict)


class CameraImport(RequestModel):
    cameras: Annotated[list[CameraIn], Field(min_length=1, max_length=5000)]


class Refusal(BaseModel):
    index: int
    code: str
    detail: str


class ImportResult(BaseModel):
    imported: int
    refused: list[Refusal]


class CameraOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    camera_id: str
    name: str
    owner: str
    division_code: str
    district_code: str | None
    industry_code: str
    device_type: str
    network_code: str
    location: GeoPoint
    address: str | None
    grid_code: str | None
    engine: str | None
    status: str
    last_heartbeat_at: CityTime | None
    regions: dict[str, Any]
    version: int
    updated_at: CityTime


class RegionsIn(RequestModel):
    regions: Regions


class GatesPatch(RequestModel):
    min_confidence: Unit | None = None
    min_persistence_seconds: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] | None = None
    dedup_window_seconds: Annotated[float, Field(ge=0, le=604_800, allow_inf_nan=False)] | None = None
    cooldown_seconds: Annotated[float, Field(ge=0, le=604_800, allow_inf_nan=False)] | None = None
    severity: Severity | None = None
    auto_dispatch: StrictBool | None = None


class AlgorithmPatch(RequestModel):
    gates: GatesPatch | None = None
    active: StrictBool | None = None


class GatesOut(BaseModel):
    min_confidence: float
    min_persistence_seconds: float
    dedup_window_seconds: float
    cooldown_seconds: float
    severity: Severity
    auto_dispatch: bool


class AlgorithmOut(BaseModel):
    code: str
    group: Group
    name_zh: str
    name_en: str
    category_code: str
    gates: GatesOut
    active: bool


class Heartbeats(RequestModel):
    camera_ids: Annotated[list[CameraId], Field(min_length=1, max_length=5000)]


class HeartbeatResult(BaseModel):
    online: int
    unknown: list[str]


# -- detections ------------------------------------------------------------------------------------


class DetectionIn(RequestModel):
    """One raw detection of an analysis engine: a frame of one camera for one class."""

    camera_id: CameraId
    algorithm_code: AlgorithmCode
    detected_at: CityTime
    confidence: Unit
    boxes: Annotated[list[Box], Field(min_length=1, max_length=50)]
    track_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    snapshot_base64: Annotated[str, StringConstraints(max_length=1_400_000)] | None = Field(
        default=None, description="JPEG or PNG, base64; at most CITYGRID_VISION_MAX_SNAPSHOT_BYTES decoded."
    )


class DetectionBatch(BaseModel):
    """Items are checked one by one, so one bad item is refused alone."""

    model_config = ConfigDict(extra="forbid")

    detections: Annotated[list[Any], Field(min_length=1, max_length=1000)]


class ItemResult(BaseModel):
    index: int
    accepted: bool
    outcome: Outcome | None = None
    alarm_ids: list[uuid.UUID] = Field(default_factory=list)
    code: str | None = Field(default=None, description="Why the item was refused (stable code).")
    detail: str | None = None


class BatchResult(BaseModel):
    received: int
    accepted: int
    refused: int
    results: list[ItemResult]


# -- alarms ----------------------------------------------------------------------------------------


class AlarmOut(BaseModel):
    id: uuid.UUID
    camera_id: str
    algorithm_code: str
    category_code: str
    district_code: str | None
    severity: str
    status: str
    auto_confirmed: bool
    box: Box
    best_box: Box
    track_id: str | None
    confidence: float
    detections: int
    first_seen_at: CityTime
    last_seen_at: CityTime
    raised_at: CityTime | None
    snapshot_url: str | None
    case_id: uuid.UUID | None
    case_status: str | None
    reviewed_by: str | None
    reviewed_at: CityTime | None
    review_note: str | None
    resolved_at: CityTime | None
    version: int


class RecheckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    case_id: uuid.UUID
    status: str
    due_at: CityTime
    attempts: int
    last_error: str | None
    checked_at: CityTime | None


class AlarmDetailOut(AlarmOut):
    rechecks: list[RecheckOut]


class Confirm(RequestModel):
    note: Reason | None = None


class Reject(RequestModel):
    reason: Reason = Field(description="Why it is a false positive; kept with the review.")


class BulkReview(RequestModel):
    action: Literal["confirm", "reject"]
    alarm_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=200)]
    reason: Reason | None = Field(default=None, description="Required to reject.")


class BulkItem(BaseModel):
    alarm_id: uuid.UUID
    ok: bool
    status: str | None = None
    code: str | None = None
    detail: str | None = None


class BulkResult(BaseModel):
    results: list[BulkItem]


class ClassRate(BaseModel):
    algorithm_code: str
    reviewed: int
    false_positives: int
    false_positive_rate: float | None
    min_confidence: float
    recommended_min_confidence: float | None
    note: str


class CameraRate(BaseModel):
    camera_id: str
    reviewed: int
    false_positives: int
    false_positive_rate: float


class FalsePositiveStats(BaseModel):
    since: CityTime
    classes: list[ClassRate]
    cameras: list[CameraRate]
