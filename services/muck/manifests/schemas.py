"""What the manifests' routes take and answer."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from citygrid.schemas import RequestModel
from contract.common import Code
from contract.muck import Plate

MAX_WINDOW = timedelta(hours=24)
Quantity = Annotated[float, Field(gt=0, le=100)]  # cubic metres: a truck carries tens at most


class ManifestIn(RequestModel):
    plate: Plate
    driver_id: uuid.UUID | None = None
    origin_site: Code
    disposal_site: Code
    route_code: Code | None = None
    waste_type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    declared_quantity_m3: Quantity
    window_start: AwareDatetime
    window_end: AwareDatetime

    @model_validator(mode="after")
    def _window(self) -> ManifestIn:
        if self.window_end <= self.window_start:
            raise ValueError("the window must end after it starts")
        if self.window_end - self.window_start > MAX_WINDOW:
            raise ValueError("a manifest's window is at most 24 hours")
        return self


class LoadIn(RequestModel):
    """A gate scan: the truck left the site with the load (now, unless ``at`` says when)."""

    at: AwareDatetime | None = None


class ConfirmIn(RequestModel):
    received_quantity_m3: Quantity


class ResolveIn(RequestModel):
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    action: str
    status: str
    at: datetime
    actor: str
    detail: str | None


class ManifestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: str
    plate: str
    company_code: str
    driver_id: uuid.UUID | None
    origin_site: str
    disposal_site: str
    district_code: str
    route_code: str | None
    waste_type: str
    declared_quantity_m3: float
    received_quantity_m3: float | None
    window_start: datetime
    window_end: datetime
    status: str
    abnormal_reason: str | None
    resolution_note: str | None
    issued_by: str
    issued_at: datetime
    loaded_at: datetime | None
    delivered_at: datetime | None
    closed_at: datetime | None
    version: int


class ManifestDetailOut(ManifestOut):
    steps: list[StepOut] = Field(default_factory=list)


class ClosureOut(BaseModel):
    """Closed manifests over those due to close (issued in the period, their window ended or closed)."""

    key: str
    due: int
    closed: int
    rate: float | None
