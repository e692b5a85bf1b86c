"""Events the case service publishes (stream ``CASE``, subjects ``case.case.*``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from citygrid.events import EventData
from contract.common import GeoPoint, Origin


class CaseStatus(StrEnum):
    REPORTED = "reported"
    REGISTERED = "registered"
    REJECTED = "rejected"
    MERGED = "merged"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    SUSPENDED = "suspended"
    HANDLED = "handled"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class CaseSource(StrEnum):
    INSPECTOR = "inspector"
    VIDEO = "video"
    PUBLIC = "public"
    HOTLINE = "hotline"
    MEDIA = "media"
    SUPERIOR = "superior"
    # Raised by another CityGrid service's own checks (gas scans, muck GPS, waste bin-side AI);
    # the case's ``origin`` names the service and its record.
    SYSTEM = "system"


class CaseEvent(EventData):
    """A case as it stands right after the change the event names."""

    case_id: uuid.UUID
    number: str
    status: CaseStatus
    category_code: str
    district_code: str
    location: GeoPoint
    source: CaseSource
    unit: str | None = None
    version: int
    actor: str
    note: str | None = None
    occurred_at: datetime
    origin: Origin | None = Field(
        default=None, description="Set when another service raised the case (vision, gas, muck, waste)."
    )


class CaseReported(CaseEvent):
    subject: ClassVar[str] = "case.case.reported"


class CaseRegistered(CaseEvent):
    subject: ClassVar[str] = "case.case.registered"


class CaseRejected(CaseEvent):
    subject: ClassVar[str] = "case.case.rejected"


class CaseDispatched(CaseEvent):
    subject: ClassVar[str] = "case.case.dispatched"


class CaseHandled(CaseEvent):
    subject: ClassVar[str] = "case.case.handled"


class CaseClosed(CaseEvent):
    subject: ClassVar[str] = "case.case.closed"


class CaseReworked(CaseEvent):
    subject: ClassVar[str] = "case.case.reworked"


class CaseMerged(CaseEvent):
    """A report merged into the open case it duplicates; tell its reporter the original's number."""

    subject: ClassVar[str] = "case.case.merged"
    merged_into: uuid.UUID | None = Field(default=None, description="The original case.")
    merged_into_number: str | None = Field(default=None, description="The original case's number.")


class CaseAccepted(CaseEvent):
    subject: ClassVar[str] = "case.case.accepted"


class CaseReturned(CaseEvent):
    subject: ClassVar[str] = "case.case.returned"


class CaseSuspended(CaseEvent):
    subject: ClassVar[str] = "case.case.suspended"


class CaseResumed(CaseEvent):
    subject: ClassVar[str] = "case.case.resumed"


class CaseCancelled(CaseEvent):
    subject: ClassVar[str] = "case.case.cancelled"


class CaseOverdue(CaseEvent):
    """A stage's deadline passed; the case is escalated to the supervisor."""

    subject: ClassVar[str] = "case.case.overdue"
    stage: str
    deadline_at: datetime
    escalated_to: str = "supervisor"


class CaseExtensionRequested(CaseEvent):
    """The unit asks for more time to handle the case; the dispatcher decides."""

    subject: ClassVar[str] = "case.case.extension_requested"
    extension_id: uuid.UUID
    requested_deadline: datetime
    current_deadline: datetime | None = None


class CaseExtensionApproved(CaseEvent):
    """The handling deadline moved to ``deadline_at``."""

    subject: ClassVar[str] = "case.case.extension_approved"
    extension_id: uuid.UUID
    previous_deadline: datetime | None = None
    deadline_at: datetime


class CaseExtensionDenied(CaseEvent):
    """The deadline stays; ``note`` gives the dispatcher's reason."""

    subject: ClassVar[str] = "case.case.extension_denied"
    extension_id: uuid.UUID
    requested_deadline: datetime


ALL_CASE_EVENTS: tuple[type[CaseEvent], ...] = (
    CaseReported,
    CaseRegistered,
    CaseRejected,
    CaseDispatched,
    CaseHandled,
    CaseClosed,
    CaseReworked,
    CaseMerged,
    CaseAccepted,
    CaseReturned,
    CaseSuspended,
    CaseResumed,
    CaseCancelled,
    CaseOverdue,
    CaseExtensionRequested,
    CaseExtensionApproved,
    CaseExtensionDenied,
)

# The events after which a case is done with, for whoever raised it: closed, cancelled, rejected, or
# merged into the case it duplicates (which carries the problem on).
ENDING_EVENT_TYPES: frozenset[str] = frozenset(
    event.event_type() for event in (CaseClosed, CaseCancelled, CaseRejected, CaseMerged)
)
