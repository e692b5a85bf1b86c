"""Sites and route corridors as geometry in metres, indexed so a batch of positions is placed in one call.

Positions arrive as WGS84 lon/lat; widths and tolerances are in metres, so everything is projected to
UTM zone 49N (EPSG:32649), whose central meridian 111°E is two degrees from Guangzhou: its scale
error there is well under a thousandth, a few centimetres over a 100 m site. A site's boundary counts
as inside (to a centimetre, so a point on the edge stays on it after a round trip through degrees);
Traccar derives a geofence's enter and exit the same way, from the set difference of two positions'
containing sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal, overload

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Transformer

__all__ = [
    "EDGE_TOLERANCE_M",
    "Corridor",
    "CorridorIndex",
    "PolygonIndex",
    "Projection",
    "Site",
    "SiteIndex",
    "SiteKind",
    "entered_and_exited",
    "projection",
]

SiteKind = Literal["construction", "disposal"]
Floats = npt.NDArray[np.float64]
Point = tuple[float, float]  # (lon, lat), WGS84, GeoJSON order

# How far outside its polygon a point still counts as on the boundary: far below GPS accuracy, far
# above the nanometres a projection round trip moves a point.
EDGE_TOLERANCE_M: Final = 0.01

_NOTHING: Final[frozenset[str]] = frozenset()


class Projection:
    """WGS84 lon/lat to UTM zone 49N metres (x east, y north), and back."""

    def __init__(self) -> None:
        self._forward = Transformer.from_crs("EPSG:4326", "EPSG:32649", always_xy=True)
        self._inverse = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)

    @overload
    def to_metres(self, lon: float, lat: float) -> tuple[float, float]: ...
    @overload
    def to_metres(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[Floats, Floats]: ...
    def to_metres(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike
    ) -> tuple[float, float] | tuple[Floats, Floats]:
        """Metres of one point (floats in, floats out) or of arrays of points (vectorised)."""
        if isinstance(lon, int | float) and isinstance(lat, int | float):
            x, y = self._forward.transform(float(lon), float(lat))
            return float(x), float(y)
        xs, ys = self._forward.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    @overload
    def to_degrees(self, x: float, y: float) -> tuple[float, float]: ...
    @overload
    def to_degrees(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[Floats, Floats]: ...
    def to_degrees(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float] | tuple[Floats, Floats]:
        """Lon/lat of metres: the inverse of ``to_metres``."""
        if isinstance(x, int | float) and isinstance(y, int | float):
            lon, lat = self._inverse.transform(float(x), float(y))
            return float(lon), float(lat)
        lons, lats = self._inverse.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)


@cache
def projection() -> Projection:
    """The one projection, built on first use rather than at import (PROJ reads its database)."""
    return Projection()


def _projected(points: Sequence[Point], what: str) -> Floats:
    """The points as an (n, 2) array of metres, or a ValueError naming ``what``."""
    try:
        degrees = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    except ValueError as error:
        raise ValueError(f"{what}: points must be [lon, lat] pairs") from error
    if not np.isfinite(degrees).all():
        raise ValueError(f"{what}: a coordinate is not a finite number")
    if (np.abs(degrees[:, 0]) > 180).any() or (np.abs(degrees[:, 1]) > 90).any():
        raise ValueError(f"{what}: a point is outside lon [-180, 180] / lat [-90, 90]")
    xs, ys = projection().to_metres(degrees[:, 0], degrees[:, 1])
    return np.column_stack([xs, ys])


def _distinct(points: Floats) -> int:
    return len({(x, y) for x, y in points.tolist()})


@dataclass(frozen=True)
class Site:
    """A construction or disposal site; ``ring`` is its boundary as lon/lat, closed or not."""

    id: str
    kind: SiteKind
    ring: Sequence[Point]


class PolygonIndex:
    """Named polygons (lon/lat rings) in an STRtree: which of them contain a position, for one or a batch."""

    def __init__(self, rings: Iterable[tuple[str, Sequence[Point]]], what: str = "polygon") -> None:
        ids: list[str] = []
        polygons: list[shapely.Polygon] = []
        for polygon_id, ring in rings:
            if polygon_id in ids:
                raise ValueError(f"{what} {polygon_id} is given twice")
            polygons.append(_polygon(f"{what} {polygon_id}", ring))
            ids.append(polygon_id)
        self._ids: Final = np.array(ids, dtype=object)
        self._tree: Final = shapely.STRtree(polygons)

    def __len__(self) -> int:
        return len(self._ids)

    def centre(self, polygon_id: str) -> Point:
        """A point inside the polygon (lon, lat), to place what happened there; KeyError if unknown."""
        at = np.flatnonzero(self._ids == polygon_id)
        if not len(at):
            raise KeyError(f"no polygon {polygon_id}")
        inside = shapely.point_on_surface(self._tree.geometries[int(at[0])])
        return projection().to_degrees(float(inside.x), float(inside.y))

    def containing(self, lon: float, lat: float) -> frozenset[str]:
        """The ids of the polygons that contain the point, its boundary included."""
        return self.containing_many([lon], [lat])[0]

    def containing_many(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> list[frozenset[str]]:
        """For each position, the ids of the polygons containing it: one index query for the whole batch."""
        xs, ys = projection().to_metres(lons, lats)
        found: list[frozenset[str]] = [_NOTHING] * len(xs)
        if not len(xs) or not len(self._ids):
            return found
        # A position without a fix is in no polygon (GEOS refuses a distance to a non-finite point).
        finite = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
        # dwithin rather than intersects: see EDGE_TOLERANCE_M.
        point_at, polygon_at = self._tree.query(
            shapely.points(xs[finite], ys[finite]), predicate="dwithin", distance=EDGE_TOLERANCE_M
        )
        if not len(point_at):
            return found
        point_at = finite[point_at]
        order = np.argsort(point_at, kind="stable")
        point_at, polygon_at = point_at[order], polygon_at[order]
        starts = np.flatnonzero(np.r_[True, point_at[1:] != point_at[:-1]])
        for point, ids in zip(point_at[starts], np.split(self._ids[polygon_at], starts[1:]), strict=True):
            found[int(point)] = frozenset(ids)
        return found


class SiteIndex(PolygonIndex):
    """The sites' polygons, with each site's kind."""

    def __init__(self, sites: Iterable[Site]) -> None:
        sites = list(sites)
        kinds: dict[str, SiteKind] = {}
        for site in sites:
            if site.id not in kinds and site.kind not in ("construction", "disposal"):
                raise ValueError(f"site {site.id}: kind must be construction or disposal, not {site.kind!r}")
            kinds.setdefault(site.id, site.kind)
        super().__init__(((site.id, site.ring) for site in sites), "site")
        self.kinds: Final[Mapping[str, SiteKind]] = kinds
        self.disposal_sites: Final = frozenset(i for i, kind in kinds.items() if kind == "disposal")


def _polygon(what: str, ring: Sequence[Point]) -> shapely.Polygon:
    points = _projected(ring, what)
    if len(points) and (points[0] == points[-1]).all():
        points = points[:-1]
    if _distinct(points) < 3:
        raise ValueError(f"{what}: a boundary needs at least three distinct points")
    polygon = shapely.Polygon(points)
    if not shapely.is_valid(polygon):
        raise ValueError(f"{what}: the boundary is not a simple polygon ({shapely.is_valid_reason(polygon)})")
    if polygon.area <= 0:
        raise ValueError(f"{what}: the boundary encloses no area")
    return polygon


@dataclass(frozen=True)
class Corridor:
    """An approved route: its centre line as lon/lat and the corridor's full width in metres."""

    id: str
    line: Sequence[Point]
    width_m: float


