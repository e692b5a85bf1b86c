"""This replica's intake of the fleet's positions: the kit's checks and group writer over the waste
database's positions table, counted by intake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from citygrid.fleet.intake import PositionIntake, Refused
from citygrid.fleet.reports import Report
from citygrid.fleet.writer import PositionWriter
from citygrid.runtime import Runtime
from services.waste.fleet.models import DAYS_BACK, POSITION_COLUMNS, PositionSource
from services.waste.metrics import FleetMetrics


@dataclass
class FleetPositions:
    runtime: Runtime
    metrics: FleetMetrics
    writer: PositionWriter = field(init=False)
    intake: PositionIntake = field(init=False)

    def __post_init__(self) -> None:
        self._stored = {source: self.metrics.positions.labels(source.value) for source in PositionSource}
        self.writer = PositionWriter(
            lambda: self.runtime.db, "positions", POSITION_COLUMNS, on_committed=self._committed
        )
        self.intake = PositionIntake(self.writer, DAYS_BACK)

    async def store(
        self, reports: Sequence[Report], *, source: PositionSource, blind_area: bool = False
    ) -> list[Refused]:
        """Store the acceptable reports; returns each refused one. Returns once the stored ones are
        committed; raises when they could not be (503: send them again)."""
        stored, refused = await self.intake.store(reports, source=source.value, blind_area=blind_area)
        for _, code, _ in refused:
            self.metrics.positions_refused.labels(source.value, code).inc()
        self._stored[source].inc(stored)
        return refused

    async def from_terminal(self, reports: Sequence[Report], blind_area: bool) -> None:
        """A terminal's reports (``citygrid.fleet.terminals``): a refused one (no fix, out of range)
        is still acknowledged, since sent again it would not change."""
        await self.store(reports, source=PositionSource.JT808, blind_area=blind_area)

    async def _committed(self, rows: Sequence[tuple[Any, ...]], seconds: float) -> None:
        self.metrics.batch_seconds.observe(seconds)
