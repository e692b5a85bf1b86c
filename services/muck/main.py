"""Composition root of the muck service: ``create_app()`` for uvicorn and tests, ``main()`` to run."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from pydantic import Field

from citygrid.fleet.terminals import RegisteredTerminals
from citygrid.http import create_service_app
from citygrid.jobs import PeriodicJob
from citygrid.jt808.server import Jt808Listener, LoginLimiter
from citygrid.runtime import Runtime
from citygrid.serve import serve
from citygrid.settings import ServiceSettings
from contract import scopes
from services.muck import gates, partitions, retention
from services.muck.domain.windows import CITY_TZ
from services.muck.events import PUBLISHES
from services.muck.live import api as live_api
from services.muck.live.feed import LivePositions
from services.muck.manifests import api as manifests_api
from services.muck.manifests import service as manifests
from services.muck.metrics import MuckMetrics
from services.muck.models import Truck
from services.muck.positions import api as positions_api
from services.muck.positions.service import Positions
from services.muck.registry import api as registry_api
from services.muck.rules import api as rules_api
from services.muck.rules.service import RulesConfig, TransportRules, offline_round

log = logging.getLogger("services.muck")
ACTIVE_WITHIN = timedelta(minutes=10)


class MuckSettings(ServiceSettings):
    service_name: str = "muck"
    # The JT/T 808 listener the trucks' terminals connect to (its own Kubernetes Service).
    jt808_host: str = "0.0.0.0"
    jt808_port: int = Field(default=8808, ge=0, le=65535)
    # A terminal sends a heartbeat every minute or so; a connection silent this long is closed.
    jt808_idle_seconds: float = Field(default=300.0, gt=0)
    # Failed registrations and authentications an address may make in the window (per replica),
    # and how often each replica closes the connections of terminals released by the register.
    jt808_max_failed_logins: int = Field(default=20, ge=1)
    jt808_failed_login_window_seconds: float = Field(default=600.0, gt=0)
    terminal_sweep_seconds: float = Field(default=30.0, gt=0)
    position_retention_days: int = Field(default=180, ge=partitions.MINIMUM_RETENTION_DAYS)
    partition_check_seconds: float = 3600.0
    # The transport rules: how often the leading replica evaluates new positions, how long its lease
    # lasts without a round (another replica takes over after it), how often offline terminals are sought.
    rules_round_seconds: float = Field(default=1.0, gt=0)
    rules_lease_seconds: float = Field(default=15.0, gt=0)
    offline_check_seconds: float = Field(default=60.0, gt=0)
    # Violations and finished manifests: a regulator's records.
    record_retention_days: int = Field(default=retention.RECORD_DAYS, ge=365)
    retention_check_seconds: float = Field(default=600.0, gt=0)


def city_today() -> datetime:
    return datetime.now(UTC).astimezone(CITY_TZ)


def create_app(settings: MuckSettings | None = None) -> FastAPI:
    settings = settings or MuckSettings()
    holder: dict[str, object] = {}

    def setup(runtime: Runtime) -> None:
        metrics = MuckMetrics(runtime.metrics.registry)
        positions = Positions(runtime, metrics, days_back=partitions.DAYS_BACK)
        # The frame counter's series looked up once each (when first seen), not per frame.
        frames: dict[str, Any] = {}

        def count_frame(outcome: str) -> None:
            counter = frames.get(outcome)
            if counter is None:
                counter = frames[outcome] = metrics.frames.labels(outcome)
            counter.inc()

        # The trucks' terminals: registered against the register of trucks, reporting into the intake.
        terminals = RegisteredTerminals(runtime, Truck, positions.from_terminal)
        listener = Jt808Listener(
            terminals,
            host=settings.jt808_host,
            port=settings.jt808_port,
            idle_timeout=settings.jt808_idle_seconds,
            on_frame=count_frame,
            logins=LoginLimiter(
                max_failures=settings.jt808_max_failed_logins,
                window=settings.jt808_failed_login_window_seconds,
            ),
        )
        rules = TransportRules(
            runtime, metrics, RulesConfig(lease=timedelta(seconds=settings.rules_lease_seconds))
        )
        holder.update(metrics=metrics, positions=positions, listener=listener, rules=rules)
        # The live map: violations from the MUCK stream, positions from the latest map.
        runtime.live_feeds = [live_api.violation_feed(settings, runtime.metrics)]
        holder["live"] = LivePositions.following(positions.latest, runtime.metrics, runtime.tasks)

        async def partitions_round() -> int:
            today = city_today().date()
            created = await partitions.PARTITIONS.ensure(runtime.db, today)
            dropped = await partitions.PARTITIONS.drop_expired(
                runtime.db, today, settings.position_retention_days
            )
            return created + dropped

        async def start() -> None:
            # Before the first report: today's partition must exist, and the map hold the fleet.
            await partitions_round()
            async with runtime.reads() as session:
                loaded = await positions.load_latest(session)
            log.info("latest positions of %d trucks loaded", loaded)
            runtime.tasks.append(asyncio.create_task(positions.writer.run(), name="muck-position-writer"))
            runtime.tasks.append(asyncio.create_task(positions.listen(), name="muck-latest-positions"))
            await listener.start()
            host, port = listener.address
            log.info("JT/T 808 listener on tcp://%s:%d", host, port)
            runtime.tasks.append(asyncio.create_task(listener.serve_forever(), name="muck-jt808"))

        async def gauges() -> None:
            metrics.pending.set(positions.writer.pending_rows)
            metrics.terminals_connected.set(listener.counters.connected)
            recent = datetime.now(UTC) - ACTIVE_WITHIN
            metrics.active_trucks.set(sum(1 for latest in positions.latest if latest.at >= recent))

        runtime.on_startup = [start]
        runtime.metrics.scrape_hooks.append(gauges)
        runtime.jobs = [
            PeriodicJob(
                "muck-partitions", settings.partition_check_seconds, partitions_round, batch_size=10_000
            ),
            # A round of 10,000 positions or more means more are waiting: the next one starts at once.
            PeriodicJob("muck-rules", settings.rules_round_seconds, rules.round, batch_size=10_000),
            PeriodicJob(
                "muck-manifests-overdue", 60.0, lambda: manifests.flag_overdue(runtime), batch_size=500
            ),
            PeriodicJob("muck-manifests-gauge", 60.0, lambda: manifests.show_unfinished(runtime, metrics)),
            PeriodicJob(
                "muck-retention",
                settings.retention_check_seconds,
                lambda: retention.purge_once(runtime.db, record_days=settings.record_retention_days),
                batch_size=retention.BATCH_SIZE,
            ),
            PeriodicJob(
                "muck-offline", settings.offline_check_seconds, lambda: offline_round(runtime, metrics)
            ),
            # Every replica its own connections.
            PeriodicJob(
                "muck-terminal-sweep", settings.terminal_sweep_seconds, lambda: terminals.sweep(listener)
            ),
        ]

    def holder_positions() -> Positions:
        positions = holder["positions"]
        assert isinstance(positions, Positions), "the runtime is not set up"
        return positions

    app = create_service_app(
        settings,
        title="CityGrid muck service",
        description=(
            "Construction-waste transport: the register of companies, trucks, drivers, sites, routes and "
            "transport areas; trucks' positions over JT/T 808 and from vendors' platforms; tracks."
        ),
        routers=[
            registry_api.router,
            positions_api.router,
            rules_api.router,
            manifests_api.router,
            live_api.router,
        ],
        publishes=PUBLISHES,
        consumers=[gates.consumer(lambda: holder_positions().latest)],
        runtime_setup=setup,
        scopes=scopes.MUCK,
    )
    app.state.positions = holder["positions"]
    app.state.jt808 = holder["listener"]
    app.state.muck_metrics = holder["metrics"]
    app.state.rules = holder["rules"]
    app.state.live = holder["live"]
    return app


def main() -> None:
    settings = MuckSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
