"""Composition root of the case service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

from fastapi import FastAPI

from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from services.case import admin_api, api, live_api
from services.case.catalogue import (
    CalendarHolder,
    merge_calendar_documents,
    shipped_calendar_documents,
    sync_shipped_catalogue,
)
from services.case.events import PUBLISHES
from services.case.overdue import escalate_overdue


class CaseSettings(ServiceSettings):
    service_name: str = "case"
    overdue_scan_seconds: float = 30.0


def create_app(settings: CaseSettings | None = None) -> FastAPI:
    settings = settings or CaseSettings()
    calendars = CalendarHolder(calendar=merge_calendar_documents(shipped_calendar_documents(), []))

    def setup(runtime: Runtime) -> None:
        async def prepare() -> None:
            await sync_shipped_catalogue(runtime.db)
            await calendars.reload(runtime.db)

        async def scan() -> int:
            return await escalate_overdue(runtime)

        runtime.on_startup = [prepare]
        runtime.jobs = [PeriodicJob("overdue-scan", settings.overdue_scan_seconds, scan)]
        runtime.live_feeds = [live_api.case_feed(settings, runtime.metrics)]

    app = create_service_app(
        settings,
        title="CityGrid case service",
        description="Digital city-management cases: report → register → dispatch → handle → verify → close.",
        # The live route first: `/cases/live` is no `/cases/{case_id}`.
        routers=[live_api.router, api.router, admin_api.router],
        publishes=PUBLISHES,
        runtime_setup=setup,
    )
    app.state.calendars = calendars
    return app


def main() -> None:
    settings = CaseSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
