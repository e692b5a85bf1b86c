"""What the case service keeps beside the kit's runtime: the work calendar its deadlines use, the
unit grid its points resolve on, the duplicate radius, field work's blob store and limits, and the
time an evaluation may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from citygrid.blobs import BlobStore
from services.case.catalogue import CalendarHolder
from services.case.grid_store import GridHolder


async def get_calendars(request: Request) -> CalendarHolder:
    holder: CalendarHolder = request.app.state.calendars
    return holder


Calendars = Annotated[CalendarHolder, Depends(get_calendars)]


async def get_grid(request: Request) -> GridHolder:
    holder: GridHolder = request.app.state.grid
    return holder


async def get_duplicate_radius(request: Request) -> float:
    radius: float = request.app.state.duplicate_radius_m
    return radius


async def get_evaluation_timeout(request: Request) -> float:
    seconds: float = request.app.state.evaluation_timeout_seconds
    return seconds


Grid = Annotated[GridHolder, Depends(get_grid)]
DuplicateRadius = Annotated[float, Depends(get_duplicate_radius)]
# The statement limit of a client's evaluation, in seconds (0: the analytics engine's own).
EvaluationTimeout = Annotated[float, Depends(get_evaluation_timeout)]


@dataclass(frozen=True)
class FieldConfig:
    blobs: BlobStore
    evidence_max_bytes: int
    check_in_radius_m: float


async def get_field_config(request: Request) -> FieldConfig:
    config: FieldConfig = request.app.state.field
    return config


FieldWork = Annotated[FieldConfig, Depends(get_field_config)]
