"""The sanitation vehicles' positions: the kit's positions table, in the waste database."""

from __future__ import annotations

from enum import StrEnum

from citygrid.fleet.models import PositionColumns, position_columns
from citygrid.partitions import TimePartitions
from services.waste.models import Base


class PositionSource(StrEnum):
    JT808 = "jt808"  # the terminal's own TCP connection
    HTTP = "http"  # a vendor's platform relaying its terminals


class Position(PositionColumns, Base):
    """One reported position of one sanitation vehicle."""


POSITION_COLUMNS = position_columns(Position)

# Positions are accepted this many days after their time (a terminal's blind-area re-upload), so
# partitions exist from that far back; made 3 days ahead.
DAYS_BACK = 7
# The shortest retention of raw positions: a month.
MINIMUM_RETENTION_DAYS = 30
PARTITIONS = TimePartitions(("positions",), "day", days_back=DAYS_BACK, periods_ahead=3, lock_id=7_745_020)
