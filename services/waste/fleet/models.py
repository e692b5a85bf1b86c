"""The sanitation vehicles' positions: the kit's positions table, in the waste database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ARRAY, BigInteger, Boolean, DateTime, Float, String, func
from sqlalchemy.orm import Mapped, mapped_column

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


class PositionCursor(Base):
    """How far the movements round has read the positions: ``horizon`` is a transaction id below
    which every position is read; ``owner`` holds the lease (one replica derives the movements)."""

    __tablename__ = "position_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    horizon: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(100))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VehicleTrack(Base):
    """Where the movements round stands on each vehicle's track: the time of the last position it
    read, the places that position was in, and the stop under way (its first and latest position).
    The next round goes on from here; written in the round's transaction."""

    __tablename__ = "vehicle_tracks"

    plate: Mapped[str] = mapped_column(String(12), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    depots: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    facilities: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    registered: Mapped[bool] = mapped_column(Boolean)
    stop_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_lon: Mapped[float | None] = mapped_column(Float)
    stop_lat: Mapped[float | None] = mapped_column(Float)
    stop_last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_last_lon: Mapped[float | None] = mapped_column(Float)
    stop_last_lat: Mapped[float | None] = mapped_column(Float)
    # A late position waits here when a round had more late vehicles than it reads again: the
    # track is read again from before this, in a round to come.
    redo_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # Every row is updated every few seconds: room on its page keeps the updates HOT.
    __table_args__ = ({"postgresql_with": {"fillfactor": "50"}},)
