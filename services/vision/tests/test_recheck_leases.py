"""Re-check claims stay within their lease: a round claims only what it works on at once, each
claim is renewed before its engine call and fenced by its attempt count, so a re-check whose lease
another replica took over is never sent to the engine twice."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select, text

from citygrid.testing import serve_app, wait_until
from services.vision.engines import EngineClient
from services.vision.models import Recheck
from services.vision.recheck import (
    CONCURRENCY,
    MIN_LEASE,
    claim_due,
    lease_for,
    recheck_one,
    run_due_rechecks,
)
from services.vision.simulator import fake_jpeg
from services.vision.tests.conftest import TIANHE_CAMERA
from services.vision.tests.test_recheck import confirmed_alarm, recheck_events
from services.vision.tests.test_regions import store_regions

LEASE = timedelta(minutes=2)


def recheck_job_ran(vision) -> bool:
    """The replica's own re-check job ran its first round; with ``recheck_scan_seconds=3600`` it
    then waits an hour, and the test drives the rounds."""
    registry = vision.runtime.metrics.registry
    return bool(registry.get_sample_value("citygrid_job_runs_total", {"job": "recheck", "outcome": "ok"}))


async def schedule(vision, alarm_id: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with vision.runtime.db() as session, session.begin():
        session.add_all(
            Recheck(
                id=recheck_id,
                alarm_id=uuid.UUID(alarm_id),
                case_id=uuid.uuid4(),
                camera_id=TIANHE_CAMERA,
                algorithm_code="exposed_garbage",
                status="scheduled",
                due_at=func.now() - timedelta(seconds=n + 1),
                attempts=0,
            )
            for n, recheck_id in enumerate(ids)
        )
    return ids


async def rechecks(vision) -> dict[uuid.UUID, tuple[str, int, bool]]:
    """Each re-check's status, attempts, and whether it is leased (due later than a minute from now)."""
    async with vision.runtime.db() as session:
        rows = await session.execute(
            select(
                Recheck.id,
                Recheck.status,
                Recheck.attempts,
                Recheck.due_at > func.now() + timedelta(minutes=1),
            )
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def args(vision) -> dict[str, Any]:
    context = vision.app.state.vision
    return {"default_engine": "simulator", "max_snapshot_bytes": 512 * 1024, "metrics": context.metrics}


async def test_a_claim_another_replica_took_over_is_neither_sent_to_the_engine_nor_decided(vision_factory):
    async with vision_factory(recheck_scan_seconds=3600) as vision:
        await wait_until(lambda: recheck_job_ran(vision), timeout=20)
        alarm_id = await confirmed_alarm(vision)
        (recheck_id,) = await schedule(vision, alarm_id, 1)
        context = vision.app.state.vision
        (stale,) = await claim_due(vision.runtime, limit=5, lease=LEASE)
        # Its lease runs out (a stalled replica) and another replica claims it again.
        async with vision.runtime.db() as session, session.begin():
            await session.execute(text("UPDATE rechecks SET due_at = now() - interval '1 second'"))
        (current,) = await claim_due(vision.runtime, limit=5, lease=LEASE)
        assert (stale.id, stale.attempts, current.attempts) == (recheck_id, 1, 2)

        await recheck_one(vision.runtime, context.engines, context.blobs, stale, lease=LEASE, **args(vision))
        assert vision.simulator.state.calls == []
        assert (await rechecks(vision))[recheck_id] == ("scheduled", 2, True)

        await recheck_one(
            vision.runtime, context.engines, context.blobs, current, lease=LEASE, **args(vision)
        )
        assert vision.simulator.state.calls == [(TIANHE_CAMERA, "exposed_garbage")]
        assert (await rechecks(vision))[recheck_id][:2] == ("passed", 2)
        assert len(await recheck_events(vision, 1)) == 1


def gated_engine() -> tuple[FastAPI, asyncio.Event, list[str]]:
    """An engine that holds every call until the gate opens; ``calls`` lists the calls in flight."""
    app = FastAPI()
    gate = asyncio.Event()
    calls: list[str] = []

    @app.post("/v1/analyse")
    async def analyse(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body["camera_id"])
        await gate.wait()
        return {
            "camera_id": body["camera_id"],
            "algorithm_code": body["algorithm_code"],
            "analysed_at": "2026-11-26T12:00:03+08:00",
            "detections": [],
            "snapshot_base64": base64.b64encode(fake_jpeg("gated")).decode(),
        }

    return app, gate, calls


async def test_a_round_claims_only_what_it_works_on_at_once_all_within_their_lease(vision_factory):
    async with vision_factory(recheck_scan_seconds=3600) as vision:
        await wait_until(lambda: recheck_job_ran(vision), timeout=20)
        alarm_id = await confirmed_alarm(vision)
        scheduled = await schedule(vision, alarm_id, CONCURRENCY + 2)
        engine_app, gate, calls = gated_engine()
        async with serve_app(engine_app) as engine_url:
            engines = EngineClient({"simulator": engine_url}, timeout=30, retries=0)
            try:
                round_ = asyncio.create_task(
                    run_due_rechecks(vision.runtime, engines, vision.app.state.vision.blobs, **args(vision))
                )
                await wait_until(lambda: len(calls) == CONCURRENCY)
                # Every claim is at the engine at once, each under its lease; the rest are not
                # claimed, so another replica may take them now.
                states = await rechecks(vision)
                leased = [r for r in scheduled if states[r] == ("scheduled", 1, True)]
                free = [r for r in scheduled if states[r] == ("scheduled", 0, False)]
                assert (len(leased), len(free)) == (CONCURRENCY, 2)
                gate.set()
                assert await round_ == CONCURRENCY
                assert (
                    await run_due_rechecks(
                        vision.runtime, engines, vision.app.state.vision.blobs, **args(vision)
                    )
                    == 2
                )
            finally:
                gate.set()
                await engines.close()
        assert {status for status, _, _ in (await rechecks(vision)).values()} == {"passed"}


def test_the_lease_outlasts_the_longest_call_the_engine_client_can_make():
    assert lease_for(EngineClient({})) == MIN_LEASE
    slow = EngineClient({}, timeout=60.0, retries=3)
    assert slow.longest_call_seconds >= 4 * 60
    assert lease_for(slow).total_seconds() > 2 * slow.longest_call_seconds


async def test_a_camera_with_broken_regions_leaves_its_recheck_scheduled_with_the_reason(vision_factory):
    async with vision_factory(recheck_scan_seconds=3600) as vision:
        await wait_until(lambda: recheck_job_ran(vision), timeout=20)
        alarm_id = await confirmed_alarm(vision)
        (recheck_id,) = await schedule(vision, alarm_id, 1)
        await store_regions(vision, TIANHE_CAMERA, {"exposed_garbage": [[[0, 0], [1, 1]]]})
        context = vision.app.state.vision
        assert await run_due_rechecks(vision.runtime, context.engines, context.blobs, **args(vision)) == 1
        assert vision.simulator.state.calls == []
        async with vision.runtime.db() as session:
            row = await session.get(Recheck, recheck_id)
        assert row is not None
        assert row.status == "scheduled"
        assert "regions of interest are invalid" in (row.last_error or "")
