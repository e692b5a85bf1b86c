"""Composition root of the case service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, model_validator

from citygrid.blobs import FilesystemBlobStore
from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract import scopes
from services.case import (
    admin_api,
    api,
    evaluation_api,
    evidence_api,
    extensions_api,
    grid_api,
    intake,
    live_api,
    mobile_api,
    open311,
    units_api,
)
from services.case.catalogue import (
    CalendarHolder,
    merge_calendar_documents,
    shipped_calendar_documents,
    sync_shipped_catalogue,
)
from services.case.context import FieldConfig
from services.case.domain.demo_grid import demo_cells
from services.case.domain.grid import GridCell
from services.case.evaluation import TodayGauges, refresh_today_gauges
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
    # A city's whole grid file, streamed to disk (the route's own limit, not the JSON body limit).
    grid_import_max_bytes: int = Field(default=67_108_864, ge=1)
    overdue_scan_seconds: float = 30.0
    # Evidence photos: where the filesystem blob store keeps them (development: under the data dir),
    # the largest photo accepted, and how far from the case's point a check-in is flagged.
    blob_dir: Path | None = None
    evidence_max_bytes: int = 5_242_880
    check_in_radius_m: float = 200.0

    @model_validator(mode="after")
    def _photos_need_a_place(self) -> CaseSettings:
        if self.environment == "production" and self.blob_dir is None:
            raise ValueError("CITYGRID_BLOB_DIR is required in production")
        if self.evidence_max_bytes > self.max_image_body_bytes:
            raise ValueError("CITYGRID_EVIDENCE_MAX_BYTES must not exceed CITYGRID_MAX_IMAGE_BODY_BYTES")
        return self

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or Path(".data") / "blobs" / self.service_name

    # A new report of the same small class this close to an open case is a likely duplicate.
    duplicate_radius_m: float = Field(default=50.0, ge=0, le=1000)
    # How often each replica checks whether another one imported a new grid.
    grid_refresh_seconds: float = 10.0
    # Store the synthetic demo grid at startup when no grid was ever imported.
    seed_demo_grid: bool = True
    # How often each replica checks whether another one changed the work calendar (one primary-key
    # read when nothing changed).
    calendar_refresh_seconds: float = Field(default=5.0, gt=0)
    # Today's gauges: one replica recomputes the stored figures once they are older than
    # evaluation_gauges_seconds; every replica reads them every evaluation_gauges_read_seconds.
    evaluation_gauges_seconds: float = Field(default=60.0, gt=0)
    evaluation_gauges_read_seconds: float = Field(default=15.0, gt=0)
    # The statement limit of a client's evaluation (GET /v1/evaluation), in seconds: below the
    # gateway's upstream timeout (CITYGRID_UPSTREAM_TIMEOUT, 10 s), so the client gets a 503
    # evaluation.timeout problem instead of a 504 while the query runs on; 0: the analytics limit.
    evaluation_timeout_seconds: float = Field(default=8.0, ge=0)

    @property
    def evaluation_statement_timeout_seconds(self) -> float:
        """The limit a client's evaluation runs under: the shorter of its own and the analytics one."""
        limits = [
            s for s in (self.evaluation_timeout_seconds, self.db_analytics_statement_timeout_seconds) if s > 0
        ]
        return min(limits, default=0.0)


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

        async def refresh_calendar() -> int:
            return await calendars.refresh_if_changed(runtime.db)

        gauges = TodayGauges(runtime.metrics.registry)
        figures_max_age = timedelta(seconds=settings.evaluation_gauges_seconds)

        async def evaluate_today() -> int:
            return await refresh_today_gauges(runtime, gauges, max_age=figures_max_age)

        runtime.on_startup = [prepare]
        runtime.jobs = [
            PeriodicJob("overdue-scan", settings.overdue_scan_seconds, scan),
            PeriodicJob("grid-refresh", settings.grid_refresh_seconds, refresh_grid),
            PeriodicJob("calendar-refresh", settings.calendar_refresh_seconds, refresh_calendar),
            PeriodicJob("evaluation-gauges", settings.evaluation_gauges_read_seconds, evaluate_today),
        ]
        runtime.live_feeds = [live_api.case_feed(settings, runtime.metrics)]

    app = create_service_app(
        settings,
        title="CityGrid case service",
        description="Digital city-management cases: report → register → dispatch → handle → verify → close.",
        # The live route first: `/cases/live` is no `/cases/{case_id}`.
        routers=[
            live_api.router,
            api.router,
            admin_api.router,
            extensions_api.router,
            mobile_api.router,
            units_api.router,
            evaluation_api.router,
        ],
        # Routes that check their own content types (Open311 forms, photos, a city's grid file).
        open_routers=[open311.router, evidence_api.router, grid_api.router],
        body_limits={"/v1/admin/grid/import": settings.grid_import_max_bytes},
        publishes=PUBLISHES,
        consumers=intake.consumers(calendars, grid, settings.duplicate_radius_m),
        runtime_setup=setup,
        scopes=scopes.CASE,  # the declaration the gateway checks too
    )
    app.state.calendars = calendars
    app.state.evaluation_timeout_seconds = settings.evaluation_statement_timeout_seconds
    app.state.field = FieldConfig(
        blobs=FilesystemBlobStore(settings.blob_root),
        evidence_max_bytes=settings.evidence_max_bytes,
        check_in_radius_m=settings.check_in_radius_m,
    )
    app.state.grid = grid
    app.state.duplicate_radius_m = settings.duplicate_radius_m
    return app


def main() -> None:
    settings = CaseSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
