"""The unit grid (单元网格): cells of about 10,000 m² that every case is located on.

A case's point must resolve to exactly one grid cell, and through the cell's code to its community,
street and district: the place decides the responsible unit and the time limit (GB/T 30428.1).
Intake runs in bulk (video alarms, hotline batches), so resolution is an in-memory lookup, not a
database query: a uniform bucket grid over the cells' bounding boxes, then an exact
point-in-polygon test on the few candidates.

Pure standard library on purpose: the domain layer does no I/O and carries no geometry stack.

Conventions, chosen once for the whole module:

* Coordinates are WGS84 / CGCS2000 ``(longitude, latitude)`` in degrees, GeoJSON order.
* A cell is a *closed* set. A point on an edge shared by two cells belongs to both; ``locate``
  answers with the one whose code sorts first, so the answer never depends on input order.
  "On an edge" means within ``BOUNDARY_TOLERANCE_DEG`` (about 0.1 mm) of it, which makes shared
  edges watertight despite floating-point rounding.
* A cell owns one or more polygons (``GridCell.polygons``). A GeoJSON MultiPolygon stays one cell
  with several parts: a code is the identity of one cell, never split over several records.
* Rings are stored normalised: open (the closing point is not repeated), starting at the lowest
  vertex, outer rings counter-clockwise, holes clockwise (the RFC 7946 right-hand rule), so the
  polygon's interior is always on the left of every edge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from statistics import median
from typing import Any, Final, cast

Point = tuple[float, float]
Ring = tuple[Point, ...]
BBox = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat

# Mean Earth radius (IUGG), the usual choice for haversine distances.
EARTH_RADIUS_M: Final = 6_371_008.8
METRES_PER_DEGREE: Final = EARTH_RADIUS_M * math.pi / 180.0

# A point this close to an edge is on it (1e-9° is about 0.1 mm): far below survey accuracy, far
# above double rounding at Guangzhou's coordinates (~1e-14°), so neighbours never leave a crack.
BOUNDARY_TOLERANCE_DEG: Final = 1e-9
# Interiors overlapping by less than this (about 1 cm) are digitising noise, not an overlap.
OVERLAP_TOLERANCE_DEG: Final = 1e-7

# Names of cells, streets and communities, as the grid table stores them.
MAX_NAME_LENGTH: Final = 200
_CODE_PATTERN: Final = re.compile(r"[0-9]{15}")
# A cell covering more buckets than this is kept on a short list checked on every lookup, so one
# huge polygon cannot flood thousands of buckets.
_MAX_BUCKETS_PER_CELL: Final = 64
_MIN_BUCKET_DEG: Final = 1e-6

# CRS names meaning "longitude/latitude on WGS84". CGCS2000 (EPSG:4490) is WGS84 to within
# centimetres, far below a grid cell, so Chinese national data can be loaded as is.
_WGS84_CRS_NAMES: Final = frozenset(
    {
        "urn:ogc:def:crs:ogc:1.3:crs84",
        "urn:ogc:def:crs:ogc::crs84",
        "crs84",
        "wgs84",
        "wgs 84",
        "epsg:4326",
        "urn:ogc:def:crs:epsg::4326",
        "urn:ogc:def:crs:epsg:6.6:4326",
        "http://www.opengis.net/def/crs/epsg/0/4326",
        "http://www.opengis.net/def/crs/ogc/1.3/crs84",
        "epsg:4490",
        "urn:ogc:def:crs:epsg::4490",
        "cgcs2000",
    }
)


# --------------------------------------------------------------------------------------------------
# Codes


@dataclass(frozen=True, order=True)
class GridCode:
    """A 15-digit grid code: 6 district (GB/T 2260) + 3 street + 3 community + 3 sequence.

    The hierarchy is read from prefixes, so a grid code alone tells which community, street and
    district answer for a case; no lookup table is needed. Codes order by their digits, which is
    also the tie-break for points on shared edges.
    """

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or _CODE_PATTERN.fullmatch(self.value) is None:
            raise ValueError(
                "a grid code is 15 ASCII digits (6 district + 3 street + 3 community + 3 sequence), "
                f"got {self.value!r}"
            )

    @classmethod
    def parse(cls, text: str) -> GridCode:
        """A code from user or file input; surrounding whitespace is forgiven, nothing else."""
        if not isinstance(text, str):
            raise ValueError(f"a grid code must be a string of 15 digits, got {type(text).__name__}")
        return cls(text.strip())

    @property
    def district(self) -> str:
        """The 6-digit administrative division (GB/T 2260), e.g. ``440106`` for Tianhe."""
        return self.value[:6]

    @property
    def street(self) -> str:
        """The street (街道/镇) as a 9-digit prefix, unique city-wide."""
        return self.value[:9]

    @property
    def community(self) -> str:
        """The community (社区/村) as a 12-digit prefix, unique city-wide."""
        return self.value[:12]

    @property
    def sequence(self) -> str:
        """The cell's 3-digit number within its community."""
        return self.value[12:]

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------------------------------
# Geometry primitives


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS84 points, arguments in GeoJSON order.

    Spherical, so off by up to ~0.3 % from the ellipsoid: plenty for a 50 m duplicate radius or a
    handler's check-in distance, and much cheaper than Vincenty.
    """
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2.0
    half_dlambda = math.radians(lon2 - lon1) / 2.0
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _signed_area(ring: Ring) -> float:
    """Shoelace area in square degrees: positive when counter-clockwise.

    Relative to the first vertex, so a 100 m cell at 113° E does not drown in rounding.
    """
    ox, oy = ring[0]
    total = 0.0
    px, py = ring[-1][0] - ox, ring[-1][1] - oy
    for x, y in ring:
        qx, qy = x - ox, y - oy
        total += px * qy - qx * py
        px, py = qx, qy
    return total / 2.0


def _ray_inside(ring: Ring, x: float, y: float) -> bool:
    """Crossing-number test (ray towards +x). Half-open on edges, hence ``_on_ring`` as well."""
    inside = False
    px, py = ring[-1]
    for qx, qy in ring:
        if (qy > y) != (py > y) and x < px + (y - py) * (qx - px) / (qy - py):
            inside = not inside
        px, py = qx, qy
    return inside


def _on_ring(ring: Ring, x: float, y: float) -> bool:
    """Whether the point is within ``BOUNDARY_TOLERANCE_DEG`` of one of the ring's edges."""
    eps = BOUNDARY_TOLERANCE_DEG
    px, py = ring[-1]
    for qx, qy in ring:
        if (px - eps <= x <= qx + eps or qx - eps <= x <= px + eps) and (
            py - eps <= y <= qy + eps or qy - eps <= y <= py + eps
        ):
            dx = qx - px
            dy = qy - py
            cross = dx * (y - py) - dy * (x - px)
            if cross * cross <= eps * eps * (dx * dx + dy * dy):
                return True
        px, py = qx, qy
    return False


