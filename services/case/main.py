"""Composition root of the case service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

import functools

from fastapi import FastAPI
from pydantic import Field

from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from services.case import admin_api, api, grid_api, units_api
from services.case.catalogue import (
    CalendarHolder,
    merge_calendar_documents,
    shipped_calendar_documents,
    sync_shipped_catalogue,
)
from services.case.domain.demo_grid import demo_cells
from services.case.domain.grid import GridCell
from services.case.events import PUBLISHES
from services.case.grid_store import GridHolder, seed_demo_grid_if_empty
from services.case.overdue import escalate_overdue
from services.case.units import sync_shipped_units


@functools.cache
def shipped_demo_cells() -> list[GridCell]:
    """The demo grid (deterministic and immutable, so built once per process)."""
    return demo_cells()


class CaseSettings(ServiceSettings):
    service_name: str = "case"
    overdue_scan_seconds: float = 30.0
    # A new report of the same small class this close to an open case is a likely duplicate.
    duplicate_radius_m: float = Field(default=50.0, ge=0, le=1000)
    # How often each replica checks whether another one imported a new grid.
    grid_refresh_seconds: float = 10.0
    # Store the synthetic demo grid at startup when no grid was ever imported.
    seed_demo_grid: bool = True


def create_app(settings: CaseSettings | None = None) -> FastAPI:
    settings = settings or CaseSettings()
    calendars = CalendarHolder(calendar=merge_calendar_documents(shipped_calendar_documents(), []))
    grid = GridHolder()

    def setup(runtime: Runtime) -> None:
        async def prepare() -> None:
            await sync_shipped_catalogue(runtime.db)
            await calendars.reload(runtime.db)
            await sync_shipped_units(runtime.db)
            cells = shipped_demo_cells() if settings.seed_demo_grid else []
            if cells and await seed_demo_grid_if_empty(runtime.db, cells):
                await grid.adopt(runtime.db, cells)
            else:
                await grid.reload(runtime.db)

        async def scan() -> int:
            return await escalate_overdue(runtime)

        async def refresh_grid() -> int:
            return await grid.refresh_if_changed(runtime.db)

        runtime.on_startup = [prepare]
        runtime.jobs = [
            PeriodicJob("overdue-scan", settings.overdue_scan_seconds, scan),
            PeriodicJob("grid-refresh", settings.grid_refresh_seconds, refresh_grid),
        ]

    app = create_service_app(
        settings,
        title="CityGrid case service",
        description="Digital city-management cases: report → register → dispatch → handle → verify → close.",
        routers=[api.router, admin_api.router, grid_api.router, units_api.router],
        publishes=PUBLISHES,
        runtime_setup=setup,
    )
    app.state.calendars = calendars
    app.state.grid = grid
    app.state.duplicate_radius_m = settings.duplicate_radius_m
    return app


def main() -> None:
    settings = CaseSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
