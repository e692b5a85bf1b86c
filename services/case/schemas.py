"""The case service's HTTP contract: request and response models."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from citygrid.clock import CityTime
from citygrid.masking import mask_address, mask_email, mask_name, mask_phone, mask_text
from citygrid.schemas import RequestModel
from contract.case import CaseSource, CaseStatus
from contract.common import GeoPoint, KnownDistrict, Origin

CategoryCode = Annotated[str, StringConstraints(pattern=r"^[12][0-9]{4}$")]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
UnitCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# As stored: at most 20 characters, a leading + included.
Phone = Annotated[str, StringConstraints(max_length=20, pattern=r"^\+?[0-9\-]{5,20}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s.]+$", max_length=254)]


def _reported_by_people(source: CaseSource) -> CaseSource:
    if source is CaseSource.SYSTEM:
        raise ValueError("'system' cases are raised by the platform's own services, not reported")
    return source


ReportSource = Annotated[CaseSource, AfterValidator(_reported_by_people)]


class Reporter(RequestModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    phone: Phone | None = None
    email: Email | None = None


class ReportCase(RequestModel):
    category_code: CategoryCode = Field(
        description="Small-class code from GET /v1/categories, e.g. 20106 (overflowing bin)."
    )
    description: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    location: GeoPoint
    district_code: KnownDistrict
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    source: ReportSource
    reporter: Reporter | None = None


class Decision(RequestModel):
    note: Note | None = None


class Reasoned(RequestModel):
    note: Note = Field(description="The reason, kept in the case's history.")


class Merge(RequestModel):
    into: uuid.UUID = Field(description="The open case this report duplicates.")
    note: Note | None = None


class Dispatch(RequestModel):
    unit: UnitCode = Field(description="The responsible unit's code.")
    note: Note | None = None


class Verification(RequestModel):
    passed: StrictBool
    note: Note | None = Field(default=None, description="Required when the verification failed.")


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    action: str
    from_status: CaseStatus | None
    to_status: CaseStatus
    actor: str
    actor_name: str
    unit: str | None
    note: str | None
    at: CityTime


class ReporterOut(BaseModel):
    name: str | None
    phone: str | None
    email: str | None = None


class CaseOut(BaseModel):
    id: uuid.UUID
    number: str
    status: CaseStatus
    category_code: str
    description: str
    location: GeoPoint
    district_code: str
    address: str | None
    source: CaseSource
    origin: Origin | None = Field(
        default=None, description="The service and record that raised the case (vision, gas, muck, waste)."
    )
    reporter: ReporterOut | None
    unit: str | None
    merged_into: uuid.UUID | None
    merged_into_number: str | None = Field(
        default=None,
        description="The number of the case this report was merged into: what its reporter follows.",
    )
    grid_code: str | None = Field(
        default=None, description="The unit grid cell (15 digits) the point lies in."
    )
    community_code: str | None = Field(default=None, description="The community (12-digit grid code prefix).")
    street_code: str | None = Field(default=None, description="The street (9-digit grid code prefix).")
    likely_duplicate_of: uuid.UUID | None = Field(
        default=None, description="An open case of the same small class nearby, found when this was reported."
    )
    stage: str | None = Field(
        description="The stage whose clock is running: register, dispatch, handle, verify."
    )
    deadline_at: CityTime | None = Field(
        description="When the current stage falls due (none while suspended)."
    )
    overdue_at: CityTime | None = Field(description="When the current stage was found overdue and escalated.")
    version: int
    created_at: CityTime
    updated_at: CityTime


class EvidenceOut(BaseModel):
    """A photo of the case. ``url`` is where it is fetched: for a photo uploaded here, relative to the
    case service's API root; for a detection or re-check snapshot, the raising service's gateway path."""

    id: uuid.UUID
    case_id: uuid.UUID
    kind: str = Field(
        description="before, check_in, after, verification (uploaded here); "
        "detection (raised the case) or recheck (taken by the AI re-check), held by ``service``."
    )
    service: str | None = Field(description="The service holding the image; none when it was uploaded here.")
    sha256: str
    content_type: str
    size_bytes: int
    uploaded_by: str
    uploaded_by_name: str
    uploaded_at: CityTime
    taken_at: CityTime | None = None
    url: str


class CaseDetailOut(CaseOut):
    history: list[HistoryOut]
    evidence: list[EvidenceOut] = Field(default_factory=list)


def reporter_out(
    name: str | None, phone: str | None, *, reveal: bool, email: str | None = None
) -> ReporterOut | None:
    if name is None and phone is None and email is None:
        return None
    if reveal:
        return ReporterOut(name=name, phone=phone, email=email)
    return ReporterOut(name=mask_name(name), phone=mask_phone(phone), email=mask_email(email))


# Without ``pii:read`` (docs/personal-data.md): an address shows its names, not its numbers; free
# text (a description, a note) shows everything but the phones, ID numbers, e-mails and labelled
# names in it.


def address_out(address: str | None, *, reveal: bool) -> str | None:
    return address if reveal else mask_address(address)


def free_text_out(text: str | None, *, reveal: bool) -> str | None:
    return text if reveal else mask_text(text)


def history_out(entry: object, *, reveal: bool) -> HistoryOut:
    """A history row (``CaseHistory``) as the caller may see it: its note is free text."""
    out = HistoryOut.model_validate(entry)
    return out if reveal else out.model_copy(update={"note": mask_text(out.note)})