_Part = tuple[Ring, tuple[Ring, ...]]


def _parts_cover(parts: tuple[_Part, ...], x: float, y: float) -> bool:
    """Closed containment: interior or boundary of any part, holes excluded but not their edges.

    The boundary test is only paid when the ray test cannot settle it: for a point the crossing
    number puts outside an outer ring, or inside a hole.
    """
    for outer, holes in parts:
        if _ray_inside(outer, x, y):
            for hole in holes:
                if _ray_inside(hole, x, y) and not _on_ring(hole, x, y):
                    break
            else:
                return True
        elif _on_ring(outer, x, y):
            return True
    return False


_OUTSIDE, _BOUNDARY, _INSIDE = -1, 0, 1


def _classify(polygon: Polygon, x: float, y: float) -> int:
    """Strict classification, for validation where the boundary must be told apart."""
    if _on_ring(polygon.outer, x, y):
        return _BOUNDARY
    if not _ray_inside(polygon.outer, x, y):
        return _OUTSIDE
    for hole in polygon.holes:
        if _on_ring(hole, x, y):
            return _BOUNDARY
        if _ray_inside(hole, x, y):
            return _OUTSIDE
    return _INSIDE


def _orient(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> float:
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def _between(a: float, b: float, c: float) -> bool:
    return min(a, b) <= c <= max(a, b)


def _segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Closed segment intersection, exact on the float inputs (used for ring validity)."""
    d1 = _orient(c[0], c[1], d[0], d[1], a[0], a[1])
    d2 = _orient(c[0], c[1], d[0], d[1], b[0], b[1])
    d3 = _orient(a[0], a[1], b[0], b[1], c[0], c[1])
    d4 = _orient(a[0], a[1], b[0], b[1], d[0], d[1])
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True

    def on(p: Point, q: Point, r: Point) -> bool:
        return _between(p[0], q[0], r[0]) and _between(p[1], q[1], r[1])

    return (
        (d1 == 0 and on(c, d, a))
        or (d2 == 0 and on(c, d, b))
        or (d3 == 0 and on(a, b, c))
        or (d4 == 0 and on(a, b, d))
    )


def _ring_self_intersection(ring: Ring) -> str | None:
    """Why the ring is not simple, or None. A sweep over edges sorted by x keeps it near O(n log n).

    A bow-tie or a spike would make the crossing-number test answer nonsense for part of the cell,
    silently routing cases to the wrong unit; it is cheaper to refuse it at load time.
    """
    n = len(ring)
    for i in range(n):
        (ax, ay), (bx, by), (cx, cy) = ring[i - 1], ring[i], ring[(i + 1) % n]
        if _orient(ax, ay, bx, by, cx, cy) == 0 and (ax - bx) * (cx - bx) + (ay - by) * (cy - by) > 0:
            return f"spike at vertex {i} {ring[i]}"
    edges = sorted(
        (min(ring[i][0], ring[(i + 1) % n][0]), max(ring[i][0], ring[(i + 1) % n][0]), i) for i in range(n)
    )
    for k, (_, max_x, i) in enumerate(edges):
        a, b = ring[i], ring[(i + 1) % n]
        for other_min_x, _, j in edges[k + 1 :]:
            if other_min_x > max_x:
                break
            if abs(i - j) == 1 or abs(i - j) == n - 1:
                continue  # neighbours share a vertex by construction; spikes are checked above
            if _segments_touch(a, b, ring[j], ring[(j + 1) % n]):
                return f"edges {min(i, j)} and {max(i, j)} cross or touch"
    return None


def _normalise_ring(points: Sequence[Sequence[float]], what: str) -> Ring:
    """Validate a ring and return it open, with consecutive duplicates dropped."""
    ring: list[Point] = []
    for index, point in enumerate(points):
        if isinstance(point, str | bytes) or not isinstance(point, Sequence) or len(point) < 2:
            raise ValueError(f"{what}: position {index} is not [longitude, latitude]")
        lon, lat = point[0], point[1]
        for name, number in (("longitude", lon), ("latitude", lat)):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"{what}: position {index} has a non-numeric {name} {number!r}")
            if not math.isfinite(number):
                raise ValueError(f"{what}: position {index} has a non-finite {name}")
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ValueError(
                f"{what}: position {index} ({lon}, {lat}) is outside longitude [-180, 180] / latitude [-90, 90]"
            )
        xy = (float(lon), float(lat))
        if not ring or ring[-1] != xy:
            ring.append(xy)
    while len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()
    if len(set(ring)) < 3:
        raise ValueError(f"{what}: a ring needs at least 3 distinct points, got {len(set(ring))}")
    min_x, min_y, max_x, max_y = _ring_bbox(tuple(ring))
    if abs(_signed_area(tuple(ring))) <= BOUNDARY_TOLERANCE_DEG * max(max_x - min_x, max_y - min_y):
        # Thinner on average than the boundary tolerance: collinear points, in effect a line.
        raise ValueError(f"{what}: the ring is degenerate (zero area)")
    problem = _ring_self_intersection(tuple(ring))
    if problem is not None:
        raise ValueError(f"{what}: the ring is not simple: {problem}")
    return tuple(ring)


def _oriented(ring: Ring, *, ccw: bool) -> Ring:
    """The ring in the wanted orientation, starting from its lowest vertex.

    A canonical start makes equal geometry compare equal, however the source listed it.
    """
    if (_signed_area(ring) > 0) != ccw:
        ring = ring[::-1]
    start = ring.index(min(ring))
    return ring[start:] + ring[:start]


def _ring_bbox(ring: Ring) -> BBox:
    xs = [x for x, _ in ring]
    ys = [y for _, y in ring]
    return min(xs), min(ys), max(xs), max(ys)


def _is_convex(ring: Ring) -> bool:
    """For a simple counter-clockwise ring: no right turn anywhere."""
    n = len(ring)
    for i in range(n):
        (ax, ay), (bx, by), (cx, cy) = ring[i - 1], ring[i], ring[(i + 1) % n]
        if _orient(ax, ay, bx, by, cx, cy) < 0:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class Polygon:
    """One polygon: an outer ring and optional holes, validated and normalised on construction.

    Construction refuses what would make containment ambiguous: out-of-range or non-finite
    coordinates, fewer than 3 distinct points, zero area, self-intersecting rings, and holes with a
    vertex outside the outer ring.
    """

    outer: Ring
    holes: tuple[Ring, ...] = ()
    bbox: BBox = field(init=False, repr=False, compare=False)
    convex: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        outer = _oriented(_normalise_ring(self.outer, "outer ring"), ccw=True)
        holes = tuple(
            _oriented(_normalise_ring(hole, f"hole {number}"), ccw=False)
            for number, hole in enumerate(self.holes)
        )
        for number, hole in enumerate(holes):
            for x, y in hole:
                if not (_ray_inside(outer, x, y) or _on_ring(outer, x, y)):
                    raise ValueError(f"hole {number}: vertex ({x}, {y}) lies outside the outer ring")
        object.__setattr__(self, "outer", outer)
        object.__setattr__(self, "holes", holes)
        object.__setattr__(self, "bbox", _ring_bbox(outer))
        object.__setattr__(self, "convex", not holes and _is_convex(outer))

    @property
    def area_deg2(self) -> float:
        return _signed_area(self.outer) + sum(_signed_area(hole) for hole in self.holes)


@dataclass(frozen=True)
class GridCell:
    """A unit grid cell: its code, display names and geometry (one or more polygon parts).

    ``street_name`` and ``community_name`` are optional display names; the hierarchy itself lives
    in the code. ``bbox`` is precomputed because every lookup filters on it first.
    """

    code: GridCode
    name: str
    polygons: tuple[Polygon, ...]
    street_name: str | None = None
    community_name: str | None = None
    bbox: BBox = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.code, GridCode):
            raise ValueError(f"code must be a GridCode, got {type(self.code).__name__}")
        polygons = tuple(self.polygons)
        if not polygons:
            raise ValueError(f"cell {self.code}: needs at least one polygon")
        for i, first in enumerate(polygons):
            for j in range(i + 1, len(polygons)):
                if _polygons_overlap(first, polygons[j]):
                    raise ValueError(f"cell {self.code}: polygon parts {i} and {j} overlap")
        object.__setattr__(self, "polygons", polygons)
        object.__setattr__(
            self,
            "bbox",
            (
                min(p.bbox[0] for p in polygons),
                min(p.bbox[1] for p in polygons),
                max(p.bbox[2] for p in polygons),
                max(p.bbox[3] for p in polygons),
            ),
        )

    @classmethod
    def of(
        cls,
        code: str | GridCode,
        name: str,
        outer: Sequence[Sequence[float]],
        *,
        holes: Sequence[Sequence[Sequence[float]]] = (),
        street_name: str | None = None,
        community_name: str | None = None,
    ) -> GridCell:
        """The common case: a single polygon given as plain coordinate lists."""
        grid_code = code if isinstance(code, GridCode) else GridCode.parse(code)
        polygon = Polygon(
            tuple((float(p[0]), float(p[1])) for p in outer),
            tuple(tuple((float(p[0]), float(p[1])) for p in hole) for hole in holes),
        )
        return cls(grid_code, name, (polygon,), street_name, community_name)

    def contains(self, lon: float, lat: float) -> bool:
        """Closed containment: the interior and the boundary (within the tolerance), not holes."""
        min_x, min_y, max_x, max_y = self.bbox
        eps = BOUNDARY_TOLERANCE_DEG
        if not (min_x - eps <= lon <= max_x + eps and min_y - eps <= lat <= max_y + eps):
            return False
        return _parts_cover(_parts(self), lon, lat)

    @property
    def area_m2(self) -> float:
        """Approximate area, projecting at the cell's own latitude (error far below 1 % per cell)."""
        mid_lat = math.radians((self.bbox[1] + self.bbox[3]) / 2.0)
        scale = METRES_PER_DEGREE * METRES_PER_DEGREE * math.cos(mid_lat)
        return sum(p.area_deg2 for p in self.polygons) * scale

    @property
    def centroid(self) -> Point:
        """Area-weighted centroid of all parts, holes subtracted.

        Inside every convex cell; a strongly concave or multi-part cell may have it outside.
        """
        total = cx = cy = 0.0
        for polygon in self.polygons:
            for ring in (polygon.outer, *polygon.holes):
                # Shift to the first vertex so the products stay small and precise.
                ox, oy = ring[0]
                px, py = ring[-1][0] - ox, ring[-1][1] - oy
                for x, y in ring:
                    qx, qy = x - ox, y - oy
                    cross = px * qy - qx * py
                    total += cross
                    cx += (px + qx + 3 * ox) * cross
                    cy += (py + qy + 3 * oy) * cross
                    px, py = qx, qy
        return cx / (3.0 * total), cy / (3.0 * total)

    def distance_m(self, lon: float, lat: float) -> float:
        """Metres from the point to the cell: 0 inside, else to the nearest edge.

        Uses a local equirectangular projection at the point: within 0.1 % for a few kilometres,
        which is all a neighbourhood search needs.
        """
        if self.contains(lon, lat):
            return 0.0
        kx = METRES_PER_DEGREE * math.cos(math.radians(lat))
        ky = METRES_PER_DEGREE
        best = math.inf
        for polygon in self.polygons:
            for ring in (polygon.outer, *polygon.holes):
                px, py = (ring[-1][0] - lon) * kx, (ring[-1][1] - lat) * ky
                for x, y in ring:
                    qx, qy = (x - lon) * kx, (y - lat) * ky
                    dx, dy = qx - px, qy - py
                    length2 = dx * dx + dy * dy
                    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(px * dx + py * dy) / length2))
                    best = min(best, math.hypot(px + t * dx, py + t * dy))
                    px, py = qx, qy
        return best


