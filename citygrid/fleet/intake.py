"""Reports in, refused or stored: the one path a service's intakes (its JT/T 808 terminals and its
vendors' HTTP batches) take into its positions table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from citygrid.errors import DomainError
from citygrid.fleet.reports import FUTURE_TOLERANCE, REPORT_COLUMNS, Report, acceptable, refusal
from citygrid.fleet.writer import PositionWriter, StoreUnavailable

# A report refused: its index in the batch, the problem code, the detail.
Refused = tuple[int, str, str]


def accept(
    reports: Sequence[Report], *, now: datetime, days_back: int, source: str, blind_area: bool
) -> tuple[list[tuple[Any, ...]], list[Refused]]:
    """The rows of the acceptable reports (each (plate, time) once) and why each other was refused."""
    earliest = now - timedelta(days=days_back)
    latest = now + FUTURE_TOLERANCE
    rows: list[tuple[Any, ...]] = []
    refused: list[Refused] = []
    seen: set[tuple[str, datetime]] = set()
    tail = (source, blind_area, now)
    for index, report in enumerate(reports):
        if not acceptable(report, earliest=earliest, latest=latest):
            why = refusal(report, now=now, earliest=earliest)
            if why is not None:
                refused.append((index, *why))
                continue
        # The same report twice in one upload (blind-area data often has it) is one row.
        key = (report.plate, report.at)
        if key not in seen:
            seen.add(key)
            rows.append(report[:REPORT_COLUMNS] + tail)
    return rows, refused


@dataclass
class PositionIntake:
    """Reports checked and handed to the group writer; positions older than ``days_back`` are refused
    (they would have no partition)."""

    writer: PositionWriter
    days_back: int

    async def store(
        self, reports: Sequence[Report], *, source: str, blind_area: bool = False
    ) -> tuple[int, list[Refused]]:
        """Store the acceptable reports; returns how many rows were stored and each refused report.
        Returns once the rows are committed; raises when they could not be (503: send them again)."""
        rows, refused = accept(
            reports, now=datetime.now(UTC), days_back=self.days_back, source=source, blind_area=blind_area
        )
        try:
            await self.writer.write(rows)
        except DomainError:
            raise
        except Exception as error:
            # The database down or slow: the caller sends them again (503, or FAILURE to a terminal).
            raise StoreUnavailable(
                "the positions could not be stored; send them again shortly", headers={"Retry-After": "5"}
            ) from error
        return len(rows), refused
