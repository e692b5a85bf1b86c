"""A fleet's positions table, the same in every service that keeps one: a mixin for the service's own
declarative base, so each service has its own ``positions`` in its own database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from citygrid.fleet.reports import check_columns


class PositionColumns:
    """One reported position of one vehicle: append-only, partitioned by day of ``at`` (the fix's
    time). A terminal sends a report again when its acknowledgement was lost, so a track may hold a
    time twice; reads take one row per time."""

    __tablename__ = "positions"

    plate: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    speed_kmh: Mapped[float] = mapped_column(Float)
    direction: Mapped[int] = mapped_column(SmallInteger)
    # None: not known (some terminals send 0xFFFF for it).
    altitude_m: Mapped[int | None] = mapped_column(Integer)
    # JT/T 808's DWORD bit fields: up to 2**32 - 1.
    alarm: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(BigInteger)
    # 0 empty, 1 half, 3 full (status bits 8-9); None when the terminal does not say.
    load: Mapped[int | None] = mapped_column(SmallInteger)
    mileage_km: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(8))
    # A 0x0704 re-upload of positions a terminal kept while it had no network.
    blind_area: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The id of the transaction that stored the row, set by the database: a reader of new positions
    # takes them in the order their transactions ended, so a batch that commits late, after
    # PostgreSQL was away, is still read. None for rows stored before the column.
    txid: Mapped[int | None] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint")
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            # A track is a range of (plate, at). ``received_at`` makes a resent report a row of its
            # own rather than a conflict that would fail its whole COPY batch.
            PrimaryKeyConstraint("plate", "at", "received_at", name="pk_positions"),
            # Rows are appended in nearly the order of their transactions: a BRIN index of a few
            # pages per partition finds a range of them, at no cost to the COPY a B-tree would have.
            # Summarized as pages fill, not at the next VACUUM: the newest rows are the ones read.
            Index(
                "ix_positions_txid", "txid", postgresql_using="brin", postgresql_with={"autosummarize": "on"}
            ),
            {"postgresql_partition_by": "RANGE (at)"},
        )


def position_columns(model: type[Any]) -> tuple[str, ...]:
    """What the intake writes into ``model``'s table: every column but the one the database fills,
    checked against the order the intake builds its rows in."""
    columns = tuple(column.name for column in model.__table__.columns if column.name != "txid")
    check_columns(columns)
    return columns
