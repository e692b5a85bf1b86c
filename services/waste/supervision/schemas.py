"""What the supervision routes take and answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from citygrid.clock import CityTime
from citygrid.schemas import RequestModel
from contract.common import Code
from contract.waste import WasteStream, WasteViolation
from services.waste.domain.supervision import Observed
from services.waste.registry.schemas import Located, Rfid

EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")]
Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Outcome = Literal["new", "repeat", "ignored", "duplicate", "refused"]


class BinEventIn(RequestModel):
    """One thing a drop-off point's AI box saw, under the box's own id for it."""

    id: EventId
    point_code: Code
    observed: Observed
    at: AwareDatetime
    confidence: Confidence
    # The bin it concerns, when the box can tell (its stream is then the violation's).
    bin_rfid: Rfid | None = None
    stream: WasteStream | None = None


class BinEventBatch(RequestModel):
    events: list[BinEventIn] = Field(min_length=1, max_length=500)


class BinEventResult(BaseModel):
    index: int
    id: str
    outcome: Outcome
    violation_id: uuid.UUID | None = None
    # Why an event was ignored (below_confidence, within_opening_hours) or refused (a problem code).
    reason: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    received: int
    violations: int
    results: list[BinEventResult]


class ViolationOut(Located):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    point_code: str
    district_code: str
    kind: WasteViolation
    severity: Literal["normal", "urgent"]
    stream: WasteStream | None
    source: Literal["box", "camera"]
    category_code: str
    episode_started_at: CityTime
    last_seen_at: CityTime
    observations: int
    confidence: float
    detail: str
    source_alarm: str | None
    snapshots: list[dict[str, object]]
    created_at: CityTime
    case_id: uuid.UUID | None = None
    case_status: str | None = Field(default=None, description="The status of the case raised for it.")
    resolved_at: CityTime | None = Field(default=None, description="When its case was closed.")