def _parts(cell: GridCell) -> tuple[_Part, ...]:
    return tuple((p.outer, p.holes) for p in cell.polygons)


# --------------------------------------------------------------------------------------------------
# Overlap detection (for validation only; lookups never need it)


def _bboxes_overlap(a: BBox, b: BBox, tolerance: float) -> bool:
    """Positive-area intersection: boxes that merely touch, as tiled neighbours do, do not count."""
    return (
        a[0] < b[2] - tolerance
        and b[0] < a[2] - tolerance
        and a[1] < b[3] - tolerance
        and b[1] < a[3] - tolerance
    )


def _convex_overlap(a: Ring, b: Ring) -> bool:
    """Separating-axis test for two convex rings; touching or near-touching counts as apart."""
    for ring in (a, b):
        px, py = ring[-1]
        for qx, qy in ring:
            nx, ny = qy - py, px - qx
            slack = OVERLAP_TOLERANCE_DEG * math.hypot(nx, ny)
            a_proj = [nx * x + ny * y for x, y in a]
            b_proj = [nx * x + ny * y for x, y in b]
            if max(a_proj) <= min(b_proj) + slack or max(b_proj) <= min(a_proj) + slack:
                return False
            px, py = qx, qy
    return True


def _split_parameters(p: Point, q: Point, edges: Sequence[tuple[Point, Point]]) -> list[float]:
    """Where the other polygon's edges meet segment p→q, as parameters in (0, 1), plus the ends."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    length = math.hypot(dx, dy)
    lo_x, hi_x = min(px, q[0]) - BOUNDARY_TOLERANCE_DEG, max(px, q[0]) + BOUNDARY_TOLERANCE_DEG
    lo_y, hi_y = min(py, q[1]) - BOUNDARY_TOLERANCE_DEG, max(py, q[1]) + BOUNDARY_TOLERANCE_DEG
    ts = [0.0, 1.0]
    for (rx, ry), (sx, sy) in edges:
        if max(rx, sx) < lo_x or min(rx, sx) > hi_x or max(ry, sy) < lo_y or min(ry, sy) > hi_y:
            continue
        ex, ey = sx - rx, sy - ry
        wx, wy = rx - px, ry - py
        denom = dx * ey - dy * ex
        if abs(denom) > 1e-12 * length * math.hypot(ex, ey):
            t = (wx * ey - wy * ex) / denom
            u = (wx * dy - wy * dx) / denom
            if -1e-12 <= u <= 1 + 1e-12 and 0.0 < t < 1.0:
                ts.append(t)
        elif abs(wx * dy - wy * dx) <= BOUNDARY_TOLERANCE_DEG * length:  # collinear
            for ox, oy in ((rx, ry), (sx, sy)):
                t = ((ox - px) * dx + (oy - py) * dy) / (length * length)
                if 0.0 < t < 1.0:
                    ts.append(t)
    return sorted(ts)


def _edges(polygon: Polygon) -> list[tuple[Point, Point]]:
    return [(ring[i - 1], ring[i]) for ring in (polygon.outer, *polygon.holes) for i in range(len(ring))]


def _boundary_enters(a: Polygon, b: Polygon) -> bool:
    """Whether some piece of a's boundary has b's interior on a's inner side.

    a's edges are split wherever b's boundary meets them; each piece is then wholly inside,
    outside or along b. A probe just inside a next to each piece lands in b's interior exactly when
    the interiors meet along that piece. Every overlap region is bounded by such a piece of a or
    of b, so running this both ways finds every overlap wider than the probe offset.
    """
    other_edges = _edges(b)
    bx0, by0, bx1, by1 = b.bbox
    for ring in (a.outer, *a.holes):
        for i in range(len(ring)):
            p, q = ring[i - 1], ring[i]
            if (
                max(p[0], q[0]) < bx0
                or min(p[0], q[0]) > bx1
                or max(p[1], q[1]) < by0
                or min(p[1], q[1]) > by1
            ):
                continue
            dx, dy = q[0] - p[0], q[1] - p[1]
            length = math.hypot(dx, dy)
            # Interior is on the left of every edge (normalised orientation).
            nx, ny = -dy / length * OVERLAP_TOLERANCE_DEG, dx / length * OVERLAP_TOLERANCE_DEG
            ts = _split_parameters(p, q, other_edges)
            for t0, t1 in pairwise(ts):
                if t1 - t0 <= 1e-12:
                    continue
                tm = (t0 + t1) / 2.0
                probe_x, probe_y = p[0] + tm * dx + nx, p[1] + tm * dy + ny
                if _classify(b, probe_x, probe_y) == _INSIDE and _classify(a, probe_x, probe_y) == _INSIDE:
                    return True
    return False


def _polygons_overlap(a: Polygon, b: Polygon) -> bool:
    """Whether the interiors intersect by more than ``OVERLAP_TOLERANCE_DEG``."""
    if not _bboxes_overlap(a.bbox, b.bbox, OVERLAP_TOLERANCE_DEG):
        return False
    if a.convex and b.convex:
        return _convex_overlap(a.outer, b.outer)
    return _boundary_enters(a, b) or _boundary_enters(b, a)


def _cells_overlap(a: GridCell, b: GridCell) -> bool:
    return any(_polygons_overlap(pa, pb) for pa in a.polygons for pb in b.polygons)


# --------------------------------------------------------------------------------------------------
# The index

_Entry = tuple[float, float, float, float, tuple[_Part, ...], GridCell]


class GridIndex:
    """Point → cell resolution over a whole city's grid, in memory.

    Design: a uniform bucket grid whose bucket size is the median cell bounding box, so a bucket
    holds a handful of cells for a near-uniform grid (which the unit grid is by definition). Each
    cell is registered in every bucket its bounding box (widened by the boundary tolerance) touches;
    each bucket lists its cells in code order. A lookup is one dict access, a bounding-box filter
    and an exact ray-casting test on the survivors; the first cell that contains the point wins,
    which is the lowest code, so points on shared edges resolve deterministically. A cell spanning
    more than ``_MAX_BUCKETS_PER_CELL`` buckets goes on a short list checked on every lookup
    instead. Stdlib only; no R-tree needed at ~100,000 cells of similar size.
    """

    __slots__ = (
        "_buckets",
        "_by_code",
        "_cells",
        "_inv_h",
        "_inv_w",
        "_max_x",
        "_max_y",
        "_min_x",
        "_min_y",
        "_oversized",
        "_stride",
    )

    def __init__(self, cells: Iterable[GridCell], *, validate: bool = True) -> None:
        """Index the cells. See ``build`` for what ``validate`` checks."""
        for _ in self._fill(cells, validate=validate, step=None):
            pass

    @classmethod
    def build_stepwise(
        cls, cells: Iterable[GridCell], *, step: int = 2000
    ) -> Generator[None, None, GridIndex]:
        """Index cells validated before (``validate=False``) a slice at a time: each ``next()`` does
        about ``step`` cells' work and the generator returns the index.

        For a process that must keep serving while it indexes a whole city's grid in its own
        memory: its event loop runs between slices (``services/case/grid_store.py``). The index is
        only handed out once complete.
        """
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        index = cls.__new__(cls)
        yield from index._fill(cells, validate=False, step=step)
        return index

    def _fill(self, cells: Iterable[GridCell], *, validate: bool, step: int | None) -> Iterator[None]:
        """Build the index into ``self``; with a ``step``, pause after about every ``step`` items."""
        ordered = sorted(cells, key=lambda cell: cell.code.value)
        by_code: dict[str, GridCell] = {}
        for n, cell in enumerate(ordered, 1):
            if cell.code.value in by_code:
                raise ValueError(f"duplicate grid code {cell.code}: a code identifies exactly one cell")
            by_code[cell.code.value] = cell
            if step is not None and n % step == 0:
                yield
        self._cells: tuple[GridCell, ...] = tuple(ordered)
        self._by_code = by_code
        self._buckets: dict[int, tuple[_Entry, ...]] = {}
        self._oversized: tuple[_Entry, ...] = ()
        eps = BOUNDARY_TOLERANCE_DEG
        if not ordered:
            self._min_x = self._min_y = math.inf
            self._max_x = self._max_y = -math.inf
            self._inv_w = self._inv_h = 1.0
            self._stride = 1
            return
        self._min_x = min(c.bbox[0] for c in ordered) - eps
        self._min_y = min(c.bbox[1] for c in ordered) - eps
        self._max_x = max(c.bbox[2] for c in ordered) + eps
        self._max_y = max(c.bbox[3] for c in ordered) + eps
        width = max(median(c.bbox[2] - c.bbox[0] for c in ordered), _MIN_BUCKET_DEG)
        height = max(median(c.bbox[3] - c.bbox[1] for c in ordered), _MIN_BUCKET_DEG)
        self._inv_w = 1.0 / width
        self._inv_h = 1.0 / height
        self._stride = int((self._max_y - self._min_y) * self._inv_h) + 2
        if step is not None:
            yield

        lists: dict[int, list[_Entry]] = {}
        oversized: list[_Entry] = []
        for n, cell in enumerate(ordered, 1):
            if step is not None and n % step == 0:
                yield
            x0, y0, x1, y1 = cell.bbox
            entry: _Entry = (x0 - eps, y0 - eps, x1 + eps, y1 + eps, _parts(cell), cell)
            ix0, iy0 = self._bucket_of(entry[0], entry[1])
            ix1, iy1 = self._bucket_of(entry[2], entry[3])
            if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > _MAX_BUCKETS_PER_CELL:
                oversized.append(entry)
                continue
            for ix in range(ix0, ix1 + 1):
                for iy in range(iy0, iy1 + 1):
                    lists.setdefault(ix * self._stride + iy, []).append(entry)
        buckets: dict[int, tuple[_Entry, ...]] = {}
        for n, (key, entries) in enumerate(lists.items(), 1):
            buckets[key] = tuple(entries)
            if step is not None and n % step == 0:
                yield
        self._buckets = buckets
        self._oversized = tuple(oversized)
        if validate:
            self._refuse_overlaps()

    @classmethod
    def build(cls, cells: Iterable[GridCell], *, validate: bool = True) -> GridIndex:
        """Index the cells, refusing an inconsistent grid with a ``ValueError``.

        Duplicate codes are always refused: a code is a cell's identity, and the check is O(n).
        With ``validate=True`` (the default) cells whose interiors overlap are refused too, since
        an overlap makes the responsible unit a matter of code order. Pass ``validate=False`` to
        say overlaps are intended (or that the grid was validated when it was imported); lookups
        then answer with the lowest code among the cells containing the point.
        """
        return cls(cells, validate=validate)

    def _bucket_of(self, x: float, y: float) -> tuple[int, int]:
        return int((x - self._min_x) * self._inv_w), int((y - self._min_y) * self._inv_h)

    def _refuse_overlaps(self) -> None:
        """Test every pair of cells sharing a bucket (or involving an oversized cell) once.

        Tiled neighbours whose boxes only touch are skipped on the box test; convex pairs take
        the separating-axis shortcut, so a 100,000-cell grid validates in seconds.
        """

        def pairs() -> Iterator[tuple[GridCell, GridCell]]:
            for entries in self._buckets.values():
                for first, second in combinations(entries, 2):
                    yield first[5], second[5]
            if self._oversized:
                for big in self._oversized:
                    for other in self._cells:
                        if other is not big[5]:
                            yield big[5], other

        seen: set[tuple[str, str]] = set()
        for a, b in pairs():
            if not _bboxes_overlap(a.bbox, b.bbox, OVERLAP_TOLERANCE_DEG):
                continue
            pair = (a.code.value, b.code.value) if a.code < b.code else (b.code.value, a.code.value)
            if pair in seen:
                continue
            seen.add(pair)
            if _cells_overlap(a, b):
                raise ValueError(
                    f"grid cells {pair[0]} and {pair[1]} overlap; "
                    "pass validate=False if overlapping cells are intended"
                )

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[GridCell]:
        """The cells in code order."""
        return iter(self._cells)

    def get(self, code: str | GridCode) -> GridCell | None:
        return self._by_code.get(code.value if isinstance(code, GridCode) else code)

    @property
    def bounds(self) -> BBox | None:
        """The union of all cells' bounding boxes, or None for an empty index."""
        if not self._cells:
            return None
        eps = BOUNDARY_TOLERANCE_DEG
        return self._min_x + eps, self._min_y + eps, self._max_x - eps, self._max_y - eps

    def locate(self, lon: float, lat: float) -> GridCell | None:
        """The cell containing the point, the lowest code on shared edges, or None off the grid.

        Non-finite input is simply off the grid. This is the hot path of bulk intake, hence the
        inlined bucket arithmetic.
        """
        if not (self._min_x <= lon <= self._max_x and self._min_y <= lat <= self._max_y):
            return None
        key = int((lon - self._min_x) * self._inv_w) * self._stride + int((lat - self._min_y) * self._inv_h)
        found: GridCell | None = None
        for x0, y0, x1, y1, parts, cell in self._buckets.get(key, ()):
            if x0 <= lon <= x1 and y0 <= lat <= y1 and _parts_cover(parts, lon, lat):
                found = cell
                break
        if self._oversized:
            for x0, y0, x1, y1, parts, cell in self._oversized:
                if found is not None and cell.code.value >= found.code.value:
                    break
                if x0 <= lon <= x1 and y0 <= lat <= y1 and _parts_cover(parts, lon, lat):
                    found = cell
                    break
        return found

    def district_of(self, lon: float, lat: float) -> str | None:
        """The GB/T 2260 district code of the cell containing the point."""
        cell = self.locate(lon, lat)
        return None if cell is None else cell.code.district

    def cells_within(self, lon: float, lat: float, radius_m: float) -> list[GridCell]:
        """Cells coming within ``radius_m`` metres of the point, nearest first (ties by code).

        For "which grids does this 50 m duplicate radius touch" and for nearby-handler searches;
        distances use a local projection, so keep radii to a few kilometres.
        """
        if not math.isfinite(radius_m) or radius_m < 0:
            raise ValueError(f"radius_m must be a finite distance >= 0, got {radius_m!r}")
        if not (math.isfinite(lon) and math.isfinite(lat)) or not self._cells:
            return []
        dlat = radius_m / METRES_PER_DEGREE + BOUNDARY_TOLERANCE_DEG
        dlon = (
            radius_m / (METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 1e-6)) + BOUNDARY_TOLERANCE_DEG
        )
        box = (lon - dlon, lat - dlat, lon + dlon, lat + dlat)
        if box[2] < self._min_x or box[0] > self._max_x or box[3] < self._min_y or box[1] > self._max_y:
            return []
        ix0, iy0 = self._bucket_of(max(box[0], self._min_x), max(box[1], self._min_y))
        ix1, iy1 = self._bucket_of(min(box[2], self._max_x), min(box[3], self._max_y))
        candidates: dict[str, GridCell] = {}
        if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > len(self._buckets):
            pools: Iterable[Sequence[_Entry]] = self._buckets.values()
        else:
            pools = [
                self._buckets.get(ix * self._stride + iy, ())
                for ix in range(ix0, ix1 + 1)
                for iy in range(iy0, iy1 + 1)
            ]
        for pool in (*pools, self._oversized):
            for x0, y0, x1, y1, _, cell in pool:
                if x0 <= box[2] and box[0] <= x1 and y0 <= box[3] and box[1] <= y1:
                    candidates[cell.code.value] = cell
        near = [(cell.distance_m(lon, lat), cell.code.value, cell) for cell in candidates.values()]
        return [cell for distance, _, cell in sorted(near, key=lambda item: item[:2]) if distance <= radius_m]


