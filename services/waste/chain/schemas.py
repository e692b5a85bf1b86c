"""What the collection chain's routes take and answer."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from citygrid.clock import CityTime
from citygrid.schemas import RequestModel
from contract.common import Code, GeoPoint
from contract.waste import WasteStream, WasteViolation
from services.waste.registry.schemas import Plate, Rfid

# On-truck scales and weighbridges: a bin is under 5 t, a load under 100 t.
BinKg = Annotated[float, Field(ge=0, le=5_000, allow_inf_nan=False)]
LoadKg = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]
MAX_BATCH = 1000


class PickupIn(RequestModel):
    """A bin lifted at a point: the vehicle, the bin's RFID tag, the on-truck weight, when."""

    plate: Plate
    point_code: Code
    rfid: Rfid
    weight_kg: BinKg
    at: AwareDatetime


class PickupBatch(RequestModel):
    pickups: list[PickupIn] = Field(min_length=1, max_length=MAX_BATCH)


class WeighingIn(RequestModel):
    """A facility's weighbridge record of an unloading: gross in, tare out."""

    facility_code: Code
    weighbridge: Code
    plate: Plate
    gross_kg: LoadKg
    tare_kg: LoadKg
    at: AwareDatetime


class WeighingBatch(RequestModel):
    weighings: list[WeighingIn] = Field(min_length=1, max_length=MAX_BATCH)


class DepartedIn(RequestModel):
    kind: Literal["departed_depot"]
    plate: Plate
    depot: Code
    at: AwareDatetime


class ReturnedIn(RequestModel):
    kind: Literal["returned_to_depot"]
    plate: Plate
    depot: Code
    at: AwareDatetime


class ArrivedIn(RequestModel):
    """The vehicle entered a facility's grounds; its weighbridge record is the unloading."""

    kind: Literal["arrived_at_facility"]
    plate: Plate
    facility_code: Code
    at: AwareDatetime


class StoppedIn(RequestModel):
    """A stop outside every registered place, from ``at``; without ``ended_at`` while under way (send
    it again with its end)."""

    kind: Literal["stopped"]
    plate: Plate
    at: AwareDatetime
    ended_at: AwareDatetime | None = None
    location: GeoPoint


MovementIn = Annotated[DepartedIn | ReturnedIn | ArrivedIn | StoppedIn, Field(discriminator="kind")]


class MovementBatch(RequestModel):
    movements: list[MovementIn] = Field(min_length=1, max_length=MAX_BATCH)


Outcome = Literal["stored", "duplicate", "updated", "refused"]


class ItemResult(BaseModel):
    """What became of one item: stored, a duplicate of one stored before (nothing changed), updated
    (a stop's end), or refused with a problem code."""

    index: int
    key: str
    outcome: Outcome
    code: str | None = None
    detail: str | None = None


class RecordsResult(BaseModel):
    received: int
    stored: int
    duplicates: int
    refused: int
    results: list[ItemResult]


# -- trips --------------------------------------------------------------------------------------


class TripOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    plate: str
    stream: WasteStream | None
    district_code: str | None
    start: Literal["depot", "unloading", "first_pickup"]
    started_at: CityTime
    ending: Literal["unloaded", "returned_to_depot", "open"]
    ended_at: CityTime | None
    loaded_at: CityTime | None
    points: list[str]
    pickups: int
    picked_up_kg: float
    delivered_kg: float | None
    facility_code: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def open(self) -> bool:
        return self.ending == "open"


class PickupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    point_code: str
    rfid: str
    stream: WasteStream
    weight_kg: float
    at: CityTime


class WeighingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    facility_code: str
    weighbridge: str
    gross_kg: float
    tare_kg: float
    net_kg: float
    at: CityTime


class ChainViolationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: WasteViolation
    plate: str | None
    point_code: str | None
    facility_code: str | None
    trip_id: uuid.UUID | None
    stream: WasteStream | None
    district_code: str | None
    at: CityTime
    lon: float | None = Field(exclude=True)
    lat: float | None = Field(exclude=True)
    detail: str
    category_code: str
    created_at: datetime
    case_id: uuid.UUID | None = None
    case_status: str | None = Field(default=None, description="The status of the case raised for it.")
    resolved_at: CityTime | None = Field(default=None, description="When its case was closed.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def location(self) -> GeoPoint | None:
        return GeoPoint.of(self.lon, self.lat) if self.lon is not None and self.lat is not None else None


class MovementOut(BaseModel):
    """A vehicle's movement, as its platform reported it (``platform``) or as its positions show it
    (``positions``): ``place`` is the depot's or the facility's code, None for a stop."""

    model_config = ConfigDict(from_attributes=True)

    kind: Literal["departed_depot", "returned_to_depot", "arrived_at_facility", "stopped"]
    at: CityTime
    place_code: str = Field(exclude=True, validation_alias="place")
    ended_at: CityTime | None
    lon: float | None = Field(exclude=True)
    lat: float | None = Field(exclude=True)
    source: Literal["platform", "positions"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def place(self) -> str | None:
        return self.place_code or None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def location(self) -> GeoPoint | None:
        return GeoPoint.of(self.lon, self.lat) if self.lon is not None and self.lat is not None else None


class TripDetailOut(TripOut):
    pickup_records: list[PickupOut] = Field(default_factory=list)
    weighing: WeighingOut | None = None
    violations: list[ChainViolationOut] = Field(default_factory=list)


# -- figures ------------------------------------------------------------------------------------


class TonnageOut(BaseModel):
    """Tonnes weighed (net) under one key: a stream, a district (the vehicle's) or a city date."""

    key: str
    tonnes: float
    weighings: int


class RatesOut(BaseModel):
    since: AwareDatetime
    until: AwareDatetime
    total_t: float
    recyclable_t: float
    food_treated_t: float
    recycling_rate: float | None
    recycling_target: float
    meets_recycling_target: bool | None
    resource_utilisation_rate: float | None
    resource_utilisation_target: float
    meets_resource_utilisation_target: bool | None


class CoverageOut(BaseModel):
    day: date
    scheduled: int
    done: int
    rate: float | None
    # Only windows closed by now are counted on a day under way.
    complete: bool


class PointRateOut(BaseModel):
    point_code: str
    violations: int
    occasions: int
    rate: float | None


class FacilityIntakeOut(BaseModel):
    facility_code: str
    stream: WasteStream
    tonnes: float
    weighings: int


__all__ = [
    "ArrivedIn",
    "ChainViolationOut",
    "CoverageOut",
    "DepartedIn",
    "FacilityIntakeOut",
    "ItemResult",
    "MovementBatch",
    "MovementIn",
    "PickupBatch",
    "PickupIn",
    "PickupOut",
    "PointRateOut",
    "RatesOut",
    "RecordsResult",
    "ReturnedIn",
    "StoppedIn",
    "TonnageOut",
    "TripDetailOut",
    "TripOut",
    "WeighingBatch",
    "WeighingIn",
    "WeighingOut",
]
