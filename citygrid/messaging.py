"""NATS connection and JetStream streams: one stream per domain, declared idempotently."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from citygrid.events import stream_name, stream_subjects

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


def stream_config(
    domain: str, *, replicas: int = 1, duplicate_window: float = 120.0, max_age: float = 14 * 86400
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
    )


async def ensure_stream(jetstream: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    try:
        await jetstream.add_stream(config)
    except APIError as error:
        log.info("stream %s exists (%s); updating its configuration", config.name, error.description)
        await jetstream.update_stream(config)
