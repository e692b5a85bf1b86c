"""Value types every domain shares: GeoJSON points, district codes, evidence, a case's origin."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StringConstraints

from citygrid.events import EventData

# GB/T 2260 codes of Guangzhou's 11 districts.
GUANGZHOU_DISTRICTS: dict[str, str] = {
    "440103": "Liwan",
    "440104": "Yuexiu",
    "440105": "Haizhu",
    "440106": "Tianhe",
    "440111": "Baiyun",
    "440112": "Huangpu",
    "440113": "Panyu",
    "440114": "Huadu",
    "440115": "Nansha",
    "440117": "Conghua",
    "440118": "Zengcheng",
}

DistrictCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


def _known_district(code: str) -> str:
    if code not in GUANGZHOU_DISTRICTS:
        raise ValueError(f"unknown district code {code}")
    return code


# A district of the city (GB/T 2260), checked against the list above.
KnownDistrict = Annotated[DistrictCode, AfterValidator(_known_district)]
# Strict: GeoJSON coordinates are JSON numbers, never strings or booleans.
Longitude = Annotated[StrictFloat, Field(ge=-180, le=180, allow_inf_nan=False)]
Latitude = Annotated[StrictFloat, Field(ge=-90, le=90, allow_inf_nan=False)]


class GeoPoint(BaseModel):
    """A GeoJSON Point, ``[longitude, latitude]`` in WGS84/CGCS2000."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["Point"] = "Point"
    coordinates: tuple[Longitude, Latitude]

    @property
    def lon(self) -> float:
        return self.coordinates[0]

    @property
    def lat(self) -> float:
        return self.coordinates[1]

    @classmethod
    def of(cls, lon: float, lat: float) -> GeoPoint:
        return cls(coordinates=(lon, lat))


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class EvidenceRef(BaseModel):
    """Evidence kept by the producing service, named by its content hash: a photo or snapshot from its
    blob store, or a document it serves (a truck's track as GeoJSON).

    ``url`` is the gateway path a client fetches it from (``/api/<service>/v1/...``); the bytes never
    travel in events.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Sha256
    # A photo or snapshot; or a GeoJSON document, such as the track a muck truck took while it broke
    # a rule (a consumer that only shows images can tell it by its type and link to it).
    content_type: Literal["image/jpeg", "image/png", "application/geo+json"]
    size_bytes: int = Field(ge=1)
    url: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    taken_at: datetime | None = None


class Origin(BaseModel):
    """Where a case came from when another service raised it: that service and its record's id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Literal["vision", "gas", "muck", "waste"]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]


CategoryCode = Annotated[str, StringConstraints(pattern=r"^[12][0-9]{4}$")]

# The fields every register has: a record's code, its name, a person's phone, a camera's GB/T 28181
# id, and a terminal's SIM number as its JT/T 808 header carries it (12 BCD digits in 2013, 20 in 2019).
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{1,31}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9\- ]{4,30}$")]
CameraId = Annotated[str, StringConstraints(pattern=r"^\d{20}$")]
TerminalPhone = Annotated[str, StringConstraints(pattern=r"^(\d{12}|\d{20})$")]


class ProblemDetected(EventData):
    """A problem another service found that the case service turns into a registered case.

    The producer names the case category (small class) it maps to; the case service keeps
    ``reference`` as the case's origin, so a redelivered event never opens a second case, and
    tells the producer through ``case.case.closed`` (whose ``origin`` echoes it) when it is resolved.
    """

    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    category_code: CategoryCode
    district_code: DistrictCode | None = None
    location: GeoPoint
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    description: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    detected_at: datetime
    evidence: list[EvidenceRef] = Field(default_factory=list, max_length=20)
