"""The trucks' JT/T 808 terminals as the muck service sees them: the kit's registered terminals
(``citygrid.fleet.terminals``) over the register of trucks, their positions into the intake.

A truck's terminal registers once (a second registration is refused until the register releases
it: ``POST /v1/trucks/{plate}/terminal/release``); the code is kept as its SHA-256 only, in the
database, so a terminal may reconnect to any replica.
"""

from __future__ import annotations

from collections.abc import Sequence

from citygrid.fleet.reports import Report
from citygrid.fleet.terminals import RegisteredTerminals
from citygrid.runtime import Runtime
from services.muck.models import PositionSource, Truck
from services.muck.positions.service import Positions


class MuckTerminals(RegisteredTerminals):
    """The ``TerminalHandler`` of the muck service's JT/T 808 listener."""

    def __init__(self, runtime: Runtime, positions: Positions) -> None:
        async def store(reports: Sequence[Report], blind_area: bool) -> None:
            # A refused report (no fix, out of range) is still acknowledged: sent again, it would
            # not change.
            await positions.store(reports, source=PositionSource.JT808, blind_area=blind_area)

        super().__init__(runtime, Truck, store)
        self.intake = positions
