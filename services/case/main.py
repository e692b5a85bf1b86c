"""Composition root of the case service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

from fastapi import FastAPI

from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from services.case import admin_api, api, evaluation_api
from services.case.catalogue import (
    CalendarHolder,
    merge_calendar_documents,
    shipped_calendar_documents,
    sync_shipped_catalogue,
)
from services.case.evaluation import TodayGauges, refresh_today_gauges
from services.case.events import PUBLISHES
from services.case.overdue import escalate_overdue


class CaseSettings(ServiceSettings):
    service_name: str = "case"
    overdue_scan_seconds: float = 30.0
    evaluation_gauges_seconds: float = 60.0


def create_app(settings: CaseSettings | None = None) -> FastAPI:
    settings = settings or CaseSettings()
    calendars = CalendarHolder(calendar=merge_calendar_documents(shipped_calendar_documents(), []))

    def setup(runtime: Runtime) -> None:
        async def prepare() -> None:
            await sync_shipped_catalogue(runtime.db)
            await calendars.reload(runtime.db)

        async def scan() -> int:
            return await escalate_overdue(runtime)

        gauges = TodayGauges(runtime.metrics.registry)

        async def evaluate_today() -> int:
            return await refresh_today_gauges(runtime, gauges)

        runtime.on_startup = [prepare]
        runtime.jobs = [
            PeriodicJob("overdue-scan", settings.overdue_scan_seconds, scan),
            PeriodicJob("evaluation-gauges", settings.evaluation_gauges_seconds, evaluate_today),
        ]

    app = create_service_app(
        settings,
        title="CityGrid case service",
        description="Digital city-management cases: report → register → dispatch → handle → verify → close.",
        routers=[api.router, admin_api.router, evaluation_api.router],
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
