"""Reports in, stored, the latest map updated and shared: the one path both intakes take."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.fleet.intake import PositionIntake
from citygrid.fleet.reports import Report
from citygrid.fleet.writer import PositionWriter
from citygrid.runtime import Runtime
from services.muck.events import LATEST_POSITIONS_SUBJECT
from services.muck.metrics import MuckMetrics
from services.muck.models import POSITION_COLUMNS, PositionSource
from services.muck.positions.latest import LatestPositions

log = logging.getLogger("services.muck.positions")
SHARE_TIMEOUT = 0.5
ORIGIN_HEADER = "CityGrid-Origin"
SHARE_PIECE = 2_000  # about 200 KB of JSON


@dataclass
class Positions:
    """This replica's position intake: the group writer, the latest map, the limits of time."""

    runtime: Runtime
    metrics: MuckMetrics
    days_back: int
    latest: LatestPositions = field(default_factory=LatestPositions)
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)
    writer: PositionWriter = field(init=False)
    intake: PositionIntake = field(init=False)

    def __post_init__(self) -> None:
        self._stored = {source: self.metrics.positions.labels(source.value) for source in PositionSource}
        self.writer = PositionWriter(
            lambda: self.runtime.db, "positions", POSITION_COLUMNS, on_committed=self._committed
        )
        self.intake = PositionIntake(self.writer, self.days_back)

    async def store(
        self, reports: Sequence[Report], *, source: PositionSource, blind_area: bool = False
    ) -> list[tuple[int, str, str]]:
        """Store the acceptable reports; returns (index, code, detail) of each refused one. Returns
        once the stored ones are committed; raises when they could not be."""
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
        changed = self.latest.apply_rows(rows)
        newest = max((position.at for position in changed), default=None)
        if newest is not None:
            self.metrics.intake_lag.set(max(0.0, (datetime.now(UTC) - newest).total_seconds()))
        nats = self.runtime.nats
        if changed and nats is not None and nats.is_connected:
            # At most once, and briefly: the rows are stored whatever NATS does.
            try:
                async with asyncio.timeout(SHARE_TIMEOUT):
                    # In pieces well under NATS's 1 MiB message limit.
                    for start in range(0, len(changed), SHARE_PIECE):
                        piece = changed[start : start + SHARE_PIECE]
                        await nats.publish(
                            LATEST_POSITIONS_SUBJECT,
                            LatestPositions.encode(piece),
                            headers={ORIGIN_HEADER: self.origin},
                        )
            except Exception as error:
                log.debug("latest positions not shared: %s", error)

    async def listen(self) -> None:
        """Apply the other replicas' latest positions, for as long as the process lives."""
        await self.runtime.messaging_ready.wait()
        nats = self.runtime.nats
        assert nats is not None

        async def on_message(message: Any) -> None:
            # This replica's own, echoed back: known from the header, before any decoding.
            if (message.headers or {}).get(ORIGIN_HEADER) == self.origin:
                return
            if self.latest.apply_message(message.data) < 0:
                log.warning("a malformed latest-positions message was ignored")

        await nats.subscribe(LATEST_POSITIONS_SUBJECT, cb=on_message)

    async def load_latest(self, session: AsyncSession) -> int:
        return await self.latest.load(session)


TRACK = text(
    "SELECT DISTINCT ON (at) at, lon, lat, speed_kmh, direction, load, alarm, status, mileage_km "
    "FROM positions WHERE plate = :plate AND at >= :since AND at < :until ORDER BY at, received_at LIMIT :limit"
)


async def track(session: AsyncSession, plate: str, since: datetime, until: datetime, limit: int) -> list[Any]:
    return list(
        (await session.execute(TRACK, {"plate": plate, "since": since, "until": until, "limit": limit})).all()
    )
