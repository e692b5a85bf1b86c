"""Point → grid cell lookups per second: the bucket index beside two same-run baselines.

Baselines, run on the same points in the same process:

* ``scan``: the exact answer by testing every cell (``GridCell.contains``), lowest code first;
* ``bbox_scan``: a linear scan of bounding boxes only, no polygon test (cheaper than ``scan`` and
  wrong near edges, since the demo cells are irregular quadrilaterals).

The index must agree with ``scan`` on every sampled point; the figures are only for comparison
within one run. ``python -m bench.grid`` runs it alone; ``python -m bench`` includes it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from services.case.domain.demo_grid import DISTRICT_BOXES, demo_cells
from services.case.domain.grid import GridCell, GridIndex

Point = tuple[float, float]


def _points(count: int, seed: int) -> list[Point]:
    """Half inside the district boxes (on the grid), half anywhere in the city's extent."""
    rng = random.Random(seed)
    boxes = list(DISTRICT_BOXES.values())
    points: list[Point] = []
    for n in range(count):
        if n % 2 == 0:
            x0, y0, x1, y1 = rng.choice(boxes)
            points.append((rng.uniform(x0, x1), rng.uniform(y0, y1)))
        else:
            points.append((rng.uniform(112.95, 114.05), rng.uniform(22.55, 23.95)))
    return points


def _rate(lookup: Callable[[float, float], object], points: Sequence[Point], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for lon, lat in points:
            lookup(lon, lat)
        best = min(best, time.perf_counter() - started)
    return len(points) / best


def run_size(cells_per_district: int, points: int, baseline_points: int) -> dict[str, Any]:
    started = time.perf_counter()
    cells = demo_cells(cells_per_district)
    index = GridIndex.build(cells, validate=False)
    build_seconds = time.perf_counter() - started
    ordered: list[GridCell] = sorted(cells, key=lambda cell: cell.code.value)
    boxes = [(cell.bbox, cell) for cell in ordered]

    def scan(lon: float, lat: float) -> GridCell | None:
        return next((cell for cell in ordered if cell.contains(lon, lat)), None)

    def bbox_scan(lon: float, lat: float) -> GridCell | None:
        for (x0, y0, x1, y1), cell in boxes:
            if x0 <= lon <= x1 and y0 <= lat <= y1:
                return cell
        return None

    sample = _points(points, seed=42)
    few = sample[:baseline_points]
    disagreements = sum(1 for lon, lat in few if index.locate(lon, lat) is not scan(lon, lat))
    on_grid = sum(1 for lon, lat in sample if index.locate(lon, lat) is not None)
    indexed = _rate(index.locate, sample)
    scanned = _rate(scan, few, repeat=1)
    boxed = _rate(bbox_scan, few, repeat=1)
    return {
        "cells": len(cells),
        "build_seconds": build_seconds,
        "points": len(sample),
        "on_grid": on_grid,
        "index_lookups_per_s": indexed,
        "scan_lookups_per_s": scanned,
        "bbox_scan_lookups_per_s": boxed,
        "index_vs_scan_ratio": indexed / scanned,
        "index_vs_bbox_scan_ratio": indexed / boxed,
        "disagreements_with_scan": disagreements,
        "checked_against_scan": len(few),
    }


def run(
    sizes: Sequence[int] = (400, 9_091), points: int = 100_000, baseline_points: int = 300
) -> dict[str, Any]:
    """Per grid size (cells per district): 400 is the demo grid, 9,091 about 100,000 cells."""
    return {str(size): run_size(size, points, baseline_points) for size in sizes}


def describe(results: dict[str, Any]) -> list[str]:
    return [
        f"grid         {r['cells']:>7,} cells: index {r['index_lookups_per_s']:,.0f} lookups/s | "
        f"scan {r['scan_lookups_per_s']:,.0f}/s (×{r['index_vs_scan_ratio']:,.0f}) | "
        f"bbox scan {r['bbox_scan_lookups_per_s']:,.0f}/s (×{r['index_vs_bbox_scan_ratio']:,.0f}) | "
        f"{r['disagreements_with_scan']} of {r['checked_against_scan']} disagree with the scan"
        for r in results.values()
    ]


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grid", description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--baseline-points", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 9_091])
    arguments = parser.parse_args()
    results = run(arguments.sizes, arguments.points, arguments.baseline_points)
    print("\n".join(describe(results)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    cli()
