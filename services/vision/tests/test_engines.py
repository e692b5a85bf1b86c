"""The engine client against the simulator and against an engine that is not there."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from citygrid.testing import serve_app
from services.vision.domain.breaker import BreakerState
from services.vision.engines import EngineClient, EngineUnavailable
from services.vision.metrics import VisionMetrics
from services.vision.simulator import create_simulator

CAMERA = "44010600081320000001"


async def test_the_simulator_answers_the_contract_with_what_its_scene_holds():
    simulator = create_simulator()
    async with serve_app(simulator) as url:
        client = EngineClient({"simulator": url})
        try:
            empty = await client.analyse("simulator", CAMERA, "littering", [])
            assert empty.detections == []
            assert empty.snapshot_base64
            async with httpx.AsyncClient(base_url=url) as http:
                await http.put(f"/v1/scene/{CAMERA}/littering", json={"confidence": 0.8})
            seen = await client.analyse("simulator", CAMERA, "littering", [[(0, 0), (1, 0), (1, 1)]])
            assert [d.confidence for d in seen.detections] == [0.8]
        finally:
            await client.close()


async def test_a_dead_engine_opens_its_breaker_and_is_then_refused_at_once():
    metrics = VisionMetrics(CollectorRegistry())
    client = EngineClient(
        {"dead": "http://127.0.0.1:9"},
        timeout=1.0,
        retries=1,
        failure_threshold=2,
        reset_seconds=60,
        metrics=metrics,
    )
    try:
        with pytest.raises(EngineUnavailable, match="failed 2 times"):
            await client.analyse("dead", CAMERA, "littering", [])
        assert client.breakers["dead"].state is BreakerState.OPEN
        with pytest.raises(EngineUnavailable, match="circuit breaker is open"):
            await client.analyse("dead", CAMERA, "littering", [])
        with pytest.raises(EngineUnavailable, match="no analysis engine named"):
            await client.analyse("nowhere", CAMERA, "littering", [])
    finally:
        await client.close()
    assert calls(metrics, "refused") == 1
    assert calls(metrics, "error") == 2


def calls(metrics: VisionMetrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "citygrid_vision_engine_call_duration_seconds_count", {"engine": "dead", "outcome": outcome}
    )


async def test_a_cancelled_half_open_trial_frees_the_breaker_for_the_next_call():
    app = FastAPI()
    hold = asyncio.Event()
    arrived = asyncio.Event()

    @app.post("/v1/analyse")
    async def analyse(body: dict[str, Any]) -> dict[str, Any]:
        arrived.set()
        await hold.wait()
        return {
            "camera_id": body["camera_id"],
            "algorithm_code": body["algorithm_code"],
            "analysed_at": "2026-11-26T12:00:03+08:00",
            "detections": [],
        }

    async with serve_app(app) as url:
        client = EngineClient({"slow": url}, timeout=30, retries=0, failure_threshold=1, reset_seconds=30)
        breaker = client.breakers["slow"]
        try:
            breaker.state, breaker.opened_at = BreakerState.OPEN, time.monotonic() - 60  # due a trial
            trial = asyncio.create_task(client.analyse("slow", CAMERA, "littering", []))
            await arrived.wait()
            assert (breaker.state, breaker.trial_in_flight) == (BreakerState.HALF_OPEN, True)
            trial.cancel()  # the job stops, the replica shuts down
            with pytest.raises(asyncio.CancelledError):
                await trial
            assert (breaker.state, breaker.trial_in_flight) == (BreakerState.HALF_OPEN, False)
            hold.set()
            answer = await client.analyse("slow", CAMERA, "littering", [])
            assert answer.detections == []
            assert breaker.state is BreakerState.CLOSED
        finally:
            hold.set()
            await client.close()
