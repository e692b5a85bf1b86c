"""Events the muck service publishes (stream ``MUCK``, subjects ``muck.*``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from citygrid.events import EventData
from contract.common import DistrictCode, ProblemDetected

Plate = Annotated[str, StringConstraints(min_length=5, max_length=12)]
SiteCode = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ManifestNumber = Annotated[str, StringConstraints(max_length=64)]


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
    # Added with the transport rules (new values only: a consumer reads the kind as a string).
    UNLOADED_OUTSIDE_SITE = "unloaded_outside_site"
    LEFT_WITHOUT_MANIFEST = "left_without_manifest"
    MUDDY_WHEELS = "muddy_wheels"


class ViolationDetected(ProblemDetected):
    """A muck truck broke a transport rule; ``reference`` is the violation id.

    A rule that lasts (off route, stopped loaded) is one violation per episode, from
    ``episode_started_at``; off route is reported again, ``severe``, once the episode passes the
    longer threshold. The evidence holds the track of the episode as GeoJSON and any gate snapshot.
    """

    subject: ClassVar[str] = "muck.violation.detected"

    plate: Plate
    kind: TransportViolation
    manifest_number: ManifestNumber | None = None
    # Added with the transport rules; optional, so the first schema's events still read.
    severity: Literal["normal", "severe"] = "normal"
    episode_started_at: datetime | None = None
    company_code: Annotated[str, StringConstraints(max_length=32)] | None = None


class ManifestStatus(StrEnum):
    ISSUED = "issued"
    LOADED = "loaded"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    CLOSED = "closed"
    ABNORMAL = "abnormal"
    CANCELLED = "cancelled"


class ManifestEvent(EventData):
    """Something happened to an electronic manifest (电子联单); every manifest event carries these."""

    manifest_id: uuid.UUID
    number: ManifestNumber
    plate: Plate
    company_code: Annotated[str, StringConstraints(max_length=32)]
    origin_site: SiteCode
    disposal_site: SiteCode
    district_code: DistrictCode
    status: ManifestStatus
    at: datetime


class ManifestIssued(ManifestEvent):
    subject: ClassVar[str] = "muck.manifest.issued"

    waste_type: Annotated[str, StringConstraints(max_length=32)]
    declared_quantity_m3: float = Field(gt=0)
    window_start: datetime
    window_end: datetime


class ManifestLoaded(ManifestEvent):
    """The truck left its origin site with the load (seen by the site's geofence or a gate scan)."""

    subject: ClassVar[str] = "muck.manifest.loaded"


class ManifestDelivered(ManifestEvent):
    """The truck entered its designated disposal site."""

    subject: ClassVar[str] = "muck.manifest.delivered"


class ManifestClosed(ManifestEvent):
    """The receiver confirmed the load, or a regulator resolved an abnormal manifest."""

    subject: ClassVar[str] = "muck.manifest.closed"

    received_quantity_m3: float | None = None
    resolution_note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class ManifestAbnormal(ManifestEvent):
    """The load went wrong: overdue, delivered elsewhere, or a received quantity that differs."""

    subject: ClassVar[str] = "muck.manifest.abnormal"

    reason: Literal["overdue", "delivered_elsewhere", "quantity_mismatch"]


class ManifestCancelled(ManifestEvent):
    subject: ClassVar[str] = "muck.manifest.cancelled"


ALL_MUCK_EVENTS: tuple[type[EventData], ...] = (
    ViolationDetected,
    ManifestIssued,
    ManifestLoaded,
    ManifestDelivered,
    ManifestClosed,
    ManifestAbnormal,
    ManifestCancelled,
)
