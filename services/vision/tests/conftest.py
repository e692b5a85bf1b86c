"""The vision service and the analysis-engine simulator served on loopback, on real PostgreSQL and NATS."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.messaging import inbox_prefix
from citygrid.runtime import Runtime
from citygrid.testing import Infrastructure, delete_streams, serve_app, truncate_all, wait_until
from services.vision.events import NATS_IDENTITY, engine_identity
from services.vision.main import VisionSettings, create_app
from services.vision.simulator import create_simulator, fake_jpeg

TIANHE_CAMERA = "44010600081320000001"
YUEXIU_CAMERA = "44010400081310000002"
INGEST = ("vision:ingest",)
REVIEWER = ("vision:read", "vision:write")
CONFIGURER = (*REVIEWER, "admin")  # registers cameras, sets their regions and gates


@dataclass
class Vision:
    infrastructure: Infrastructure
    app: FastAPI
    url: str
    client: httpx.AsyncClient
    simulator_url: str
    simulator: FastAPI

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.kit
        return runtime

    def as_(
        self, scopes=REVIEWER, roles=("operator",), subject="reviewer-1", **headers: str
    ) -> dict[str, str]:
        principal = Principal(
            subject=subject, kind="consumer", name=subject, roles=frozenset(roles), scopes=frozenset(scopes)
        )
        return {PRINCIPAL_HEADER: self.infrastructure.token(principal, "vision"), **headers}

    async def register(self, *cameras: dict[str, Any]) -> httpx.Response:
        response = await self.client.post(
            "/v1/cameras/import", json={"cameras": list(cameras)}, headers=self.as_(CONFIGURER)
        )
        assert response.status_code == 200, response.text
        return response

    async def ingest(self, *detections: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/detections", json={"detections": list(detections)}, headers=self.as_(INGEST)
        )


def camera(camera_id: str = TIANHE_CAMERA, **changes: Any) -> dict[str, Any]:
    return {
        "camera_id": camera_id,
        "name": "Tianhe Road bus stop",
        "owner": "city_management",
        "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
        "address": "Tianhe Road bus stop",
        "engine": "simulator",
        **changes,
    }


def snapshot(label: str = "frame") -> str:
    return base64.b64encode(fake_jpeg(label)).decode()


def detection(
    camera_id: str = TIANHE_CAMERA,
    algorithm: str = "exposed_garbage",
    confidence: float = 0.9,
    box: dict[str, float] | None = None,
    at: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    return {
        "camera_id": camera_id,
        "algorithm_code": algorithm,
        "detected_at": (at or datetime.now(UTC)).isoformat(),
        "confidence": confidence,
        "boxes": [box or {"x": 0.4, "y": 0.4, "width": 0.2, "height": 0.2}],
        **changes,
    }


@contextlib.asynccontextmanager
async def engine_nats(
    infrastructure: Infrastructure, engine: str = "simulator", errors: list[Exception] | None = None
) -> AsyncIterator[NatsClient]:
    """A connection as an analysis engine's NATS user (the dev stack's engine is the simulator);
    the server's refusals land in ``errors``."""
    user, password = infrastructure.nats_credentials(engine_identity(engine).user)

    async def collect(error: Exception) -> None:
        if errors is not None:
            errors.append(error)

    client = await nats.connect(
        infrastructure.nats_server_url,
        user=user,
        password=password,
        inbox_prefix=inbox_prefix(user),
        error_cb=collect,
        connect_timeout=5,
        allow_reconnect=False,
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def vision_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.vision")


def vision_settings(
    infrastructure: Infrastructure, database: str, blob_dir: Path, simulator_url: str, **overrides: Any
) -> VisionSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database,
        # The service connects as its own NATS user, with its own permissions.
        **infrastructure.nats_settings(NATS_IDENTITY.user),
        "internal_token_public_key": infrastructure.public_key,
        "outbox_poll_seconds": 0.2,
        "blob_dir": blob_dir,
        "analysis_engines": {"simulator": simulator_url},
        "recheck_delay_seconds": 0.0,
        "recheck_scan_seconds": 0.2,
        "engine_retries": 0,
    }
    return VisionSettings(**(values | overrides))


@pytest.fixture
async def vision_factory(infrastructure: Infrastructure, vision_database: str, tmp_path: Path):
    await truncate_all(vision_database)
    await delete_streams(infrastructure.nats_url)

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Vision]:
        simulator = create_simulator()
        async with serve_app(simulator) as simulator_url:
            settings = vision_settings(
                infrastructure, vision_database, tmp_path / "blobs", simulator_url, **overrides
            )
            app = create_app(settings)
            async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
                running = Vision(infrastructure, app, url, client, simulator_url, simulator)
                await wait_until(running.runtime.messaging_ready.is_set)
                yield running

    return start


@pytest.fixture
async def vision(vision_factory) -> AsyncIterator[Vision]:
    async with vision_factory() as running:
        yield running
