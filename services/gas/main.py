"""Composition root of the gas service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract import scopes
from services.gas import api, figures, partitions, retention, safety_api
from services.gas.bulk import DEFAULT_MAX_BYTES
from services.gas.epcis import api as epcis_api
from services.gas.events import PUBLISHES
from services.gas.metrics import GasMetrics
from services.gas.registry import rules_today


class GasSettings(ServiceSettings):
    service_name: str = "gas"
    # Scans and fill checks are kept this long (the rules ask for two years at least).
    record_retention_days: int = Field(default=3 * 365, ge=partitions.MINIMUM_RETENTION_DAYS)
    figures_seconds: float = 60.0
    partition_check_seconds: float = 3600.0
    cylinder_import_max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)


def create_app(settings: GasSettings | None = None) -> FastAPI:
    settings = settings or GasSettings()
    holder: dict[str, GasMetrics] = {}

    def setup(runtime: Runtime) -> None:
        metrics = GasMetrics(runtime.metrics.registry)
        holder["metrics"] = metrics

        async def today_partitions() -> int:
            from citygrid.db import transaction_time

            async with runtime.db() as session:
                today = rules_today(await transaction_time(session))
            created = await partitions.ensure_partitions(runtime.db, today)
            dropped = await partitions.drop_expired_partitions(
                runtime.db, today, settings.record_retention_days
            )
            return created + dropped

        async def prepare() -> None:
            # Before the first request: a scan of today must find its partition.
            await today_partitions()

        async def fleet() -> int:
            await figures.refresh(runtime.db, metrics, every_seconds=settings.figures_seconds)
            return 0

        runtime.on_startup = [prepare]
        runtime.jobs = [
            PeriodicJob(
                "gas-partitions", settings.partition_check_seconds, today_partitions, batch_size=10_000
            ),
            PeriodicJob("gas-figures", settings.figures_seconds, fleet),
            PeriodicJob("gas-violations-expiry", 3600.0, lambda: figures.expire_violations(runtime.db)),
            PeriodicJob(
                "gas-retention",
                600.0,
                lambda: retention.purge_once(runtime.db, record_days=settings.record_retention_days),
                batch_size=retention.BATCH_SIZE,
            ),
        ]

    app = create_service_app(
        settings,
        title="CityGrid gas service",
        description=(
            "LPG cylinder one-code traceability: the registry, scans along the lifecycle, the fill "
            "check that stops illegal cylinders, trace and recall, and leak incidents."
        ),
        routers=[api.router, safety_api.router],
        open_routers=[api.file_router, epcis_api.router],
        publishes=PUBLISHES,
        runtime_setup=setup,
        scopes=scopes.GAS,  # the declaration the gateway checks too
        body_limits={"/v1/cylinders/import-file": settings.cylinder_import_max_bytes},
    )
    app.state.gas_metrics = holder["metrics"]
    return app


def main() -> None:
    settings = GasSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
