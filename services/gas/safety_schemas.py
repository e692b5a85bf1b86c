"""The HTTP contract of household safety: stove and cylinder notices, inspections with their
hazards, and outreach activities."""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from citygrid.clock import CITY_TIMEZONE, CityTime
from citygrid.schemas import RequestModel
from contract.common import KnownDistrict
from services.gas.schemas import GasUserOut, RecordDate

MAX_HAZARDS = 20
MAX_ATTENDANCE = 100_000

Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Person = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Street = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Place = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Organiser = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class HazardKind(StrEnum):
    STOVE_PAST_LIFE = "stove_past_life"
    HOSE_AGED_OR_DAMAGED = "hose_aged_or_damaged"
    NO_LEAK_ALARM = "no_leak_alarm"
    CYLINDER_IN_BASEMENT_OR_ENCLOSED_SPACE = "cylinder_in_basement_or_enclosed_space"
    ILLEGAL_CYLINDER = "illegal_cylinder"
    VALVE_LEAK = "valve_leak"
    OTHER = "other"


# -- notices -------------------------------------------------------------------------------------------


class StovePastLifeOut(BaseModel):
    user: GasUserOut
    life_ended_on: date = Field(description="The first day the stove may no longer be used.")


# -- inspections ---------------------------------------------------------------------------------------


class HazardIn(RequestModel):
    kind: HazardKind
    description: Note | None = None
    rectify_by: RecordDate = Field(description="The household rectifies the hazard by this day.")


class InspectionIn(RequestModel):
    user_id: uuid.UUID
    inspected_at: CityTime = Field(description="When the premises were inspected (not in the future).")
    inspector: Person
    note: Note | None = None
    hazards: list[HazardIn] = Field(default_factory=list, max_length=MAX_HAZARDS)

    @model_validator(mode="after")
    def _rectified_after_found(self) -> InspectionIn:
        inspected_on = self.inspected_at.astimezone(CITY_TIMEZONE).date()
        for index, hazard in enumerate(self.hazards):
            if hazard.rectify_by < inspected_on:
                raise ValueError(
                    f"hazards[{index}].rectify_by is before the inspection's day ({inspected_on.isoformat()})"
                )
        return self


class RectifyIn(RequestModel):
    """Marks a hazard rectified. Nothing to send yet: a rectification note needs a column of its
    own on ``hazards``, so one sent now is refused (422) rather than dropped."""


class HazardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    inspection_id: uuid.UUID
    district_code: str
    kind: HazardKind
    description: str | None
    rectify_by: date
    rectified_at: CityTime | None
    rectified_by: str | None


class InspectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    district_code: str
    inspected_at: CityTime
    inspector: str
    note: str | None
    # Not a column of the inspection's row: filled in beside it (safety_api.inspection_out).
    hazards: list[HazardOut] = Field(default_factory=list)
    version: int
    created_at: CityTime


# -- outreach ------------------------------------------------------------------------------------------


class OutreachIn(RequestModel):
    district_code: KnownDistrict
    street: Street | None = None
    held_on: RecordDate = Field(description="The day it was held (not in the future).")
    place: Place
    topic: Place
    attendance: Annotated[StrictInt, Field(ge=0, le=MAX_ATTENDANCE)]
    organiser: Organiser


class OutreachOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    district_code: str
    street: str | None
    held_on: date
    place: str
    topic: str
    attendance: int
    organiser: str
    recorded_by: str
    created_at: CityTime


class DistrictOutreach(BaseModel):
    district_code: str
    activities: int
    attendance: int


class OutreachFiguresOut(BaseModel):
    """The campaign's figures per district over ``first_day``–``last_day`` (both included; none: open)."""

    first_day: date | None
    last_day: date | None
    districts: list[DistrictOutreach]
