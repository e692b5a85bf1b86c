"""Composition root of the waste service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from pydantic import Field

from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract import scopes
from services.waste import outcomes, retention
from services.waste.chain import api as chain_api
from services.waste.chain import retention as chain_retention
from services.waste.chain.jobs import ChainPart
from services.waste.chain.rounds import ChainConfig
from services.waste.events import PUBLISHES
from services.waste.fleet import api as fleet_api
from services.waste.fleet import models as fleet_models
from services.waste.fleet.listener import Fleet
from services.waste.metrics import WasteMetrics
from services.waste.registry import api as registry_api
from services.waste.supervision import api as supervision_api
from services.waste.supervision import cameras
from services.waste.supervision.service import Tally


class WasteSettings(ServiceSettings):
    service_name: str = "waste"
    # Violations: a regulator's records. The AI boxes' events: the intake's log.
    record_retention_days: int = Field(default=retention.RECORD_DAYS, ge=365)
    bin_event_retention_days: int = Field(default=retention.BIN_EVENT_DAYS, ge=30)
    retention_check_seconds: float = Field(default=600.0, gt=0)
    # The collection chain: its round (trips, checks), today's figures, its records' retention.
    chain_round_seconds: float = Field(default=15.0, gt=0)
    chain_figures_seconds: float = Field(default=60.0, gt=0)
    chain_evidence_retention_days: int = Field(default=chain_retention.EVIDENCE_DAYS, ge=90)
    # How long after a collection window closes it is judged: a pickup sent later than this (a
    # terminal offline for longer) comes after its missed collection was raised.
    missed_collection_grace_minutes: float = Field(default=120.0, ge=0, le=7 * 24 * 60)
    # The fleet's JT/T 808 listener (its own Kubernetes Service), its limits, and the positions.
    jt808_host: str = "0.0.0.0"
    jt808_port: int = Field(default=8809, ge=0, le=65535)
    jt808_idle_seconds: float = Field(default=300.0, gt=0)
    jt808_max_failed_logins: int = Field(default=20, ge=1)
    jt808_failed_login_window_seconds: float = Field(default=600.0, gt=0)
    terminal_sweep_seconds: float = Field(default=30.0, gt=0)
    position_retention_days: int = Field(default=90, ge=fleet_models.MINIMUM_RETENTION_DAYS)
    partition_check_seconds: float = Field(default=3600.0, gt=0)
    # How often the leading replica reads the new positions for the vehicles' movements.
    movements_round_seconds: float = Field(default=5.0, gt=0)


def create_app(settings: WasteSettings | None = None) -> FastAPI:
    settings = settings or WasteSettings()
    metrics_holder: dict[str, WasteMetrics] = {}
    fleet_holder: dict[str, Fleet] = {}
    chain = ChainPart(
        round_seconds=settings.chain_round_seconds,
        figures_seconds=settings.chain_figures_seconds,
        retention_seconds=settings.retention_check_seconds,
        record_days=settings.record_retention_days,
        evidence_days=settings.chain_evidence_retention_days,
        config=ChainConfig(missed_grace=timedelta(minutes=settings.missed_collection_grace_minutes)),
    )

    def counted(tally: Tally) -> None:
        metrics = metrics_holder.get("metrics")
        if metrics is None:
            return
        for outcome, count in tally.outcomes.items():
            metrics.bin_events.labels(outcome).inc(count)
        for (kind, severity, source), count in tally.violations.items():
            metrics.violations.labels(kind, severity, source).inc(count)

    def setup(runtime: Runtime) -> None:
        metrics_holder["metrics"] = WasteMetrics(runtime.metrics.registry)
        fleet = fleet_holder["fleet"] = Fleet.of(runtime, settings)
        runtime.on_startup = [fleet.start]
        runtime.metrics.scrape_hooks.append(fleet.gauges)
        runtime.jobs = [
            *fleet.jobs(settings),
            PeriodicJob(
                "waste-retention",
                settings.retention_check_seconds,
                lambda: retention.purge_once(
                    runtime.db,
                    record_days=settings.record_retention_days,
                    bin_event_days=settings.bin_event_retention_days,
                ),
                batch_size=retention.BATCH_SIZE,
            ),
            *chain.jobs(runtime),
        ]

    app = create_service_app(
        settings,
        title="CityGrid waste service",
        description=(
            "Sorted waste: the register of drop-off points with their bins, collection points, "
            "collection and cleaning vehicles, end facilities, routes and schedules; bin-side AI "
            "supervision of the drop-off points, whose violations become cases."
        ),
        routers=[
            registry_api.router,
            supervision_api.bin_events_router(counted),
            supervision_api.router,
            chain_api.intake_router(chain.counted),
            chain_api.router,
            fleet_api.router,
        ],
        publishes=PUBLISHES,
        consumers=[cameras.consumer(counted), outcomes.consumer()],
        runtime_setup=setup,
        scopes=scopes.WASTE,
    )
    app.state.waste_metrics = metrics_holder["metrics"]
    app.state.fleet = fleet_holder["fleet"]
    app.state.fleet_positions = fleet_holder["fleet"].positions
    app.state.chain = chain
    return app


def main() -> None:
    settings = WasteSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
