"""What the position routes take and answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from citygrid.schemas import IntakeResult, RequestModel
from contract.common import GeoPoint
from contract.fleet import Load, PositionFields
from contract.muck import Plate


class PositionIn(PositionFields):
    """One position of a truck as a vendor's platform relays it from its terminal."""

    plate: Plate


class PositionBatchIn(RequestModel):
    positions: list[PositionIn] = Field(min_length=1, max_length=1000)
    # Positions a terminal kept while it had no network, sent late (as 0x0704 type 1).
    blind_area: bool = False


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


__all__ = ["IntakeResult", "LatestOut", "Load", "PositionBatchIn", "PositionIn", "TrackOut", "TrackPoint"]
