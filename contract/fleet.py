"""What a fleet's position intake takes over HTTP, the same in every service that keeps a fleet's
positions (the muck trucks, the sanitation vehicles): a service adds its ``plate``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from citygrid.schemas import RequestModel
from contract.common import GeoPoint

Load = Literal["empty", "half", "full"]


class PositionFields(RequestModel):
    """One position as a vendor's platform relays it from a terminal."""

    at: AwareDatetime
    location: GeoPoint
    speed_kmh: Annotated[float, Field(ge=0, le=250)] = 0.0
    direction: Annotated[int, Field(ge=0, le=359)] = 0
    altitude_m: Annotated[int, Field(ge=-500, le=9000)] | None = None
    load: Load | None = None
    mileage_km: Annotated[float, Field(ge=0, le=10_000_000)] | None = None
    alarm: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0
    status: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0
