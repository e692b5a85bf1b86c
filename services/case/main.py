"""Composition root of the case service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

from fastapi import FastAPI

from citygrid.http import create_service_app
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from services.case import api
from services.case.events import PUBLISHES


class CaseSettings(ServiceSettings):
    service_name: str = "case"


def create_app(settings: CaseSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or CaseSettings(),
        title="CityGrid case service",
        description="Digital city-management cases: report → register → dispatch → handle → verify → close.",
        routers=[api.router],
        publishes=PUBLISHES,
    )


def main() -> None:
    settings = CaseSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
