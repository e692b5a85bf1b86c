"""NATS connection and JetStream streams: one stream per domain, declared idempotently."""

from __future__ import annotations

import logging
import ssl

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from citygrid.events import stream_name, stream_subjects
from citygrid.natsauth import INBOX_ROOT
from citygrid.settings import ServiceSettings

log = logging.getLogger("citygrid.messaging")


async def connect(url: str, *, name: str) -> NatsClient:
    """Connect once; afterwards the client reconnects on its own, forever."""
    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        ping_interval=10,
        max_outstanding_pings=3,
    )


def tls_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """Verify the NATS servers against the CA file; present a client certificate when one is set."""
    if not settings.nats_tls_ca_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.nats_tls_cert_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file or None)
    return context


def inbox_prefix(user: str) -> str:
    """Each user's replies arrive under its own prefix, the only inboxes it may subscribe to."""
    return INBOX_ROOT + user if user else "_INBOX"


async def connect_service(settings: ServiceSettings) -> NatsClient:
    """Connect as this service's own NATS user (credentials from settings), over TLS when configured."""
    name = settings.service_name

    async def report(error: Exception) -> None:
        # Permission violations do not close the connection: they would go unseen without this.
        log.warning("NATS error (%s as user %r): %s", name, settings.nats_user or "-", error)

    return await nats.connect(
        settings.nats_url,
        name=name,
        user=settings.nats_user or None,
        password=settings.nats_password or None,
        inbox_prefix=inbox_prefix(settings.nats_user),
        tls=tls_context(settings),
        error_cb=report,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        ping_interval=10,
        max_outstanding_pings=3,
    )


def stream_config(
    domain: str,
    *,
    replicas: int = 1,
    duplicate_window: float = 1800.0,
    max_age: float = 14 * 86400,
    max_bytes: int = -1,
) -> StreamConfig:
    return StreamConfig(
        name=stream_name(domain),
        subjects=stream_subjects(domain),
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=duplicate_window,
        max_age=max_age,
        max_bytes=max_bytes,
    )


def service_stream_config(domain: str, settings: ServiceSettings) -> StreamConfig:
    """The stream of the domain this service publishes: it alone declares it."""
    return stream_config(
        domain,
        replicas=settings.nats_stream_replicas,
        duplicate_window=settings.nats_duplicate_window_seconds,
        max_age=settings.nats_stream_max_age_seconds,
        max_bytes=settings.nats_stream_max_bytes,
    )


async def ensure_stream(jetstream: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    try:
        await jetstream.add_stream(config)
    except APIError as error:
        log.info("stream %s exists (%s); updating its configuration", config.name, error.description)
        await jetstream.update_stream(config)
