"""What a running service holds: settings, engine, NATS, the outbox relay and its consumers.

Built in ``lifespan`` (nothing at import time) and reached by routes through ``RuntimeDep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from citygrid.auth import PrincipalVerifier
from citygrid.db import UnitOfWork, create_engine, create_sessionmaker, unit_of_work
from citygrid.inbox import ConsumerRunner, ConsumerSpec
from citygrid.jobs import PeriodicJob, run_forever
from citygrid.live import LiveFeed
from citygrid.logging import traceparent_var
from citygrid.messaging import connect, ensure_stream, stream_config
from citygrid.metrics import KitMetrics
from citygrid.outbox import OutboxRelay
from citygrid.settings import ServiceSettings, to_libpq_url

log = logging.getLogger("citygrid.runtime")


@dataclass
class Runtime:
    settings: ServiceSettings
    metrics: KitMetrics
    verifier: PrincipalVerifier
    publishes: str | None = None
    consumer_specs: Sequence[ConsumerSpec] = ()
    messaging: bool = True
    jobs: Sequence[PeriodicJob] = ()
    on_startup: Sequence[Callable[[], Awaitable[None]]] = ()
    live_feeds: Sequence[LiveFeed] = ()
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    nats: NatsClient | None = None
    jetstream: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    consumers: dict[str, ConsumerRunner] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    messaging_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def db(self) -> async_sessionmaker[AsyncSession]:
        assert self.sessions is not None, "the runtime is not started"
        return self.sessions

    def uow(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work for this request or job: the only way code here commits."""
        return unit_of_work(self.db, source=self.settings.service_name, traceparent=traceparent_var.get())

    async def start(self) -> None:
        self.engine = create_engine(self.settings)
        self.sessions = create_sessionmaker(self.engine)
        self.consumers = {
            spec.name: ConsumerRunner(
                spec, sessions=self.sessions, source=self.settings.service_name, metrics=self.metrics
            )
            for spec in self.consumer_specs
        }
        for hook in self.on_startup:
            await hook()
        if self.messaging:
            self.tasks.append(asyncio.create_task(self._connect_messaging(), name="messaging"))
        for job in self.jobs:
            self.tasks.append(asyncio.create_task(run_forever(job, self.metrics), name=f"job-{job.name}"))

    async def _connect_messaging(self) -> None:
        """Connect to NATS in the background so HTTP serves (and the outbox fills) while it is down."""
        delay = 0.5
        while self.nats is None:
            try:
                self.nats = await connect(self.settings.nats_url, name=self.settings.service_name)
            except Exception as error:
                log.warning("NATS not reachable (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.jetstream = self.nats.jetstream(timeout=5.0)
        domains = (
            {spec.domain for spec in self.consumer_specs}
            | {feed.domain for feed in self.live_feeds}
            | ({self.publishes} if self.publishes else set())
        )
        while True:
            try:
                for domain in sorted(domains):
                    await ensure_stream(
                        self.jetstream,
                        stream_config(
                            domain,
                            replicas=self.settings.nats_stream_replicas,
                            duplicate_window=self.settings.nats_duplicate_window_seconds,
                        ),
                    )
                break
            except Exception as error:
                log.warning("could not declare streams (%s); retrying", error)
                await asyncio.sleep(1.0)
        if self.publishes:
            self.relay = OutboxRelay(
                sessions=self.db,
                jetstream=self.jetstream,
                listen_dsn=to_libpq_url(self.settings.database_url),
                metrics=self.metrics,
                batch_size=self.settings.outbox_batch_size,
                poll_seconds=self.settings.outbox_poll_seconds,
            )
            self.tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        for runner in self.consumers.values():
            self.tasks.append(
                asyncio.create_task(self._run_consumer(runner), name=f"consumer-{runner.spec.name}")
            )
        for feed in self.live_feeds:
            self.tasks.append(asyncio.create_task(feed.run(self.jetstream), name=f"live-{feed.name}"))
        self.messaging_ready.set()

    async def _run_consumer(self, runner: ConsumerRunner) -> None:
        assert self.jetstream is not None
        while True:
            try:
                await runner.run(self.jetstream)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("consumer %s stopped (%s); restarting", runner.spec.name, error)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.close()
        if self.engine is not None:
            await self.engine.dispose()

    async def readiness(self) -> dict[str, bool]:
        database = False
        try:
            async with self.db() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), timeout=2.0)
            database = True
        except Exception as error:
            log.warning("readiness: database unreachable: %s", error)
        checks = {"database": database}
        if self.messaging:
            checks["nats"] = self.nats is not None and self.nats.is_connected
        return checks


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.kit
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
