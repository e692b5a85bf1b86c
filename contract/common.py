"""Value types every domain shares: GeoJSON points, district codes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StringConstraints

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
