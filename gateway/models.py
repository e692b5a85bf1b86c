"""Tables of the gateway's own database: registered API consumers (keys stored hashed) and the message
log (every call answered for a principal, hash-chained per writer; ``gateway.message_log``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id


class Base(DeclarativeBase):
    metadata = make_metadata()


class ApiConsumer(Base):
    """A department, system or edge box allowed to call the exchange API."""

    __tablename__ = "api_consumers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    district: Mapped[str | None] = mapped_column(String(6))
    unit: Mapped[str | None] = mapped_column(String(100))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MessageLogRecord(Base):
    """One call the gateway answered for a principal; append-only, partitioned by month of ``at``.

    ``(writer_id, seq)`` is the record's place in its writer's chain; ``id`` names it to people.
    """

    __tablename__ = "message_log"

    writer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    request_id: Mapped[str | None] = mapped_column(String(128))
    consumer: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(8))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    query_keys: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    status: Mapped[int] = mapped_column(SmallInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    dropped_before: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    prev_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        PrimaryKeyConstraint("writer_id", "seq", "at", name="pk_message_log"),
        Index("ix_message_log_at", "at", "id"),
        Index("ix_message_log_consumer", "consumer", "at", "id"),
        Index("ix_message_log_dataset", "dataset", "at", "id"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class MessageLogWriter(Base):
    """A writer of the message log (one gateway process): its announcement and its chain's seal.

    Written with each of the writer's batches, by that writer alone: replicas never share a row.
    """

    __tablename__ = "message_log_writers"

    writer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    replica: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(16))
    genesis: Mapped[str] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seal: Mapped[str] = mapped_column(String(64))
