"""The fleet's share of the service's composition: its intake, its JT/T 808 listener, the periodic
jobs of its positions (partitions, the sweep of released terminals, the movements read from them),
built once the runtime exists."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from citygrid.clock import CITY_TIMEZONE
from citygrid.fleet.terminals import RegisteredTerminals
from citygrid.jobs import PeriodicJob
from citygrid.jt808.server import Jt808Listener, LoginLimiter
from citygrid.runtime import Runtime
from services.waste.fleet.models import PARTITIONS
from services.waste.fleet.movements import MovementsConfig, MovementsRound
from services.waste.fleet.positions import FleetPositions
from services.waste.metrics import FleetMetrics
from services.waste.models import Vehicle

log = logging.getLogger("services.waste.fleet")


class FleetSettings(Protocol):
    """What the fleet takes of the service's settings."""

    @property
    def jt808_host(self) -> str: ...
    @property
    def jt808_port(self) -> int: ...
    @property
    def jt808_idle_seconds(self) -> float: ...
    @property
    def jt808_max_failed_logins(self) -> int: ...
    @property
    def jt808_failed_login_window_seconds(self) -> float: ...
    @property
    def terminal_sweep_seconds(self) -> float: ...
    @property
    def position_retention_days(self) -> int: ...
    @property
    def partition_check_seconds(self) -> float: ...
    @property
    def movements_round_seconds(self) -> float: ...


@dataclass
class Fleet:
    runtime: Runtime
    metrics: FleetMetrics
    positions: FleetPositions
    terminals: RegisteredTerminals
    listener: Jt808Listener
    movements: MovementsRound
    retention_days: int

    @classmethod
    def of(cls, runtime: Runtime, settings: FleetSettings, movements: MovementsConfig | None = None) -> Fleet:
        metrics = FleetMetrics(runtime.metrics.registry)
        positions = FleetPositions(runtime, metrics)
        terminals = RegisteredTerminals(runtime, Vehicle, positions.from_terminal)
        frames: dict[str, Any] = {}

        def count_frame(outcome: str) -> None:
            counter = frames.get(outcome)
            if counter is None:
                counter = frames[outcome] = metrics.frames.labels(outcome)
            counter.inc()

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
        return cls(
            runtime,
            metrics,
            positions,
            terminals,
            listener,
            MovementsRound(runtime, metrics, movements),
            settings.position_retention_days,
        )

    async def partitions_round(self) -> int:
        today = datetime.now(CITY_TIMEZONE).date()
        created = await PARTITIONS.ensure(self.runtime.db, today)
        dropped = await PARTITIONS.drop_expired(self.runtime.db, today, self.retention_days)
        return created + dropped

    async def start(self) -> None:
        # Before the first report: today's partition must exist.
        await self.partitions_round()
        self.runtime.tasks.append(
            asyncio.create_task(self.positions.writer.run(), name="waste-position-writer")
        )
        await self.listener.start()
        host, port = self.listener.address
        log.info("JT/T 808 listener on tcp://%s:%d", host, port)
        self.runtime.tasks.append(asyncio.create_task(self.listener.serve_forever(), name="waste-jt808"))

    async def gauges(self) -> None:
        self.metrics.pending.set(self.positions.writer.pending_rows)
        self.metrics.terminals_connected.set(self.listener.counters.connected)

    def jobs(self, settings: FleetSettings) -> list[PeriodicJob]:
        return [
            PeriodicJob(
                "waste-partitions", settings.partition_check_seconds, self.partitions_round, batch_size=10_000
            ),
            # Every replica its own connections.
            PeriodicJob(
                "waste-terminal-sweep",
                settings.terminal_sweep_seconds,
                lambda: self.terminals.sweep(self.listener),
            ),
            PeriodicJob(
                "waste-movements-round",
                settings.movements_round_seconds,
                self.movements.round,
                batch_size=self.movements.config.chunk,
                on_stop=self.movements.release,
            ),
        ]
