"""Settings of one process, read from the environment (prefix ``CITYGRID_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class ServiceSettings(BaseSettings):
    """What every CityGrid process needs; a service subclasses it for its own knobs."""

    model_config = SettingsConfigDict(
        env_prefix="CITYGRID_", extra="ignore", frozen=True, populate_by_name=True
    )

    service_name: str = "citygrid"
    environment: Environment = "development"
    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/citygrid",
        validation_alias=AliasChoices("CITYGRID_DATABASE_URL", "DATABASE_URL"),
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("CITYGRID_NATS_URL", "NATS_URL"),
    )
    # Each service has its own NATS user, allowed to publish its own domain's subjects and to
    # subscribe to what it consumes (see citygrid.natsauth); the password comes from a Secret.
    nats_user: str = ""
    nats_password: str = Field(default="", repr=False)
    nats_tls_ca_file: str = ""  # set in production, where NATS speaks TLS
    # A client certificate, for servers that verify clients (``tls { verify: true }``).
    nats_tls_cert_file: str = ""
    nats_tls_key_file: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # How long a consumer's fetch waits on the server when there is nothing to take. A stopping
    # replica lets the fetch in hand end (and gives back what it brings, for another replica), so
    # this is also how long a stop may wait on each consumer; a shorter wait polls more often.
    consumer_fetch_wait_seconds: float = Field(default=1.0, gt=0, le=30)
    log_level: str = "INFO"

    # The gateway signs the internal principal with its Ed25519 private key; services hold only the
    # public key, so a compromised service cannot mint principals for the others.
    internal_token_public_key: str = ""
    internal_token_issuer: str = "citygrid-gateway"  # noqa: S105 (a name, not a secret)

    # A fixed pool: connections beyond it would be opened for one request and closed after it (an
    # overflow connection is closed on return while the pool is full), a new PostgreSQL backend per
    # request under load (docs/performance.md). A request finding every one busy waits its turn.
    db_pool_size: int = 20
    db_max_overflow: int = 0
    # Time limits every connection of the service's engines starts with (docs/database.md), in
    # seconds; 0 turns one off. Requests, event handlers and jobs use the short ones: a statement
    # that runs past them, a lock that cannot be had, a transaction left idle is ended by the server.
    db_statement_timeout_seconds: float = Field(default=5.0, ge=0)
    db_lock_timeout_seconds: float = Field(default=2.0, ge=0)
    db_idle_in_transaction_timeout_seconds: float = Field(default=30.0, ge=0)
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)  # waiting for a pooled connection
    # A pooled connection idle for longer is pinged before use (citygrid.db.ping_after_idle).
    db_ping_after_idle_seconds: float = Field(default=1.0, ge=0)
    # Analytics (evaluations, report-style reads, the jobs that roll figures up) run on an engine of
    # their own: longer limits, and a small pool, so they can neither starve requests of
    # connections nor run unbounded.
    db_analytics_statement_timeout_seconds: float = Field(default=60.0, ge=0)
    db_analytics_lock_timeout_seconds: float = Field(default=5.0, ge=0)
    db_analytics_idle_in_transaction_timeout_seconds: float = Field(default=60.0, ge=0)
    db_analytics_pool_size: int = Field(default=2, ge=1)
    db_analytics_max_overflow: int = Field(default=2, ge=0)
    db_analytics_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    max_body_bytes: int = 1_048_576
    max_image_body_bytes: int = 8_388_608  # photos are sent as raw image/* bodies
    outbox_poll_seconds: float = 0.5  # the longest an idle relay waits between polls
    outbox_batch_size: int = 200
    nats_stream_replicas: int = 1
    # JetStream drops a re-published event id inside this window: it must outlast the worst
    # recovery between a PubAck and the row's mark (a database failover, a crash-looping pod).
    nats_duplicate_window_seconds: float = 1800.0
    nats_stream_max_age_seconds: float = 14 * 86400
    nats_stream_max_bytes: int = 4 * 1024**3
    # A row that failed this many rounds is quarantined: kept, alerted on, replayable by an admin.
    outbox_max_attempts: int = 10
    # Inbox rows, idempotency keys and published outbox rows are purged after this long: longer
    # than the stream keeps events (so a redelivery always finds its inbox row) plus a replay horizon.
    kit_retention_days: float = 30.0
    # Live feeds (server-sent events), per replica: open streams, events queued per client before
    # it counts as too slow and is dropped, and the heartbeat that keeps proxies from closing idle streams.
    live_max_streams: int = 1000
    live_client_queue: int = 256
    live_heartbeat_seconds: float = 15.0
    # A client resuming with Last-Event-ID is replayed at most this much; beyond, a ``gap`` event
    # tells it to refetch over REST.
    live_max_replay_events: int = 1000
    live_max_replay_seconds: float = 900.0

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> ServiceSettings:
        if self.environment == "production" and not self.internal_token_public_key:
            raise ValueError("CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY is required in production")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the asyncpg driver, whatever scheme the operator wrote."""
        return to_asyncpg_url(self.database_url)


class MigrationSettings(BaseSettings):
    """The time limits of a migration run (``citygrid.migrate.upgrade``), from the environment.

    A migration waits at most ``lock_timeout`` for a lock (then fails and the rollout retries it)
    instead of queueing every request behind it; a statement inside the migration transaction runs
    at most ``statement_timeout``. Builds ``CONCURRENTLY`` block no writer, so they get the long
    limit. Seconds; 0 turns a limit off.
    """

    model_config = SettingsConfigDict(env_prefix="CITYGRID_", extra="ignore", frozen=True)

    migration_lock_timeout_seconds: float = Field(default=5.0, ge=0)
    migration_statement_timeout_seconds: float = Field(default=60.0, ge=0)
    migration_concurrent_timeout_seconds: float = Field(default=3600.0, ge=0)


def to_asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def to_libpq_url(url: str) -> str:
    """The same URL as plain ``postgresql://`` for asyncpg.connect and command-line tools."""
    return "postgresql://" + to_asyncpg_url(url)[len("postgresql+asyncpg://") :]
