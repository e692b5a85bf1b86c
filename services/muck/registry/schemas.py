"""What the register's routes take and answer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from citygrid.schemas import RequestModel
from contract.common import CameraId, Code, KnownDistrict, Latitude, Longitude, Name, Phone, TerminalPhone
from contract.muck import Plate
from services.muck.domain.windows import parse_window
from services.muck.models import SiteKind

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
RecordDate = Annotated[date, Field(ge=date(1970, 1, 1), le=date(2199, 12, 31))]
IdNumber = Annotated[str, StringConstraints(pattern=r"^\d{17}[\dXx]$")]
Point = tuple[Longitude, Latitude]


def _ring(points: list[Point]) -> list[Point]:
    if points[0] != points[-1]:
        points = [*points, points[0]]
    if len(set(points)) < 3:
        raise ValueError("a boundary needs at least three distinct points")
    return points


def _window(text: str) -> str:
    parse_window(text)
    return text


Ring = Annotated[list[Point], Field(min_length=3, max_length=2000), AfterValidator(_ring)]
Line = Annotated[list[Point], Field(min_length=2, max_length=5000)]
Window = Annotated[str, AfterValidator(_window)]


class CompanyIn(RequestModel):
    code: Code
    name: Name
    licence_number: Identifier
    licence_valid_until: RecordDate | None = None
    district_code: KnownDistrict | None = None


class CompanyImport(RequestModel):
    companies: list[CompanyIn] = Field(min_length=1, max_length=1000)


class CompanyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    licence_number: str
    licence_valid_until: date | None
    district_code: str | None
    version: int


class TruckIn(RequestModel):
    plate: Plate
    company_code: Code
    terminal_phone: TerminalPhone
    terminal_id: Annotated[str, StringConstraints(max_length=30)] | None = None
    approval_number: Identifier
    approval_valid_until: RecordDate
    sealed_cover: bool = True
    capacity_m3: Annotated[float, Field(gt=0, le=100)]


class TruckImport(RequestModel):
    trucks: list[TruckIn] = Field(min_length=1, max_length=1000)


class TruckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    plate: str
    company_code: str
    # Shown to the register (``muck:write``) only.
    terminal_phone: str | None
    terminal_id: str | None
    approval_number: str
    approval_valid_until: date
    sealed_cover: bool
    capacity_m3: float
    registered_at: datetime | None
    version: int


class DriverIn(RequestModel):
    company_code: Code
    name: Name
    phone: Phone
    id_number: IdNumber
    licence_number: Identifier


class DriverOut(BaseModel):
    id: str
    company_code: str
    name: str | None
    phone: str | None
    id_number: str | None
    licence_number: str


class SiteIn(RequestModel):
    code: Code
    kind: SiteKind
    name: Name
    district_code: KnownDistrict
    boundary: Ring
    permit_number: Identifier
    permit_valid_from: RecordDate
    permit_valid_until: RecordDate
    approved_quantity_m3: Annotated[float, Field(gt=0, le=100_000_000)]
    gate_cameras: list[CameraId] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _permit_period(self) -> SiteIn:
        if self.permit_valid_until < self.permit_valid_from:
            raise ValueError("the permit ends before it starts")
        return self


class SiteImport(RequestModel):
    sites: list[SiteIn] = Field(min_length=1, max_length=1000)


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    kind: SiteKind
    name: str
    district_code: str
    boundary: list[list[float]]
    permit_number: str
    permit_valid_from: date
    permit_valid_until: date
    approved_quantity_m3: float
    gate_cameras: list[str]
    version: int


class RouteIn(RequestModel):
    code: Code
    name: Name
    line: Line
    width_m: Annotated[float, Field(gt=0, le=500)]


class RouteImport(RequestModel):
    routes: list[RouteIn] = Field(min_length=1, max_length=1000)


class RouteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    line: list[list[float]]
    width_m: float
    version: int


class AreaIn(RequestModel):
    code: Code
    name: Name
    boundary: Ring
    windows: list[Window] = Field(min_length=1, max_length=10)


class AreaImport(RequestModel):
    areas: list[AreaIn] = Field(min_length=1, max_length=100)


class AreaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    boundary: list[list[float]]
    windows: list[str]
    version: int
