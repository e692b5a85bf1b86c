"""Open311 GeoReport v2 as CityGrid reads it: a citizen's form into a report, a case into a request.

Pure rules, no I/O: what a submitted form may hold, which district a point falls in until the unit
grid resolves it, the list's 90-day window, the public status and notes of a case. What a case
says publicly never includes its reporter: name, phone and email stay in the case service's own
API, masked there without ``pii:read``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from citygrid.clock import CITY_TIMEZONE, within_range
from citygrid.errors import DomainError
from contract.case import CaseStatus
from contract.common import GUANGZHOU_DISTRICTS

SPECIFICATION_URL: Final = "http://wiki.open311.org/GeoReport_v2"
# When this interface last changed; discovery tells clients so they can notice.
CHANGESET: Final = "2026-11-26T00:00:00+08:00"
MAX_WINDOW: Final = timedelta(days=90)
MAX_REQUESTS: Final = 1000
MAX_ATTRIBUTES: Final = 50

# Roughly the city's extent (longitude 112.95–114.05 E, latitude 22.55–23.95 N).
CITY_BOUNDS: Final = (112.95, 22.55, 114.05, 23.95)
# One reference point per district, near where its people and streets are; the nearest names the
# district. A stop-gap until a case's point is resolved on the unit grid.
DISTRICT_POINTS: Final[dict[str, tuple[float, float]]] = {
    "440103": (113.244, 23.110),  # Liwan
    "440104": (113.267, 23.129),  # Yuexiu
    "440105": (113.317, 23.084),  # Haizhu
    "440106": (113.361, 23.125),  # Tianhe
    "440111": (113.273, 23.240),  # Baiyun
    "440112": (113.470, 23.180),  # Huangpu
    "440113": (113.384, 22.938),  # Panyu
    "440114": (113.220, 23.404),  # Huadu
    "440115": (113.525, 22.801),  # Nansha
    "440117": (113.587, 23.548),  # Conghua
    "440118": (113.811, 23.261),  # Zengcheng
}

CLOSED_STATUSES: Final = frozenset(
    {CaseStatus.CLOSED, CaseStatus.REJECTED, CaseStatus.MERGED, CaseStatus.CANCELLED}
)
PublicStatus = Literal["open", "closed"]

# Public wording per workflow status. Staff notes are not published: they are free text and may
# name people or plates.
STATUS_NOTES: Final[dict[CaseStatus, str]] = {
    CaseStatus.REPORTED: "Received; waiting to be registered as a case.",
    CaseStatus.REGISTERED: "Registered as a case; waiting to be dispatched to the responsible unit.",
    CaseStatus.DISPATCHED: "Dispatched to the responsible unit.",
    CaseStatus.ACCEPTED: "The responsible unit is handling it.",
    CaseStatus.SUSPENDED: "Handling is paused while another department acts.",
    CaseStatus.HANDLED: "Reported fixed; an inspector will verify it on site.",
    CaseStatus.CLOSED: "Fixed and verified on site.",
    CaseStatus.REJECTED: "Not taken on as a case.",
    CaseStatus.MERGED: "A duplicate of another report; it is handled under that case.",
    CaseStatus.CANCELLED: "Withdrawn.",
}
LIMIT_UNITS: Final = {"working_hours": "working hours", "working_days": "working days", "hours": "hours"}


class InvalidSubmission(DomainError):
    code = "open311.invalid_request"
    title = "Invalid service request"


class InvalidQuery(DomainError):
    code = "open311.invalid_query"
    title = "Invalid query"


class OutsideCity(DomainError):
    code = "open311.outside_city"
    title = "Outside the city"


def public_status(status: CaseStatus) -> PublicStatus:
    return "closed" if status in CLOSED_STATUSES else "open"


def statuses_of(public: Sequence[str]) -> frozenset[CaseStatus]:
    """The workflow statuses behind ``open`` and/or ``closed``."""
    chosen: set[CaseStatus] = set()
    for word in public:
        if word == "closed":
            chosen |= CLOSED_STATUSES
        elif word == "open":
            chosen |= set(CaseStatus) - CLOSED_STATUSES
        else:
            raise InvalidQuery(f"status is open or closed, not '{word}'")
    return frozenset(chosen)


def status_notes(status: CaseStatus, merged_into_number: str | None = None) -> str:
    if status is CaseStatus.MERGED and merged_into_number:
        return f"A duplicate of request {merged_into_number}; it is handled under that request."
    return STATUS_NOTES[status]


def service_notice(limits: Mapping[str, Any] | None) -> str | None:
    """The handling time limit of a category, in words, e.g. "Fixed within 2 working hours of dispatch"."""
    handle = (limits or {}).get("handle")
    if not isinstance(handle, Mapping):
        return None
    amount, unit = handle.get("amount"), LIMIT_UNITS.get(str(handle.get("unit")))
    if not isinstance(amount, int | float) or unit is None:
        return None
    return f"To be fixed within {amount:g} {unit} of dispatch."


def w3c(moment: datetime | None) -> str | None:
    """W3C date-time with the city's offset, whole seconds: 2026-11-26T09:30:00+08:00."""
    if moment is None:
        return None
    return moment.astimezone(CITY_TIMEZONE).replace(microsecond=0).isoformat()


