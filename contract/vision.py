"""Events the vision service publishes (stream ``VISION``, subjects ``vision.*``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from citygrid.events import EventData
from contract.common import EvidenceRef, ProblemDetected

# GB/T 28181 device id: 8 centre (GB/T 2260 division) + 2 industry + 3 type + 1 network + 6 serial.
CameraId = Annotated[str, StringConstraints(pattern=r"^\d{20}$")]
AlgorithmCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Box(BaseModel):
    """A detection's bounding box in normalised image coordinates (0..1, origin top-left)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: Unit
    y: Unit
    width: Unit
    height: Unit


class AlarmConfirmed(ProblemDetected):
    """An alarm a person confirmed (or a precise class confirmed itself): raise the case.

    ``reference`` is the alarm id; ``evidence`` holds the best snapshot.
    """

    subject: ClassVar[str] = "vision.alarm.confirmed"

    camera_id: CameraId
    algorithm_code: AlgorithmCode
    confidence: Unit
    boxes: list[Box] = Field(default_factory=list, max_length=50)
    auto_confirmed: bool
    confirmed_by: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class RecheckCompleted(EventData):
    """The analysis engine looked at the camera again after the case was handled.

    ``passed``: the problem is gone from the region, so the case may close; otherwise it goes back
    for rework with the new snapshot as evidence.
    """

    subject: ClassVar[str] = "vision.recheck.completed"

    recheck_id: uuid.UUID
    alarm_id: uuid.UUID
    case_id: uuid.UUID
    camera_id: CameraId
    algorithm_code: AlgorithmCode
    passed: bool
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None
    evidence: list[EvidenceRef] = Field(default_factory=list, max_length=20)
    checked_at: datetime


ALL_VISION_EVENTS: tuple[type[EventData], ...] = (AlarmConfirmed, RecheckCompleted)
