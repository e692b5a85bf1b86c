"""Where a new report lies on the unit grid, and which open case it most likely repeats.

The grid decides the place: when the point lies in a cell, the case takes that cell's grid,
community, street and district codes, even if the reporter named another district (a reporter picks
a district from a list; the point is measured). The disagreement is kept in the report's history
note. A point outside every cell keeps the reporter's district and no grid codes: such a case still
goes through the workflow; only dispatch rules naming a street, community or cell cannot match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from contract.case import CaseStatus
from services.case.domain.dispatch_rules import Place
from services.case.domain.grid import METRES_PER_DEGREE, GridIndex, haversine_m
from services.case.domain.workflow import OPEN_STATUSES
from services.case.models import OPEN_CASE_SQL, Case


@dataclass(frozen=True)
class Resolution:
    place: Place
    cell_name: str | None = None
    note: str | None = None  # why the district differs from the reporter's, if it does


def resolve_place(grid: GridIndex | None, lon: float, lat: float, reported_district: str) -> Resolution:
    cell = grid.locate(lon, lat) if grid is not None else None
    if cell is None:
        return Resolution(Place(reported_district))
    code = cell.code
    place = Place(code.district, code.street, code.community, code.value)
    note = None
    if code.district != reported_district:
        note = (
            f"reported in district {reported_district}; the point lies in grid {code.value} "
            f"of district {code.district}, which the case follows"
        )
    return Resolution(place, cell.name, note)


def place_of(case: Case) -> Place:
    return Place(case.district_code, case.street_code, case.community_code, case.grid_code)


async def likely_original(session: AsyncSession, case: Case, radius_m: float) -> Case | None:
    """The open case of the same small class nearest to this one within ``radius_m`` metres.

    A registered case is preferred over one still awaiting registration, and an original over a
    case already flagged as a duplicate itself, so reports pile onto one case rather than a chain.
    The query reads the partial index (category, latitude) of open cases, then a longitude band;
    haversine settles the circle. Only the case's own district counts: each district works its own
    cases, and a report flagged or merged across a boundary would show one district's reporter
    another district's case.
    """
    if radius_m <= 0:
        return None
    dlat = radius_m / METRES_PER_DEGREE
    dlon = radius_m / (METRES_PER_DEGREE * max(math.cos(math.radians(case.lat)), 1e-6))
    candidates = await session.scalars(
        select(Case).where(
            Case.category_code == case.category_code,
            Case.district_code == case.district_code,
            text(OPEN_CASE_SQL),  # literally the partial index's predicate, so the planner uses it
            Case.lat.between(case.lat - dlat, case.lat + dlat),
            Case.lon.between(case.lon - dlon, case.lon + dlon),
            Case.id != case.id,
        )
    )
    near = [
        (candidate, distance)
        for candidate in candidates.all()
        if (distance := haversine_m(case.lon, case.lat, candidate.lon, candidate.lat)) <= radius_m
    ]
    if not near:
        return None
    best, _ = min(
        near,
        key=lambda item: (
            item[0].status is CaseStatus.REPORTED,
            item[0].likely_duplicate_of is not None,
            item[1],
            item[0].created_at,
        ),
    )
    return best


def mergeable(case: Case) -> bool:
    """Whether a report may be merged into this case (registered and still open)."""
    return case.status in OPEN_STATUSES and case.status is not CaseStatus.REPORTED
