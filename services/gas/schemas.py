"""The gas service's HTTP contract: request and response models."""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StringConstraints, model_validator

from citygrid.clock import CityTime
from citygrid.schemas import RequestModel
from contract.common import GeoPoint, KnownDistrict
from contract.gas import CylinderCode, LeakSource, PremisesType, RefusalReason
from services.gas.domain.incidents import IncidentStep
from services.gas.domain.lifecycle import CylinderStatus, ScanKind
from services.gas.models import EnterpriseKind

EnterpriseCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{1,31}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9\- ]{4,30}$")]
Kilograms = Annotated[float, Field(gt=0, le=200)]
# A calendar date a record can plausibly carry (keeps additions of years inside Python's range).
RecordDate = Annotated[date, Field(ge=date(1970, 1, 1), le=date(2199, 12, 31))]

MAX_BATCH = 1_000


class EnterpriseIn(RequestModel):
    code: EnterpriseCode
    kind: EnterpriseKind
    name: Name
    company_code: EnterpriseCode | None = Field(
        None, description="The gas company a station or supply point belongs to; none for a company."
    )
    licence_number: Identifier
    licence_valid_until: RecordDate | None = Field(None, description="Valid through this day.")
    district_code: KnownDistrict | None = None
    location: GeoPoint | None = None

    @model_validator(mode="after")
    def _company_rules(self) -> EnterpriseIn:
        if self.kind == EnterpriseKind.GAS_COMPANY and self.company_code is not None:
            raise ValueError("a gas company belongs to no other company: leave company_code out")
        if self.kind != EnterpriseKind.GAS_COMPANY and self.company_code is None:
            raise ValueError(f"a {self.kind.value} names the gas company it belongs to (company_code)")
        if self.kind == EnterpriseKind.FILLING_STATION and self.district_code is None:
            raise ValueError("a filling station names its district (its enforcement cases go there)")
        return self


class EnterpriseImport(RequestModel):
    enterprises: list[EnterpriseIn] = Field(min_length=1, max_length=MAX_BATCH)


class EnterpriseOut(BaseModel):
    code: str
    kind: EnterpriseKind
    name: str
    company_code: str | None
    licence_number: str
    licence_valid_until: date | None
    district_code: str | None
    location: GeoPoint | None
    locked: bool
    locked_at: CityTime | None
    locked_by: str | None
    lock_reason: str | None
    entrusted_by: list[str] = Field(default_factory=list)
    version: int
    updated_at: CityTime


class EntrustmentIn(RequestModel):
    company_code: EnterpriseCode
    valid_until: RecordDate | None = None


class LockIn(RequestModel):
    reason: Reason


class StationLockOut(BaseModel):
    station_code: str
    locked: bool
    reason: str
    actor: str
    at: CityTime


class UserKind(StrEnum):
    HOUSEHOLD = "household"
    RESTAURANT = "restaurant"
    BUSINESS = "business"


class GasUserIn(RequestModel):
    kind: UserKind
    name: Name
    phone: Phone | None = None
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    district_code: KnownDistrict
    location: GeoPoint | None = None
    supplier_code: EnterpriseCode | None = None
    stove_sold_on: RecordDate | None = Field(
        None, description="When the user's stove was sold (8-year life)."
    )


class GasUserOut(BaseModel):
    id: uuid.UUID
    kind: UserKind
    name: str | None
    phone: str | None
    address: str | None
    district_code: str
    location: GeoPoint | None
    supplier_code: str | None
    stove_sold_on: date | None
    stove_life_ends: date | None
    version: int


class CylinderIn(RequestModel):
    code: CylinderCode
    owner_code: EnterpriseCode
    manufacturer: Name
    serial: Identifier
    manufactured_on: RecordDate
    last_inspected_on: RecordDate | None = None
    last_inspection_passed: StrictBool | None = Field(
        None, description="The result of the inspection on last_inspected_on (required with it)."
    )
    tare_kg: Kilograms | None = None
    capacity_kg: Kilograms

    @model_validator(mode="after")
    def _inspection_pair(self) -> CylinderIn:
        if (self.last_inspected_on is None) != (self.last_inspection_passed is None):
            raise ValueError("last_inspected_on and last_inspection_passed go together")
        if self.last_inspected_on is not None and self.last_inspected_on < self.manufactured_on:
            raise ValueError("a cylinder is not inspected before it is made")
        return self


class CylinderImport(RequestModel):
    cylinders: list[CylinderIn] = Field(min_length=1, max_length=MAX_BATCH)


