"""Events the gas service publishes (stream ``GAS``, subjects ``gas.*``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from citygrid.events import EventData
from contract.common import ProblemDetected

CylinderCode = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z\-]{6,40}$")]


class RefusalReason(StrEnum):
    """Why a filling station must refuse a cylinder (DOMAIN.md, gas cylinders)."""

    INSPECTION_OVERDUE = "inspection_overdue"
    PAST_SERVICE_LIFE = "past_service_life"
    SCRAPPED = "scrapped"
    UNREGISTERED = "unregistered"
    CODE_VOID = "code_void"
    NOT_OWNED_BY_FILLER = "not_owned_by_filler"
    MODIFIED = "modified"
    WRONG_MARKING = "wrong_marking"
    DAMAGED = "damaged"
    NO_RESIDUAL_PRESSURE = "no_residual_pressure"
    UNKNOWN_TARE = "unknown_tare"
    # Added with the fill check (new values only: a consumer reads the reasons as strings).
    STATION_LOCKED = "station_locked"
    LICENCE_EXPIRED = "licence_expired"
    REPORTED_LOST = "reported_lost"
    ALREADY_FILLED = "already_filled"
    IN_INSPECTION = "in_inspection"


class ViolationDetected(ProblemDetected):
    """A cylinder was refused at a filling station; enforcement follows up through a case."""

    subject: ClassVar[str] = "gas.violation.detected"

    cylinder_code: CylinderCode
    station_code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    reasons: list[RefusalReason] = Field(min_length=1)


ALL_GAS_EVENTS: tuple[type[EventData], ...] = (ViolationDetected,)
