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
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from citygrid.auth import PrincipalVerifier
from citygrid.db import (
    DriverRead,
    Role,
    UnitOfWork,
    create_engine,
    create_sessionmaker,
    driver_connection,
    unit_of_work,
)
from citygrid.inbox import ConsumerRunner, ConsumerSpec, cancelling
from citygrid.jobs import PeriodicJob, run_forever
from citygrid.live import LiveFeed
from citygrid.logging import traceparent_var
from citygrid.messaging import connect_service, ensure_stream, service_stream_config
from citygrid.metrics import KitMetrics
from citygrid.outbox import OutboxRelay, outbox_state
from citygrid.retention import retention_job
from citygrid.settings import ServiceSettings

log = logging.getLogger("citygrid.runtime")

# How long a stopping process lets its consumers finish the events they hold.
DRAIN_SECONDS = 10.0
# What a job's stop may take at the most (it must not hold the process up).
JOB_STOP_SECONDS = 2.0


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
    # One-statement reads: no transaction around them (no BEGIN, no ROLLBACK), the same pool.
    read_sessions: async_sessionmaker[AsyncSession] | None = None
    # The same pool in autocommit: the one-statement reads' sessions and the driver reads.
    read_engine: AsyncEngine | None = None
    # Evaluations and report-style reads: longer time limits, a small pool (citygrid.db.Role).
    analytics_engine: AsyncEngine | None = None
    analytics_sessions: async_sessionmaker[AsyncSession] | None = None
    nats: NatsClient | None = None
    jetstream: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    consumers: dict[str, ConsumerRunner] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    messaging_ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def fetch_row(self, read: DriverRead, **params: Any) -> asyncpg.Record | None:
        """One row of a hot-path read on the driver (``citygrid.db.DriverRead``), or None."""
        assert self.read_engine is not None, "the runtime is not started"
        async with driver_connection(self.read_engine) as connection:
            row: asyncpg.Record | None = await connection.fetchrow(read.sql, *read.arguments(params))
            return row

    async def fetch_rows(self, read: DriverRead, **params: Any) -> list[asyncpg.Record]:
        """Every row of a hot-path read on the driver."""
        assert self.read_engine is not None, "the runtime is not started"
        async with driver_connection(self.read_engine) as connection:
            rows: list[asyncpg.Record] = await connection.fetch(read.sql, *read.arguments(params))
            return rows

    def live_feed(self, name: str) -> LiveFeed:
        """The live feed of that name the service set up (``live_feeds``)."""
        return next(feed for feed in self.live_feeds if feed.name == name)

    @property
    def db(self) -> async_sessionmaker[AsyncSession]:
        assert self.sessions is not None, "the runtime is not started"
        return self.sessions

    @property
    def reads(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for a read that is one statement: autocommit, so it costs that statement's round
        trip alone. A read of several statements that must agree with each other uses ``db``."""
        assert self.read_sessions is not None, "the runtime is not started"
        return self.read_sessions

    @property
    def autocommit(self) -> async_sessionmaker[AsyncSession]:
        """The same sessions as ``reads``, for a write that is one statement and needs no other
        (an audit record): it commits as it runs, without a BEGIN and a COMMIT of its own. A write
        with an event, or of several statements, goes through ``uow``."""
        assert self.read_sessions is not None, "the runtime is not started"
        return self.read_sessions

    @property
    def analytics(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for analytics: the same database, ``CITYGRID_DB_ANALYTICS_*`` limits and pool."""
        assert self.analytics_sessions is not None, "the runtime is not started"
        return self.analytics_sessions

    def uow(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work for this request or job: the only way code here commits."""
        return unit_of_work(
            self.db,
            source=self.settings.service_name,
            traceparent=traceparent_var.get(),
            on_events_committed=self.wake_relay,
        )

    def wake_relay(self) -> None:
        """Events were committed: this replica's relay publishes them now, not at its next poll."""
        if self.relay is not None:
            self.relay.wake()

    async def start(self) -> None:
        self.engine = create_engine(self.settings)
        self.sessions = create_sessionmaker(self.engine)
        self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.read_sessions = create_sessionmaker(self.read_engine)
        # Connects only when first used: a service without analytics holds no connection for it.
        self.analytics_engine = create_engine(self.settings, Role.ANALYTICS)
        self.analytics_sessions = create_sessionmaker(self.analytics_engine)
        self.consumers = {
            spec.name: ConsumerRunner(
                spec,
                sessions=self.sessions,
                source=self.settings.service_name,
                metrics=self.metrics,
                on_events_committed=self.wake_relay,
                fetch_wait=self.settings.consumer_fetch_wait_seconds,
            )
            for spec in self.consumer_specs
        }
        self.metrics.scrape_hooks.append(self._refresh_gauges)
        for hook in self.on_startup:
            await hook()
        if self.messaging:
            self.tasks.append(asyncio.create_task(self._connect_messaging(), name="messaging"))
        kit_jobs = [
            retention_job(
                self.sessions,
                retention=timedelta(days=self.settings.kit_retention_days),
                stream_max_age=timedelta(seconds=self.settings.nats_stream_max_age_seconds),
            )
        ]
        for job in (*self.jobs, *kit_jobs):
            self.tasks.append(asyncio.create_task(run_forever(job, self.metrics), name=f"job-{job.name}"))

    async def _connect_messaging(self) -> None:
        """Connect to NATS in the background so HTTP serves (and the outbox fills) while it is down.

        The relay, the consumers and the live feeds start once NATS is reached, however late.
        """
        delay = 0.5
        while self.nats is None:
            try:
                self.nats = await connect_service(self.settings)
            except Exception as error:
                log.warning("NATS not reachable (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.jetstream = self.nats.jetstream(timeout=5.0)
        # A service declares the stream it publishes to and no other: the streams it consumes are
        # their producers' (its consumers wait for them to exist).
        while self.publishes:
            try:
                await ensure_stream(self.jetstream, service_stream_config(self.publishes, self.settings))
                break
            except Exception as error:
                log.warning("could not declare the %s stream (%s); retrying", self.publishes, error)
                await asyncio.sleep(1.0)
        if self.publishes:
            self.relay = OutboxRelay(
                sessions=self.db,
                nats=self.nats,
                metrics=self.metrics,
                batch_size=self.settings.outbox_batch_size,
                poll_seconds=self.settings.outbox_poll_seconds,
                max_attempts=self.settings.outbox_max_attempts,
            )
            self.tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        for runner in self.consumers.values():
            self.tasks.append(
                asyncio.create_task(self._run_consumer(runner), name=f"consumer-{runner.spec.name}")
            )
        for feed in self.live_feeds:
            self.tasks.append(asyncio.create_task(feed.run(self.jetstream), name=f"live-{feed.name}"))
        self.messaging_ready.set()

    @property
    def nats_connected(self) -> bool:
        return self.nats is not None and self.nats.is_connected

    async def _refresh_gauges(self) -> None:
        self.metrics.nats_connected.set(1 if self.nats_connected else 0)
        if self.publishes and self.sessions is not None:
            state = await outbox_state(self.sessions)
            self.metrics.outbox_backlog.set(state.backlog)
            self.metrics.outbox_oldest_age.set(state.oldest_age_seconds)
            self.metrics.outbox_quarantined.set(state.quarantined)

    async def _run_consumer(self, runner: ConsumerRunner) -> None:
        """Run a consumer for as long as the process lives; a stream that does not exist yet (its
        producer has not started) is waited for quietly, with backoff."""
        assert self.jetstream is not None
        delay = 1.0
        while True:
            try:
                await runner.run(self.jetstream)
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except NotFoundError:
                log.info(
                    "consumer %s: stream %s not there yet; waiting", runner.spec.name, runner.spec.domain
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as error:
                if cancelling():
                    raise asyncio.CancelledError from error
                log.warning("consumer %s stopped (%s); restarting", runner.spec.name, error)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        # Consumers finish the event in hand and give back the rest before anything is cancelled.
        await asyncio.gather(
            *(runner.drain(timeout=DRAIN_SECONDS) for runner in self.consumers.values()),
            return_exceptions=True,
        )
        await cancel_all(self.tasks)
        self.tasks.clear()
        for job in self.jobs:
            if job.on_stop is not None:
                try:
                    async with asyncio.timeout(JOB_STOP_SECONDS):
                        await job.on_stop()
                except Exception as error:
                    log.warning("job %s: its stop did not finish: %s", job.name, error)
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self.analytics_engine is not None:
            await self.analytics_engine.dispose()

    async def readiness(self) -> dict[str, bool]:
        """What serving HTTP needs (the database) decides readiness; NATS is reported beside it.

        A NATS outage must not take the API down: events wait in the outbox meanwhile.
        """
        database = False
        try:
            async with self.db() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), timeout=2.0)
            database = True
        except Exception as error:
            log.warning("readiness: database unreachable: %s", error)
        return {"database": database}


async def cancel_all(tasks: Sequence[asyncio.Task[None]], *, rounds: int = 5, wait: float = 2.0) -> None:
    """Cancel tasks and wait for them to end, cancelling again those that swallowed the first
    cancellation (nats-py turns a cancelled read on a closing connection into an ordinary error,
    which a retry loop then survives). A task still running after every round is logged, not awaited
    forever: a stop must finish."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait)
    for task in pending:
        log.error("task %s did not stop when cancelled", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.kit
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
