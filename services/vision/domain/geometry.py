"""Boxes and regions in normalised image coordinates (0..1, origin top-left): IoU and containment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

Point = tuple[float, float]
Polygon = Sequence[Point]


class Rect(NamedTuple):
    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def bottom_centre(self) -> Point:
        """Where the object stands on the ground: the point a region of interest is tested with."""
        return (self.x + self.width / 2, self.y + self.height)


def iou(a: Rect, b: Rect) -> float:
    """Intersection over union; 0 for disjoint boxes or boxes without area."""
    left, top = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    if right <= left or bottom <= top:
        return 0.0
    intersection = (right - left) * (bottom - top)
    union = a.area + b.area - intersection
    return intersection / union if union > 0 else 0.0


def _on_segment(p: Point, a: Point, b: Point, epsilon: float = 1e-12) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    if abs(cross) > epsilon:
        return False
    return min(a[0], b[0]) - epsilon <= p[0] <= max(a[0], b[0]) + epsilon and (
        min(a[1], b[1]) - epsilon <= p[1] <= max(a[1], b[1]) + epsilon
    )


def point_in_polygon(point: Point, polygon: Polygon) -> bool:
    """Even-odd ray casting; a point on the boundary counts as inside."""
    count = len(polygon)
    if count < 3:
        return False
    inside = False
    px, py = point
    for i in range(count):
        a, b = polygon[i], polygon[(i + 1) % count]
        if _on_segment(point, a, b):
            return True
        if (a[1] > py) != (b[1] > py):
            crossing = a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if px < crossing:
                inside = not inside
    return inside


def in_regions(box: Rect, regions: Sequence[Polygon]) -> bool:
    """No regions means the whole image is watched."""
    if not regions:
        return True
    point = box.bottom_centre
    return any(point_in_polygon(point, polygon) for polygon in regions)