class CorridorIndex:
    """How far positions are from their corridors, in metres, 0 inside.

    A corridor is its centre line buffered by half its width with round caps and joins, so a point's
    distance to it is exactly its distance to the line less the half width: computed that way, it
    has none of the error of a buffer polygon's chords.
    """

    def __init__(self, corridors: Iterable[Corridor]) -> None:
        lines: list[shapely.LineString] = []
        half_widths: list[float] = []
        self._index: Final[dict[str, int]] = {}
        for corridor in corridors:
            what = f"corridor {corridor.id}"
            if corridor.id in self._index:
                raise ValueError(f"{what} is given twice")
            if not (corridor.width_m > 0 and math.isfinite(corridor.width_m)):
                raise ValueError(
                    f"{what}: the width must be a positive number of metres, not {corridor.width_m}"
                )
            points = _projected(corridor.line, what)
            if _distinct(points) < 2:
                raise ValueError(f"{what}: a route needs at least two distinct points")
            self._index[corridor.id] = len(lines)
            lines.append(shapely.LineString(points))
            half_widths.append(corridor.width_m / 2)
        self._lines: Final = np.array(lines, dtype=object)
        self._half_widths: Final = np.array(half_widths, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, corridor_id: object) -> bool:
        return corridor_id in self._index

    def polygon(self, corridor_id: str) -> shapely.Polygon:
        """The corridor as a (projected, metres) polygon, e.g. to draw it."""
        at = self._at(corridor_id)
        line: shapely.LineString = self._lines[at]
        return line.buffer(float(self._half_widths[at]))

    def distance_m(self, corridor_id: str, lon: float, lat: float) -> float:
        """Metres from the point to the corridor, 0 inside; KeyError for an unknown corridor."""
        return float(self.distances_m([corridor_id], [lon], [lat])[0])

    def distances_m(self, corridor_ids: Sequence[str], lons: npt.ArrayLike, lats: npt.ArrayLike) -> Floats:
        """Each position's metres to its own corridor (``corridor_ids[i]`` for position i), vectorised;
        NaN for a position that is not a finite point."""
        at = np.fromiter((self._at(i) for i in corridor_ids), dtype=np.intp, count=len(corridor_ids))
        xs, ys = projection().to_metres(lons, lats)
        if len(xs) != len(at):
            raise ValueError(f"{len(at)} corridor ids for {len(xs)} positions")
        if not len(at):
            return np.zeros(0, dtype=np.float64)
        distances = np.full(len(at), np.nan)
        finite = np.isfinite(xs) & np.isfinite(ys)
        lines, points = self._lines[at[finite]], shapely.points(xs[finite], ys[finite])
        to_line = np.asarray(shapely.distance(lines, points), dtype=np.float64)
        distances[finite] = np.maximum(to_line - self._half_widths[at[finite]], 0.0)
        return distances

    def _at(self, corridor_id: str) -> int:
        try:
            return self._index[corridor_id]
        except KeyError:
            raise KeyError(f"no corridor {corridor_id}") from None


def entered_and_exited(
    before: frozenset[str], after: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """The sites entered and the sites exited between two positions' containing sets."""
    return after - before, before - after
