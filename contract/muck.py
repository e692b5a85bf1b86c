"""Events the muck service publishes (stream ``MUCK``, subjects ``muck.*``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import StringConstraints

from citygrid.events import EventData
from contract.common import ProblemDetected

Plate = Annotated[str, StringConstraints(min_length=5, max_length=12)]


class TransportViolation(StrEnum):
    UNCOVERED = "uncovered"
    HEAPED_LOAD = "heaped_load"
    SPILLAGE = "spillage"
    ILLEGAL_DUMPING = "illegal_dumping"
    OFF_ROUTE = "off_route"
    OUTSIDE_HOURS = "outside_hours"
    OVERLOAD = "overload"
    OVERSPEED = "overspeed"
    UNREGISTERED_TRUCK = "unregistered_truck"
    TERMINAL_OFFLINE = "terminal_offline"


class ViolationDetected(ProblemDetected):
    """A muck truck broke a transport rule; ``reference`` is the violation id."""

    subject: ClassVar[str] = "muck.violation.detected"

    plate: Plate
    kind: TransportViolation
    manifest_number: Annotated[str, StringConstraints(max_length=64)] | None = None


ALL_MUCK_EVENTS: tuple[type[EventData], ...] = (ViolationDetected,)
