"""What the register's routes take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from citygrid.schemas import RequestModel
from contract.common import CameraId, Code, GeoPoint, KnownDistrict, Name, Phone, TerminalPhone
from contract.waste import WasteStream
from services.waste.domain.hours import parse_window
from services.waste.models import FacilityKind, VehicleKind

ShortName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Address = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Plate = Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=12)]
# An RFID tag's id as its reader gives it: EPC hex or a vendor's serial.
Rfid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-]{4,32}$")]
Weekday = Annotated[int, Field(ge=1, le=7)]
# How far from a depot's or a facility's location a vehicle is inside it: a yard, a weighbridge's
# site, at most a large plant's grounds.
Radius = Annotated[float, Field(ge=10, le=2000, allow_inf_nan=False)]


def _window(text: str) -> str:
    return str(parse_window(text))


Window = Annotated[str, AfterValidator(_window)]


def _distinct(values: list[str], what: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"the same {what} is given twice")


class Located(BaseModel):
    """A registered place, answered with its GeoJSON point."""

    model_config = ConfigDict(from_attributes=True)

    lon: float = Field(exclude=True)
    lat: float = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def location(self) -> GeoPoint:
        return GeoPoint.of(self.lon, self.lat)


# -- drop-off points and their bins --------------------------------------------------------------


class BinIn(RequestModel):
    rfid: Rfid
    stream: WasteStream
    capacity_l: Annotated[int, Field(ge=1, le=10_000)] | None = None


class PointIn(RequestModel):
    code: Code
    name: Name
    community: ShortName
    district_code: KnownDistrict
    location: GeoPoint
    address: Address | None = None
    # Empty: open around the clock.
    opening_hours: list[Window] = Field(default_factory=list, max_length=6)
    cameras: list[CameraId] = Field(default_factory=list, max_length=20)
    bins: list[BinIn] = Field(min_length=1, max_length=20)
    contact_name: ShortName | None = None
    contact_phone: Phone | None = None

    @model_validator(mode="after")
    def _distinct_bins(self) -> PointIn:
        _distinct([item.rfid for item in self.bins], "bin RFID")
        _distinct(self.cameras, "camera")
        return self


class PointImport(RequestModel):
    points: list[PointIn] = Field(min_length=1, max_length=1000)


class BinOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rfid: str
    stream: WasteStream
    capacity_l: int | None


class PointOut(Located):
    code: str
    name: str
    community: str
    district_code: str
    address: str | None
    opening_hours: list[str]
    cameras: list[str]
    # Personal data: masked without ``pii:read``.
    contact_name: str | None
    contact_phone: str | None
    bins: list[BinOut] = Field(default_factory=list)
    version: int


# -- collection points ----------------------------------------------------------------------------


class CollectionPointIn(RequestModel):
    code: Code
    name: Name
    district_code: KnownDistrict
    location: GeoPoint
    address: Address | None = None
    streams: list[WasteStream] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _distinct_streams(self) -> CollectionPointIn:
        _distinct(list(self.streams), "stream")
        return self


class CollectionPointImport(RequestModel):
    collection_points: list[CollectionPointIn] = Field(min_length=1, max_length=1000)


class CollectionPointOut(Located):
    code: str
    name: str
    district_code: str
    address: str | None
    streams: list[WasteStream]
    version: int


# -- vehicles -------------------------------------------------------------------------------------


class VehicleIn(RequestModel):
    plate: Plate
    kind: VehicleKind
    # A collection vehicle carries one stream; a cleaning vehicle none.
    stream: WasteStream | None = None
    company: Name
    district_code: KnownDistrict
    terminal_phone: TerminalPhone
    driver_name: ShortName | None = None
    driver_phone: Phone | None = None

    @model_validator(mode="after")
    def _stream_of_its_kind(self) -> VehicleIn:
        if self.kind is VehicleKind.COLLECTION and self.stream is None:
            raise ValueError("a collection vehicle carries one stream: name it")
        if self.kind is VehicleKind.CLEANING and self.stream is not None:
            raise ValueError("a cleaning vehicle carries no stream")
        return self


class VehicleImport(RequestModel):
    vehicles: list[VehicleIn] = Field(min_length=1, max_length=1000)


class VehicleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    plate: str
    kind: VehicleKind
    stream: WasteStream | None
    company: str
    district_code: str
    # Shown to the register (``waste:write``) only: half of what it takes to speak for the terminal.
    terminal_phone: str | None
    # Personal data: masked without ``pii:read``.
    driver_name: str | None
    driver_phone: str | None
    # When its terminal registered over JT/T 808; None until it does, and once released.
    registered_at: datetime | None = None
    version: int


# -- facilities -----------------------------------------------------------------------------------


class FacilityIn(RequestModel):
    code: Code
    name: Name
    kind: FacilityKind
    district_code: KnownDistrict
    location: GeoPoint
    radius_m: Radius = 150.0
    streams: list[WasteStream] = Field(min_length=1, max_length=4)
    weighbridges: list[Code] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _distinct_values(self) -> FacilityIn:
        _distinct(list(self.streams), "stream")
        _distinct(self.weighbridges, "weighbridge")
        return self


class FacilityImport(RequestModel):
    facilities: list[FacilityIn] = Field(min_length=1, max_length=100)


class FacilityOut(Located):
    code: str
    name: str
    kind: FacilityKind
    district_code: str
    radius_m: float
    streams: list[WasteStream]
    weighbridges: list[str]
    version: int


# -- depots ---------------------------------------------------------------------------------------


class DepotIn(RequestModel):
    code: Code
    name: Name
    district_code: KnownDistrict
    location: GeoPoint
    radius_m: Radius = 100.0


class DepotImport(RequestModel):
    depots: list[DepotIn] = Field(min_length=1, max_length=100)


class DepotOut(Located):
    code: str
    name: str
    district_code: str
    radius_m: float
    version: int


# -- routes and schedules -------------------------------------------------------------------------


class RouteIn(RequestModel):
    code: Code
    name: Name
    plate: Plate
    district_code: KnownDistrict
    stream: WasteStream | None = None
    days: list[Weekday] = Field(min_length=1, max_length=7)
    time_window: Window
    stops: list[Code] = Field(min_length=1, max_length=500)
    facility_code: Code | None = None

    @model_validator(mode="after")
    def _distinct_days(self) -> RouteIn:
        _distinct([str(day) for day in self.days], "day")
        return self


class RouteImport(RequestModel):
    routes: list[RouteIn] = Field(min_length=1, max_length=1000)


class RouteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    plate: str
    district_code: str
    stream: WasteStream | None
    days: list[int]
    time_window: str
    stops: list[str]
    facility_code: str | None
    version: int
