"""Calling analysis engines: the HTTP contract (docs/vision-engines.md), timeouts, bounded retries,
and a circuit breaker per engine so a dead engine costs nothing but a quick refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contract.vision import AlgorithmCode, Box, CameraId, Unit
from services.vision.domain.breaker import CircuitBreaker
from services.vision.metrics import VisionMetrics


class AnalyseRequest(BaseModel):
    """``POST {engine}/v1/analyse``: analyse this camera for this class now."""

    model_config = ConfigDict(extra="forbid")

    camera_id: CameraId
    algorithm_code: AlgorithmCode
    regions: list[list[tuple[Unit, Unit]]] = Field(default_factory=list)


class EngineDetection(BaseModel):
    confidence: Unit
    boxes: Annotated[list[Box], Field(min_length=1, max_length=50)]
    track_id: Annotated[str, StringConstraints(max_length=100)] | None = None


class AnalyseResponse(BaseModel):
    camera_id: CameraId
    algorithm_code: AlgorithmCode
    analysed_at: datetime
    detections: Annotated[list[EngineDetection], Field(max_length=200)]
    snapshot_base64: str | None = None


class EngineUnavailable(Exception):
    """The engine could not answer (unknown, breaker open, timeouts, errors): try again later."""


class EngineClient:
    def __init__(
        self,
        engines: dict[str, str],
        *,
        timeout: float = 10.0,
        retries: int = 2,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        metrics: VisionMetrics | None = None,
    ) -> None:
        self.engines = engines
        self.timeout = timeout
        self.retries = retries
        self.metrics = metrics
        self.breakers = {
            name: CircuitBreaker(failure_threshold=failure_threshold, reset_seconds=reset_seconds)
            for name in engines
        }
        self.client: httpx.AsyncClient | None = None

    @property
    def attempt_seconds(self) -> float:
        """The hard bound of one attempt: httpx's timeouts are per operation (pool, connect, write,
        read), so the attempt as a whole has a deadline of its own."""
        return self.timeout + min(self.timeout, 2.0)

    @property
    def longest_call_seconds(self) -> float:
        """The longest ``analyse`` can take: every attempt running into its deadline, plus the
        backoffs between them."""
        backoffs = sum(min(0.2 * 2.0**attempt, 2.0) for attempt in range(self.retries))
        return (self.retries + 1) * self.attempt_seconds + backoffs

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 2.0)))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def _observe(self, engine: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.engine_calls.labels(engine=engine, outcome=outcome).observe(
                time.perf_counter() - started
            )

    async def analyse(
        self,
        engine: str,
        camera_id: str,
        algorithm_code: str,
        regions: Sequence[Sequence[tuple[float, float]]],
    ) -> AnalyseResponse:
        if engine not in self.engines:
            raise EngineUnavailable(f"no analysis engine named {engine!r} is configured")
        if self.client is None:
            await self.start()
        assert self.client is not None
        breaker = self.breakers[engine]
        request = AnalyseRequest(
            camera_id=camera_id, algorithm_code=algorithm_code, regions=[list(p) for p in regions]
        )
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            if not breaker.allow(time.monotonic()):
                self._observe(engine, "refused", started)
                raise EngineUnavailable(f"engine {engine} is failing; its circuit breaker is open")
            settled = False
            try:
                async with asyncio.timeout(self.attempt_seconds):
                    response = await self.client.post(
                        f"{self.engines[engine].rstrip('/')}/v1/analyse",
                        json=request.model_dump(mode="json"),
                    )
                if response.status_code >= 500 or response.status_code == 429:
                    raise httpx.HTTPStatusError("engine error", request=response.request, response=response)
                response.raise_for_status()
                result = AnalyseResponse.model_validate_json(response.content)
            except (httpx.HTTPError, ValidationError, TimeoutError) as error:
                breaker.failed(time.monotonic())
                settled = True
                self._observe(engine, "error", started)
                last_error = f"{type(error).__name__}: {str(error)[:200]}"
            else:
                breaker.succeeded()
                settled = True
                self._observe(engine, "ok", started)
                return result
            finally:
                # Cancelled (the job stopped, the replica shuts down) or failed on our side: the
                # call says nothing of the engine, but a half-open trial must not stay taken.
                if not settled:
                    breaker.abandoned()
            if attempt < self.retries:
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise EngineUnavailable(f"engine {engine} failed {self.retries + 1} times: {last_error}")
