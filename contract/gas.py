"""Events the gas service publishes (stream ``GAS``, subjects ``gas.*``)."""

from __future__ import annotations

import uuid
from datetime import datetime
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


class PremisesType(StrEnum):
    MALL = "mall"
    RESTAURANT = "restaurant"
    HOUSEHOLD = "household"
    FACTORY = "factory"
    STREET = "street"
    OTHER = "other"


class LeakSource(StrEnum):
    PIPELINE = "pipeline"
    CYLINDER = "cylinder"
    UNKNOWN = "unknown"


class IncidentReported(ProblemDetected):
    """A gas leak was reported: the case service opens an urgent case (emergencies, natural hours).

    ``reference`` is the incident's id."""

    subject: ClassVar[str] = "gas.incident.reported"

    incident_id: uuid.UUID
    premises_type: PremisesType
    source: LeakSource


class IncidentAdvanced(EventData):
    """A step of the leak drill was done (notified, evacuated, cordoned, … measured safe, repaired)."""

    subject: ClassVar[str] = "gas.incident.advanced"

    incident_id: uuid.UUID
    step: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,24}$")]
    at: datetime
    actor: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class IncidentClosed(EventData):
    """The incident's response is over: the pipe or cylinder is repaired and the place is safe."""

    subject: ClassVar[str] = "gas.incident.closed"

    incident_id: uuid.UUID
    closed_at: datetime


ALL_GAS_EVENTS: tuple[type[EventData], ...] = (
    ViolationDetected,
    IncidentReported,
    IncidentAdvanced,
    IncidentClosed,
)
