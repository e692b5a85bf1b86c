"""A deterministic synthetic unit grid over Guangzhou's 11 districts, for demos, tests and benchmarks.

Not survey data. Each district is an axis-aligned box placed roughly where the district lies; the
boxes touch but never overlap (gaps between them are simply "off the grid"), so a point resolves
to a district unambiguously, and the two reference points land where people expect: the city
centre (113.264 E, 23.129 N) in Yuexiu and (113.3245 E, 23.1291 N) in Tianhe.

Run ``python -m services.case.domain.demo_grid [cells_per_district]`` for a lookup micro-benchmark
(the default, 9,091 cells per district, is about 100,000 cells).
"""

from __future__ import annotations

import math
import random

from services.case.domain.grid import METRES_PER_DEGREE, GridCell, GridCode, Polygon

# (min_lon, min_lat, max_lon, max_lat), keyed by GB/T 2260 code. Approximate, adjusted to tile
# without overlap; accuracy of the outlines is secondary.
DISTRICT_BOXES: dict[str, tuple[float, float, float, float]] = {
    "440103": (113.17, 23.04, 113.25, 23.16),  # Liwan: west of Yuexiu, Fangcun south of the river
    "440104": (113.25, 23.10, 113.30, 23.16),  # Yuexiu: the old city centre
    "440105": (113.25, 23.04, 113.44, 23.10),  # Haizhu: the island south of Yuexiu and Tianhe
    "440106": (113.30, 23.10, 113.44, 23.25),  # Tianhe: the new CBD east of Yuexiu
    "440111": (113.17, 23.16, 113.30, 23.43),  # Baiyun: north of Liwan and Yuexiu
    "440112": (113.44, 23.04, 113.60, 23.43),  # Huangpu: east, up to the former Luogang
    "440113": (113.17, 22.90, 113.60, 23.04),  # Panyu: south of the Pearl River
    "440114": (112.95, 23.43, 113.36, 23.62),  # Huadu: north-west, above Baiyun
    "440115": (113.28, 22.55, 113.70, 22.90),  # Nansha: the far south, at the estuary
    "440117": (113.36, 23.62, 114.05, 23.95),  # Conghua: the far north
    "440118": (113.60, 23.05, 114.05, 23.62),  # Zengcheng: the north-east
}

DISTRICT_NAMES: dict[str, str] = {
    "440103": "荔湾区",
    "440104": "越秀区",
    "440105": "海珠区",
    "440106": "天河区",
    "440111": "白云区",
    "440112": "黄埔区",
    "440113": "番禺区",
    "440114": "花都区",
    "440115": "南沙区",
    "440117": "从化区",
    "440118": "增城区",
}

# A community is a block of COMMUNITY_SIDE x COMMUNITY_SIDE cells; a street a block of
# STREET_SIDE x STREET_SIDE communities. Real hierarchies are irregular; blocks keep codes compact
# and spatially coherent, which is what the index and the tests care about.
COMMUNITY_SIDE = 4
STREET_SIDE = 3
# Interior grid vertices move by up to this fraction of a cell, so cells are irregular convex
# quadrilaterals: lookups exercise the exact containment test, not just bounding boxes. Below
# 0.25 every quadrilateral stays convex; the box outline is never moved.
JITTER = 0.15


def _shape(box: tuple[float, float, float, float], cells: int) -> tuple[int, int]:
    """Columns and rows giving about ``cells`` square-ish cells in the box (in metres, not degrees)."""
    min_lon, min_lat, max_lon, max_lat = box
    width_m = (max_lon - min_lon) * METRES_PER_DEGREE * math.cos(math.radians((min_lat + max_lat) / 2))
    height_m = (max_lat - min_lat) * METRES_PER_DEGREE
    columns = max(1, round(math.sqrt(cells * width_m / height_m)))
    rows = max(1, round(cells / columns))
    return columns, rows


def demo_cells(cells_per_district: int = 400) -> list[GridCell]:
    """About ``cells_per_district`` cells per district, tiling each box in ``DISTRICT_BOXES``.

    Demo cells are far larger than the standard's ~10,000 m² (100 m x 100 m): at the default 400
    per district they are several hundred metres to a few kilometres across, since a 100 m grid of
    the whole city would be hundreds of thousands of cells. Codes follow the standard layout:
    district + street (001..) + community (001..) + sequence (001..); names read like
    "天河区 第3街道 第2社区 网格007". The output is identical on every call and Python version
    (seeded per district), and the cells are listed in code order.
    """
    if cells_per_district < 1:
        raise ValueError("cells_per_district must be at least 1")
    cells: list[GridCell] = []
    for district, box in DISTRICT_BOXES.items():
        cells.extend(_district_cells(district, box, cells_per_district))
    cells.sort(key=lambda cell: cell.code.value)
    return cells