def district_of(lon: float, lat: float) -> str:
    """The district whose reference point is nearest; refused outside the city's extent."""
    min_lon, min_lat, max_lon, max_lat = CITY_BOUNDS
    if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
        raise OutsideCity(f"the point ({lat}, {lon}) is outside Guangzhou")
    scale = math.cos(math.radians(lat))

    def distance(code: str) -> float:
        d_lon, d_lat = DISTRICT_POINTS[code]
        return math.hypot((lon - d_lon) * scale, lat - d_lat)

    return min(sorted(DISTRICT_POINTS), key=distance)


_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def is_identifier(value: str) -> bool:
    """The shape of every id Open311 hands out here: case numbers, service codes, tokens."""
    return bool(_IDENTIFIER.match(value))


def comma_list(value: str | None, *, name: str, limit: int = 100) -> list[str]:
    """``a,b,c`` as a list of identifiers; the spec's way of asking for several values."""
    if value is None:
        return []
    items = [item.strip() for item in value.split(",") if item.strip()]
    if len(items) > limit:
        raise InvalidQuery(f"{name} names at most {limit} values")
    if not all(is_identifier(item) for item in items):
        raise InvalidQuery(f"{name} holds letters, digits and - _ . : only")
    return items


def parse_w3c(value: str, *, name: str) -> datetime:
    """A W3C date-time; one without an offset is read in the city's time zone."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidQuery(f"{name} is not a W3C date-time such as 2026-11-01T00:00:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CITY_TIMEZONE)
    try:
        return within_range(moment)
    except ValueError as error:
        raise InvalidQuery(f"{name}: {error}") from None


def window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The requested-datetime range of a list: the last 90 days unless asked, never more than 90."""
    if start is None and end is None:
        return now - MAX_WINDOW, now
    if start is None:
        assert end is not None
        return end - MAX_WINDOW, end
    if end is None:
        return start, start + MAX_WINDOW
    if end < start:
        raise InvalidQuery("end_date is before start_date")
    if end - start > MAX_WINDOW:
        raise InvalidQuery("start_date and end_date may not span more than 90 days")
    return start, end


Text100 = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Name50 = Annotated[str, StringConstraints(min_length=1, max_length=50)]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE_PUNCTUATION = re.compile(r"[\s().]")
_PHONE = re.compile(r"^\+?[0-9\-]{5,20}$")


class Submission(BaseModel):
    """One POSTed service request, its form fields as the spec names them."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore", populate_by_name=True)

    service_code: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    lat: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    lon: float | None = Field(default=None, alias="long", ge=-180, le=180, allow_inf_nan=False)
    address_string: Annotated[str, StringConstraints(max_length=300)] | None = None
    description: Annotated[str, StringConstraints(max_length=4000)] | None = None
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    first_name: Name50 | None = None
    last_name: Name50 | None = None
    phone: str | None = None
    device_id: Text100 | None = None
    account_id: Text100 | None = None
    media_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any) -> Any:
        # Form clients send empty fields for what the person left out.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = [*value.keys(), *value.values()] if isinstance(value, dict) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("text may not contain the NUL character")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = _PHONE_PUNCTUATION.sub("", value)
        if not _PHONE.match(digits):
            raise ValueError("not a phone number")
        return digits

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+\S*$", value):
            raise ValueError("media_url must be an http(s) URL")
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
        if any(len(key) > 100 or len(item) > 1000 for key, item in value.items()):
            raise ValueError("attribute codes are at most 100 characters, values at most 1000")
        return value

    @property
    def reporter_name(self) -> str | None:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name[:100] or None

    def point(self) -> tuple[float, float]:
        if self.lat is None or self.lon is None:
            # Without a geocoder an address alone cannot be placed on the map.
            raise InvalidSubmission("send the location as lat and long (WGS84 degrees)")
        return self.lon, self.lat


def parse_submission(form: Sequence[tuple[str, str]]) -> Submission:
    """The form's fields (``attribute[CODE]`` gathered into ``attributes``), or the errors in it."""
    fields: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for key, value in form:
        if key.startswith("attribute[") and key.endswith("]"):
            attributes[key[len("attribute[") : -1]] = value
        elif key not in fields:
            fields[key] = value
    fields["attributes"] = attributes
    try:
        return Submission.model_validate(fields)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or 'request'}: {item['msg']}"
            for item in error.errors()
        ]
        raise InvalidSubmission("; ".join(problems), errors=problems) from None


def district_name(code: str) -> str:
    return GUANGZHOU_DISTRICTS.get(code, code)
