"""Events the waste service publishes (stream ``WASTE``, subjects ``waste.*``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import StringConstraints

from citygrid.events import EventData
from contract.common import ProblemDetected


class WasteViolation(StrEnum):
    BAGS_OUTSIDE_BIN = "bags_outside_bin"
    OVERFLOW = "overflow"
    SMOKE_OR_FIRE = "smoke_or_fire"
    MIXED_DEPOSIT = "mixed_deposit"
    UNBROKEN_FOOD_BAG = "unbroken_food_bag"
    OUTSIDE_OPENING_HOURS = "outside_opening_hours"
    MIXED_LOAD = "mixed_load"
    MISSED_COLLECTION = "missed_collection"


class ViolationDetected(ProblemDetected):
    """A drop-off point or a collection trip broke a sorting rule; ``reference`` is the violation id."""

    subject: ClassVar[str] = "waste.violation.detected"

    kind: WasteViolation
    point_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    vehicle_plate: Annotated[str, StringConstraints(max_length=12)] | None = None


ALL_WASTE_EVENTS: tuple[type[EventData], ...] = (ViolationDetected,)
