"""Periodic work that runs in every replica and happens once: the job claims its rows with
``FOR UPDATE SKIP LOCKED`` (or takes an advisory lock), so replicas share the work, never repeat it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from citygrid.metrics import KitMetrics

log = logging.getLogger("citygrid.jobs")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[int]]  # returns how many items it handled
    batch_size: int = 500  # a full batch means there is more: run again at once
    # Run once as the process stops, after the job's task has ended (a lease given back, say, so
    # another replica takes over at once rather than when the lease lapses).
    on_stop: Callable[[], Awaitable[None]] | None = None


async def run_forever(job: PeriodicJob, metrics: KitMetrics | None = None) -> None:
    # Replicas started together should not hit the database in step.
    await asyncio.sleep(random.uniform(0, min(job.every_seconds, 5.0)))
    while True:
        handled = 0
        try:
            handled = await job.run()
            outcome = "ok"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s failed", job.name)
            outcome = "error"
        if metrics is not None:
            metrics.job_runs.labels(job=job.name, outcome=outcome).inc()
            metrics.job_items.labels(job=job.name).inc(handled)
        if handled < job.batch_size:
            await asyncio.sleep(job.every_seconds)
