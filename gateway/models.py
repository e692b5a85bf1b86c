"""Tables of the gateway's own database: registered API consumers, their keys (stored hashed), the
log of changes to their credentials every replica follows, the audit of every change, the gateway's
token-signing keys, the quota ledger (``gateway.quotas``), and the message log (every call answered
for a principal, hash-chained per writer; ``gateway.message_log``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from citygrid.db import make_metadata
from citygrid.ids import new_id


class Base(DeclarativeBase):
    metadata = make_metadata()


class ApiConsumer(Base):
    """A department, district centre, vendor's system or edge box allowed to call the exchange API.
    Its contact's name, phone and e-mail are personal data."""

    __tablename__ = "api_consumers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(24), server_default="system")
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    district: Mapped[str | None] = mapped_column(String(6))
    unit: Mapped[str | None] = mapped_column(String(100))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    daily_quota: Mapped[int | None] = mapped_column(Integer)  # requests per city day; None: none
    contact_name: Mapped[str | None] = mapped_column(String(100))
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsumerKey(Base):
    """One of a consumer's API keys: several live at once, so a key rotates with overlap. Only the
    SHA-256 of the key is kept; ``prefix`` finds the row."""

    __tablename__ = "consumer_keys"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    consumer_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_consumers.id", ondelete="CASCADE")
    )
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_consumer_keys_consumer", "consumer_id", "created_at"),)


class CredentialChange(Base):
    """A change to a consumer's credentials (a key revoked, the consumer revoked or changed): every
    replica reads the new rows each second and forgets what it had cached of them, so a revocation
    holds everywhere, and tokens the consumer was issued before ``at`` are refused."""

    __tablename__ = "credential_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    consumer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    key_prefix: Mapped[str | None] = mapped_column(String(16))  # None: every key and token of it
    # key_revoked, consumer_revoked (every token refused), or grants_changed (tokens issued up to it).
    kind: Mapped[str] = mapped_column(String(24), server_default="grants_changed")
    # The id of the transaction that wrote it: replicas read the changes in the order they committed.
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint"))

    __table_args__ = (Index("ix_credential_changes_at", "at"), Index("ix_credential_changes_txid", "txid"))


class ConsumerAudit(Base):
    """Every change to a consumer, by whom: append-only, kept with the message log's retention."""

    __tablename__ = "consumer_audit"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    consumer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    # What changed, never a key or a secret; personal fields by name only.
    detail: Mapped[dict[str, object]] = mapped_column(JSONB)

    __table_args__ = (Index("ix_consumer_audit_consumer", "consumer_id", "at", "id"),)


class SigningKey(Base):
    """A key the gateway signs its OAuth2 access tokens with (ES256). The private key is PKCS#8,
    encrypted with the passphrase in the gateway's Secret; the public key is served at the JWKS URL
    from ``created_at`` until ``retired_at`` plus the longest a token lives."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    private_pem: Mapped[str] = mapped_column(String(2000))
    public_jwk: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # It signs from ``signs_from`` (once verifiers have had time to fetch it) until a newer one does.
    signs_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QuotaUsage(Base):
    """One subject's window (a minute, or a city day from its midnight; ``starts`` in epoch seconds):
    how many requests every gateway replica together reserved in it (``gateway.quotas.ledger``).

    Updated in place several times a second, never on an indexed column: HOT on half-empty pages."""

    __tablename__ = "quota_usage"

    subject: Mapped[str] = mapped_column(Text)  # a consumer's, or ``person:`` and any ``sub``
    period: Mapped[str] = mapped_column(String(8))
    starts: Mapped[int] = mapped_column(BigInteger)
    quota: Mapped[int] = mapped_column(Integer)  # the limit the last settlement applied
    used: Mapped[int] = mapped_column(Integer)
    last_grant: Mapped[int] = mapped_column(Integer)  # what the last settlement reserved

    __table_args__ = (
        PrimaryKeyConstraint("subject", "period", "starts", name="pk_quota_usage"),
        Index("ix_quota_usage_starts", "starts"),
        {"postgresql_with": {"fillfactor": "50"}},
    )


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
    # Of an answer the gateway read (an exchange read): its records and their fields.
    record_count: Mapped[int | None] = mapped_column(Integer)
    fields: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))

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


class Subscription(Base):
    """A consumer's webhook: where to send which events, filtered how (``gateway.subscriptions``).

    The signing secret is stored sealed under ``CITYGRID_WEBHOOK_SECRET_KEY`` (AES-GCM); after a
    rotation the previous one signs beside it until ``previous_until``. ``failures`` counts the
    attempts that failed in a row, and nothing is sent to it before ``retry_at``: a receiver that is
    down is backed off as a whole, not once per message."""

    __tablename__ = "subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    consumer_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_consumers.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    filters: Mapped[dict[str, object]] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(String(200))
    secret_sealed: Mapped[str] = mapped_column(String(200))
    previous_secret_sealed: Mapped[str | None] = mapped_column(String(200))
    previous_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(12), server_default="active")  # active | paused
    paused_reason: Mapped[str | None] = mapped_column(String(200))
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_subscriptions_event_types", "event_types", postgresql_using="gin"),)


class WebhookMessage(Base):
    """An event that reached at least one subscription, once, as it was published (its personal
    data is masked per consumer when it is sent)."""

    __tablename__ = "webhook_messages"

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    event: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_webhook_messages_created_at", "created_at"),)


class WebhookDelivery(Base):
    """One message for one subscription: pending until delivered, failed (its attempts spent) or
    dropped (its consumer may no longer receive it). A claimed delivery's ``next_attempt_at`` is
    pushed past the attempt's timeout: a replica that dies mid-attempt leaves it due again."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("webhook_messages.event_id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(12), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(300))
    # While a replica sends it: resume and replay leave it to that attempt.
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("uq_webhook_deliveries_subscription_event", "subscription_id", "event_id", unique=True),
        # What each subscription has due: the claim reads it per subscription, never the whole table.
        Index(
            "ix_webhook_deliveries_due",
            "subscription_id",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        # The delivery log, newest first, and a replay's range.
        Index("ix_webhook_deliveries_subscription_created", "subscription_id", "created_at", "id"),
        # The delivery log of one state (?state=failed), without reading the others.
        Index("ix_webhook_deliveries_subscription_state", "subscription_id", "state", "created_at", "id"),
    )


class WebhookAttempt(Base):
    """One try of a delivery: the receiver's status, or why there was none, and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(String(300))
    duration_ms: Mapped[int] = mapped_column(Integer)
