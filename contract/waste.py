"""Events the waste service publishes (stream ``WASTE``, subjects ``waste.*``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from citygrid.events import EventData
from contract.common import ProblemDetected


class WasteStream(StrEnum):
    """The four sorted streams; sorted waste is never mixed again in collection or transport."""

    FOOD = "food"
    RECYCLABLE = "recyclable"
    HAZARDOUS = "hazardous"
    OTHER = "other"


class WasteViolation(StrEnum):
    BAGS_OUTSIDE_BIN = "bags_outside_bin"
    OVERFLOW = "overflow"
    SMOKE_OR_FIRE = "smoke_or_fire"
    MIXED_DEPOSIT = "mixed_deposit"
    UNBROKEN_FOOD_BAG = "unbroken_food_bag"
    OUTSIDE_OPENING_HOURS = "outside_opening_hours"
    MIXED_LOAD = "mixed_load"
    MISSED_COLLECTION = "missed_collection"
    # Added with the collection chain's checks (trips from pickups to the weighbridge).
    WEIGHT_MISMATCH = "weight_mismatch"
    TRIP_NOT_UNLOADED = "trip_not_unloaded"
    UNLOADED_AT_UNREGISTERED_PLACE = "unloaded_at_unregistered_place"


class ViolationDetected(ProblemDetected):
    """A drop-off point or a collection trip broke a sorting rule; ``reference`` is the violation id.

    ``severity`` is ``urgent`` for a safety hazard (smoke or fire at a bin): its category is one the
    case service handles against the natural clock, nights included.
    """

    subject: ClassVar[str] = "waste.violation.detected"

    kind: WasteViolation
    point_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    vehicle_plate: Annotated[str, StringConstraints(max_length=12)] | None = None
    # Added with bin-side supervision; optional, so the first schema's events still read.
    severity: Literal["normal", "urgent"] | None = None
    stream: WasteStream | None = None
    episode_started_at: datetime | None = None
    # Added with the collection chain: the facility and the trip a chain violation is about.
    facility_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    trip_id: Annotated[str, StringConstraints(max_length=64)] | None = None


ALL_WASTE_EVENTS: tuple[type[EventData], ...] = (ViolationDetected,)