def _district_cells(district: str, box: tuple[float, float, float, float], wanted: int) -> list[GridCell]:
    min_lon, min_lat, max_lon, max_lat = box
    columns, rows = _shape(box, wanted)
    step_x = (max_lon - min_lon) / columns
    step_y = (max_lat - min_lat) / rows
    rng = random.Random(int(district))

    def vertex(i: int, j: int, dx: float, dy: float) -> tuple[float, float]:
        x = max_lon if i == columns else min_lon + i * step_x
        y = max_lat if j == rows else min_lat + j * step_y
        if 0 < i < columns:
            x += dx * step_x
        if 0 < j < rows:
            y += dy * step_y
        return x, y

    vertices = [
        [vertex(i, j, rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)) for j in range(rows + 1)]
        for i in range(columns + 1)
    ]
    street_columns = math.ceil(columns / (COMMUNITY_SIDE * STREET_SIDE))
    district_name = DISTRICT_NAMES[district]
    cells: list[GridCell] = []
    for i in range(columns):
        for j in range(rows):
            ci, cj = i // COMMUNITY_SIDE, j // COMMUNITY_SIDE  # community block
            si, sj = ci // STREET_SIDE, cj // STREET_SIDE  # street block
            street = sj * street_columns + si + 1
            community = (cj % STREET_SIDE) * STREET_SIDE + ci % STREET_SIDE + 1
            sequence = (j % COMMUNITY_SIDE) * COMMUNITY_SIDE + i % COMMUNITY_SIDE + 1
            if street > 999:
                raise ValueError("too many cells for 3-digit street numbers; ask for fewer per district")
            ring = (vertices[i][j], vertices[i + 1][j], vertices[i + 1][j + 1], vertices[i][j + 1])
            street_name = f"第{street}街道"
            community_name = f"第{community}社区"
            cells.append(
                GridCell(
                    code=GridCode(f"{district}{street:03d}{community:03d}{sequence:03d}"),
                    name=f"{district_name} {street_name} {community_name} 网格{sequence:03d}",
                    polygons=(Polygon(ring),),
                    street_name=street_name,
                    community_name=community_name,
                )
            )
    return cells


def _benchmark(cells_per_district: int) -> None:  # pragma: no cover - manual tool
    """Build a city-sized demo grid and time lookups; prints the figures, asserts nothing."""
    import time

    from services.case.domain.grid import GridIndex

    started = time.perf_counter()
    cells = demo_cells(cells_per_district)
    made = time.perf_counter()
    index = GridIndex.build(cells, validate=False)
    built = time.perf_counter()
    GridIndex.build(cells, validate=True)
    validated = time.perf_counter()
    areas = sorted(cell.area_m2 for cell in cells)
    print(f"cells: {len(cells):,} (median area {areas[len(areas) // 2]:,.0f} m²)")
    print(f"generate + validate geometry: {made - started:.2f} s")
    print(f"index build: {built - made:.2f} s; with overlap validation: {validated - built:.2f} s")

    rng = random.Random(42)
    boxes = list(DISTRICT_BOXES.values())
    inside = []
    for _ in range(200_000):
        x0, y0, x1, y1 = rng.choice(boxes)
        inside.append((rng.uniform(x0, x1), rng.uniform(y0, y1)))
    anywhere = [(rng.uniform(112.95, 114.05), rng.uniform(22.55, 23.95)) for _ in range(200_000)]
    for label, points in (
        ("points inside district boxes", inside),
        ("points anywhere in the city", anywhere),
    ):
        locate = index.locate
        best = math.inf
        hits = 0
        for _ in range(3):
            t0 = time.perf_counter()
            hits = sum(1 for lon, lat in points if locate(lon, lat) is not None)
            best = min(best, time.perf_counter() - t0)
        print(f"{label}: {len(points) / best:,.0f} lookups/s ({hits:,} of {len(points):,} on the grid)")


if __name__ == "__main__":  # pragma: no cover
    import sys

    _benchmark(int(sys.argv[1]) if len(sys.argv) > 1 else 9_091)