# --------------------------------------------------------------------------------------------------
# GeoJSON


def _check_crs(crs: Any, where: str) -> None:
    """Accept only a WGS84-equivalent CRS hint; anything else is refused, not converted.

    GCJ-02 (AMap, Tencent) and BD-09 (Baidu) are offset by hundreds of metres: loading them as
    WGS84 would shift every case into the neighbouring grid. Conversion is a separate concern.
    """
    if crs is None:
        return
    name: Any = crs
    if isinstance(crs, Mapping):
        properties = crs.get("properties")
        name = properties.get("name") if isinstance(properties, Mapping) else None
    if not isinstance(name, str) or name.strip().lower() not in _WGS84_CRS_NAMES:
        raise ValueError(
            f"{where}: crs {name if isinstance(name, str) else crs!r} is not WGS84/CGCS2000; "
            "convert GCJ-02, BD-09 or projected coordinates to WGS84 before import"
        )


def _polygon_from_coordinates(coordinates: Any, what: str) -> Polygon:
    """A Polygon from GeoJSON rings; ``Polygon`` itself validates the positions (once)."""
    if not isinstance(coordinates, Sequence) or isinstance(coordinates, str) or not coordinates:
        raise ValueError(f"{what}: expected a list of rings")
    for number, ring in enumerate(coordinates):
        if not isinstance(ring, Sequence) or isinstance(ring, str):
            label = "outer ring" if number == 0 else f"hole {number - 1}"
            raise ValueError(f"{what} {label}: expected a list of positions")
    try:
        return Polygon(cast(Ring, coordinates[0]), cast(tuple[Ring, ...], tuple(coordinates[1:])))
    except ValueError as error:
        raise ValueError(f"{what} {error}") from None