class CylinderOut(BaseModel):
    code: str
    owner_code: str
    manufacturer: str
    serial: str
    manufactured_on: date
    last_inspected_on: date | None
    last_passed_inspection_on: date | None
    next_inspection_due: date
    end_of_life: date
    tare_kg: float | None
    capacity_kg: float
    status: CylinderStatus
    holder_id: uuid.UUID | None
    last_scan_at: CityTime | None
    last_scan_kind: ScanKind | None
    last_place: str | None
    last_location: GeoPoint | None
    last_fill_batch: str | None
    version: int


class ScanIn(RequestModel):
    cylinder_code: CylinderCode
    kind: ScanKind
    at: CityTime
    enterprise_code: EnterpriseCode | None = Field(
        None, description="Where it was scanned: the station, supply point or company."
    )
    operator: Identifier | None = None
    scale_id: Identifier | None = None
    net_mass_kg: Kilograms | None = Field(None, description="A fill's net mass (required for fill).")
    fill_batch: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._:\-]{0,63}$")] | None = (
        None
    )
    user_id: uuid.UUID | None = Field(None, description="The user a delivery reaches (required for deliver).")
    location: GeoPoint | None = None
    passed: StrictBool | None = Field(None, description="An inspection's result (required for inspect).")
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None

    @model_validator(mode="after")
    def _what_each_kind_needs(self) -> ScanIn:
        needs = {
            ScanKind.FILL: ("net_mass_kg", "enterprise_code"),
            ScanKind.DELIVER: ("user_id",),
            ScanKind.INSPECT: ("passed",),
        }.get(self.kind, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind.value} scan needs {', '.join(missing)}")
        if self.passed is not None and self.kind != ScanKind.INSPECT:
            raise ValueError("only an inspect scan has a verdict (passed)")
        if self.net_mass_kg is not None and self.kind != ScanKind.FILL:
            raise ValueError("only a fill scan has a net mass")
        return self


class ScanBatch(RequestModel):
    scans: list[ScanIn] = Field(min_length=1, max_length=MAX_BATCH)


class ScanResult(BaseModel):
    index: int
    cylinder_code: str
    accepted: bool
    status: CylinderStatus | None = None
    scan_id: uuid.UUID | None = None
    code: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    received: int
    accepted: int
    refused: int
    results: list[ScanResult]


class ScanOut(BaseModel):
    id: uuid.UUID
    cylinder_code: str
    kind: ScanKind
    at: CityTime
    status_after: CylinderStatus
    enterprise_code: str | None
    operator: str | None
    scale_id: str | None
    net_mass_kg: float | None
    fill_batch: str | None
    user_id: uuid.UUID | None
    location: GeoPoint | None
    passed: bool | None
    source: str


class ObservationsIn(RequestModel):
    """What the operator and the scale saw before filling."""

    modified: StrictBool = False
    wrong_marking: StrictBool = False
    damaged: StrictBool = False
    no_residual_pressure: StrictBool = False


class FillCheckIn(RequestModel):
    cylinder_code: CylinderCode
    station_code: EnterpriseCode
    scale_id: Identifier
    operator: Identifier | None = None
    observations: ObservationsIn = Field(default_factory=ObservationsIn)


class FillCheckOut(BaseModel):
    id: uuid.UUID
    allowed: bool
    reasons: list[RefusalReason]
    cylinder_code: str
    station_code: str
    cylinder_status: CylinderStatus | None
    checked_at: CityTime
    case_reference: str | None = Field(
        None, description="The enforcement case's origin reference (refusals)."
    )


class DueOut(BaseModel):
    owner_code: str
    cylinders: int
    earliest_due: date | None


class RecallOut(BaseModel):
    fill_batch: str
    cylinders: list[CylinderOut]
    next_cursor: str | None = None


class IncidentIn(RequestModel):
    """A gas leak report: where, what kind of premises, what leaks."""

    premises_type: PremisesType
    source: LeakSource
    place: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    district_code: KnownDistrict
    location: GeoPoint
    # The case's description is this with what leaks where in front: room for it in 4,000.
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=3800)]
    reporter_name: Name | None = None
    reporter_phone: Phone | None = None
    cylinder_code: CylinderCode | None = None


class IncidentStepIn(RequestModel):
    step: IncidentStep
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None


class IncidentStepOut(BaseModel):
    step: IncidentStep
    at: CityTime
    actor: str
    note: str | None


class IncidentOut(BaseModel):
    id: uuid.UUID
    step: IncidentStep
    next_step: IncidentStep | None
    premises_type: PremisesType
    source: LeakSource
    place: str
    district_code: str
    location: GeoPoint
    description: str
    reporter_name: str | None
    reporter_phone: str | None
    cylinder_code: str | None
    reported_at: CityTime
    closed_at: CityTime | None
    steps: list[IncidentStepOut]
    version: int


class AnomalyOut(BaseModel):
    id: uuid.UUID
    kind: str
    cylinder_code: str
    enterprise_code: str | None
    detected_at: CityTime
    details: dict[str, object]
