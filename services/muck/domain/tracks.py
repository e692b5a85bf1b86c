"""A truck's track thinned for display: the positions Douglas–Peucker keeps at a tolerance in metres.

A day of one truck is some 3,000 positions at 30 s, most of them on straight streets or parked;
a map needs the turns. The answer is the indices of the kept positions, so the caller keeps each
one's time, speed and load with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import shapely

from services.muck.domain.geofences import projection

__all__ = ["simplify"]


def simplify(points: Sequence[tuple[datetime, float, float]], tolerance_m: float) -> list[int]:
    """The indices, strictly increasing, of the (at, lon, lat) points kept; first and last always."""
    if not (tolerance_m >= 0 and math.isfinite(tolerance_m)):
        raise ValueError(f"a tolerance is a non-negative number of metres, not {tolerance_m}")
    count = len(points)
    if count <= 2:
        return list(range(count))
    lons = np.fromiter((lon for _, lon, _ in points), dtype=np.float64, count=count)
    lats = np.fromiter((lat for _, _, lat in points), dtype=np.float64, count=count)
    xs, ys = projection().to_metres(lons, lats)
    kept = shapely.get_coordinates(
        shapely.simplify(shapely.linestrings(xs, ys), tolerance_m, preserve_topology=False)
    )
    # GEOS keeps a subsequence of the input's vertices, copied exactly, so each kept vertex is found
    # by walking the input forward. Where the truck stood still several inputs share one vertex: the
    # walk takes the first of them, the moment the truck got there.
    indices = [0]
    at = 1
    for x, y in kept[1:-1].tolist():
        while at < count - 1 and (xs[at] != x or ys[at] != y):
            at += 1
        if at == count - 1:
            break
        if indices[-1] != at and (xs[at], ys[at]) != (xs[indices[-1]], ys[indices[-1]]):
            indices.append(at)
        at += 1
    indices.append(count - 1)
    return indices