def cells_from_geojson(document: Mapping[str, Any]) -> list[GridCell]:
    """Grid cells from a GeoJSON FeatureCollection (RFC 7946) of Polygon / MultiPolygon features.

    Each feature is one cell; a MultiPolygon keeps all its parts in that one cell. Properties:
    ``code`` (15 digits, required; a JSON integer is accepted as exported by some GIS tools),
    ``name``, ``street_name``, ``community_name`` (optional; ``name`` defaults to the code).
    Rings may be closed or open (closed here); each needs 3 distinct points and a non-zero area.
    The whole import fails on the first bad feature, with a ``ValueError`` naming the feature
    index and the reason: a grid with silently dropped cells would leave holes in the city.
    """
    if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
        raise ValueError("expected a GeoJSON FeatureCollection")
    _check_crs(document.get("crs"), "FeatureCollection")
    features = document.get("features")
    if not isinstance(features, Sequence) or isinstance(features, str):
        raise ValueError("FeatureCollection: 'features' must be a list")
    cells: list[GridCell] = []
    first_seen: dict[str, int] = {}
    for index, feature in enumerate(features):
        where = f"feature {index}"
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            raise ValueError(f"{where}: not a GeoJSON Feature")
        _check_crs(feature.get("crs"), where)
        properties = feature.get("properties")
        if not isinstance(properties, Mapping) or properties.get("code") is None:
            raise ValueError(f"{where}: properties.code (the 15-digit grid code) is required")
        raw_code = properties["code"]
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            raw_code = str(raw_code)
        if not isinstance(raw_code, str):
            raise ValueError(f"{where}: properties.code must be a string of 15 digits, got {raw_code!r}")
        try:
            code = GridCode.parse(raw_code)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        where = f"feature {index} (code {code})"
        if code.value in first_seen:
            raise ValueError(f"{where}: code already used by feature {first_seen[code.value]}")
        texts: dict[str, str | None] = {}
        for key in ("name", "street_name", "community_name"):
            value = properties.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: properties.{key} must be a string")
            if value is not None and (len(value) > MAX_NAME_LENGTH or "\x00" in value):
                raise ValueError(
                    f"{where}: properties.{key} must be at most {MAX_NAME_LENGTH} characters, without NUL"
                )
            texts[key] = value
        geometry = feature.get("geometry")
        if not isinstance(geometry, Mapping):
            raise ValueError(f"{where}: geometry is missing")
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        try:
            if kind == "Polygon":
                polygons: tuple[Polygon, ...] = (_polygon_from_coordinates(coordinates, "polygon"),)
            elif kind == "MultiPolygon":
                if not isinstance(coordinates, Sequence) or isinstance(coordinates, str) or not coordinates:
                    raise ValueError("MultiPolygon: expected a non-empty list of polygons")
                polygons = tuple(
                    _polygon_from_coordinates(part, f"polygon {number}")
                    for number, part in enumerate(coordinates)
                )
            else:
                raise ValueError(f"geometry type {kind!r} is not Polygon or MultiPolygon")
            cell = GridCell(
                code, texts["name"] or code.value, polygons, texts["street_name"], texts["community_name"]
            )
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        first_seen[code.value] = index
        cells.append(cell)
    return cells
