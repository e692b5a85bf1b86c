"""Request and response models of extensions, evidence photos, check-ins and the handler's tasks."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from citygrid.clock import CityTime
from citygrid.schemas import RequestModel
from contract.case import CaseStatus
from contract.common import GeoPoint
from services.case.domain.extensions import ExtensionStatus
from services.case.schemas import Note


class RequestExtension(RequestModel):
    reason: Note = Field(description="Why the unit needs more time; kept in the case's history.")
    new_deadline: CityTime = Field(description="The handling deadline asked for (RFC 3339).")


class ApproveExtension(RequestModel):
    deadline: CityTime | None = Field(
        default=None, description="Grant this deadline instead of the one requested."
    )
    note: Note | None = None


class DenyExtension(RequestModel):
    note: Note = Field(description="The reason, kept in the case's history.")


class ExtensionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    case_id: uuid.UUID
    status: ExtensionStatus
    reason: str
    requested_deadline: CityTime
    previous_deadline: CityTime | None
    granted_deadline: CityTime | None
    requested_by: str
    requested_by_name: str
    requested_at: CityTime
    decided_by: str | None
    decided_by_name: str | None
    decided_at: CityTime | None
    decision_note: str | None


Metres = Annotated[StrictFloat, Field(ge=0, le=100_000, allow_inf_nan=False)]


class CheckIn(RequestModel):
    location: GeoPoint = Field(description="The handler's GPS fix, GeoJSON [lon, lat] in WGS84/CGCS2000.")
    accuracy_m: Metres | None = Field(default=None, description="The fix's reported accuracy.")
    note: Note | None = None


class CheckInOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    actor: str
    actor_name: str
    unit: str | None
    location: GeoPoint
    accuracy_m: float | None
    distance_m: float = Field(description="Great-circle distance from the case's point, in metres.")
    far: bool = Field(description="Farther from the case's point than the service's check-in radius.")
    note: str | None
    at: CityTime


class TaskOut(BaseModel):
    """A case in a unit's hands, as the handler's phone lists it."""

    id: uuid.UUID
    number: str
    status: CaseStatus
    category_code: str
    description: str
    location: GeoPoint
    address: str | None
    district_code: str
    unit: str | None
    accepted_by: str | None
    stage: str | None
    deadline_at: CityTime | None
    overdue_at: CityTime | None
    version: int
