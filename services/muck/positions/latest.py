"""Every truck's latest position, in memory in each replica.

A replica updates its map from the rows it committed, then sends those rows' latest per truck on a
core NATS subject; every replica applies what the others send. At most once: a message lost (NATS
down) leaves a truck's entry stale until its next report, seconds later. At start the map is read
from the database: per truck, its newest row of the last day, one index probe each.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.fleet.reports import FUTURE_TOLERANCE, LAT_RANGE, LON_RANGE
from services.muck.models import POSITION_COLUMNS

_INDEX = {name: POSITION_COLUMNS.index(name) for name in POSITION_COLUMNS}
# More trucks than the city has: a bound on the map, whatever arrives.
MAX_TRUCKS = 100_000
LATEST_FIELDS = ("plate", "at", "lon", "lat", "speed_kmh", "direction", "load", "received_at")
_LATEST_OF_ROW = operator.itemgetter(*(_INDEX[name] for name in LATEST_FIELDS))


@dataclass(frozen=True, slots=True)
class Latest:
    plate: str
    at: datetime
    lon: float
    lat: float
    speed_kmh: float
    direction: int
    load: int | None
    received_at: datetime

    def to_wire(self) -> list[Any]:
        # Times as POSIX seconds: cheaper both ways than ISO text, and never without a zone.
        return [
            self.plate,
            self.at.timestamp(),
            self.lon,
            self.lat,
            self.speed_kmh,
            self.direction,
            self.load,
            self.received_at.timestamp(),
        ]

    @classmethod
    def from_wire(cls, values: list[Any]) -> Latest:
        """One entry of another replica's message, checked as a report is: a message that is not one
        a replica would send (a naive time, a place outside China, a time ahead) is ValueError."""
        plate, at, lon, lat, speed, direction, load, received = values
        latest = cls(
            str(plate),
            datetime.fromtimestamp(float(at), UTC),
            float(lon),
            float(lat),
            float(speed),
            int(direction),
            None if load is None else int(load),
            datetime.fromtimestamp(float(received), UTC),
        )
        if (
            not 0 < len(latest.plate) <= 12
            or not (math.isfinite(latest.lon) and math.isfinite(latest.lat))
            or latest.at > datetime.now(UTC) + FUTURE_TOLERANCE
            or not (LON_RANGE[0] <= latest.lon <= LON_RANGE[1] and LAT_RANGE[0] <= latest.lat <= LAT_RANGE[1])
            or not 0 <= latest.speed_kmh <= 250
            or latest.load not in (None, 0, 1, 3)
        ):
            raise ValueError("not a latest position a replica sends")
        return latest


class LatestPositions:
    def __init__(self) -> None:
        self._by_plate: dict[str, Latest] = {}
        # Called with every batch that changed the map: this replica's stored rows and the other
        # replicas' messages alike (the live map follows it). It runs on the intake's path, inside
        # the position writer's round, so it must only hand the batch on; None costs nothing.
        self.on_changed: Callable[[list[Latest]], None] | None = None

    def __len__(self) -> int:
        return len(self._by_plate)

    def get(self, plate: str) -> Latest | None:
        return self._by_plate.get(plate)

    def __iter__(self) -> Iterator[Latest]:
        return iter(self._by_plate.values())

    def apply(self, positions: Iterable[Latest]) -> list[Latest]:
        """Keep each truck's newest; returns those that changed the map (bounded: a fleet, not more)."""
        changed = []
        for position in positions:
            known = self._by_plate.get(position.plate)
            if known is None and len(self._by_plate) >= MAX_TRUCKS:
                continue
            if known is None or position.at > known.at:
                self._by_plate[position.plate] = position
                changed.append(position)
        if changed and self.on_changed is not None:
            self.on_changed(changed)
        return changed

    def apply_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[Latest]:
        # The newest row per truck first, on the rows themselves: a Latest is built only for a row
        # that will change the map, a few thousand a batch rather than every row.
        plate_at, at_at = _INDEX["plate"], _INDEX["at"]
        newest: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            current = newest.get(row[plate_at])
            if current is None or row[at_at] > current[at_at]:
                newest[row[plate_at]] = row
        by_plate = self._by_plate
        return self.apply(
            Latest(*_LATEST_OF_ROW(row))
            for plate, row in newest.items()
            if (known := by_plate.get(plate)) is None or row[at_at] > known.at
        )

    @staticmethod
    def encode(positions: Iterable[Latest]) -> bytes:
        return json.dumps([p.to_wire() for p in positions]).encode()

    def apply_message(self, data: bytes) -> int:
        """Apply another replica's message; a malformed one is ignored (returns -1)."""
        try:
            entries = json.loads(data)
            if not isinstance(entries, list):
                return -1
            positions = [Latest.from_wire(values) for values in entries]
        except (ValueError, TypeError, OverflowError, OSError):
            return -1
        return len(self.apply(positions))

    async def load(self, session: AsyncSession) -> int:
        found = await session.execute(LATEST_OF_EVERY_TRUCK)
        return len(self.apply(Latest(*values) for values in found))


# One probe of the primary key per truck (its last row of the last day), not a scan of the day.
LATEST_OF_EVERY_TRUCK = text(
    "SELECT p.plate, p.at, p.lon, p.lat, p.speed_kmh, p.direction, p.load, p.received_at "
    "FROM trucks t CROSS JOIN LATERAL ("
    "  SELECT * FROM positions WHERE positions.plate = t.plate AND positions.at > now() - interval '1 day'"
    "  ORDER BY positions.at DESC LIMIT 1) p"
)
