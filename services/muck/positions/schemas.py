"""What the position routes take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

from citygrid.schemas import Refusal, RequestModel
from contract.common import GeoPoint
from contract.muck import Plate

Load = Literal["empty", "half", "full"]


class PositionIn(RequestModel):
    """One position as a vendor's platform relays it from a terminal."""

    plate: Plate
    at: AwareDatetime
    location: GeoPoint
    speed_kmh: Annotated[float, Field(ge=0, le=250)] = 0.0
    direction: Annotated[int, Field(ge=0, le=359)] = 0
    altitude_m: Annotated[int, Field(ge=-500, le=9000)] | None = None
    load: Load | None = None
    mileage_km: Annotated[float, Field(ge=0, le=10_000_000)] | None = None
    alarm: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0
    status: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0


class PositionBatchIn(RequestModel):
    positions: list[PositionIn] = Field(min_length=1, max_length=1000)
    # Positions a terminal kept while it had no network, sent late (as 0x0704 type 1).
    blind_area: bool = False


class IntakeResult(BaseModel):
    received: int
    stored: int
    refused: list[Refusal]


class LatestOut(BaseModel):
    plate: str
    at: datetime
    location: GeoPoint
    speed_kmh: float
    direction: int
    load: Load | None
    received_at: datetime


class TrackPoint(BaseModel):
    at: datetime
    location: GeoPoint
    speed_kmh: float
    direction: int
    load: Load | None


class TrackOut(BaseModel):
    plate: str
    since: datetime
    until: datetime
    # Points dropped by the display simplification (Douglas–Peucker, ``simplify_m`` metres).
    simplified_from: int | None
    points: list[TrackPoint]
    truncated: bool
