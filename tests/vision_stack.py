"""Fixture of the vision flows: case, vision and the engine simulator behind one gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from citygrid.runtime import Runtime
from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.main import create_app as create_gateway_app
from services.case.main import create_app as create_case_app
from services.vision.events import NATS_IDENTITY as VISION_NATS
from services.vision.main import VisionSettings
from services.vision.main import create_app as create_vision_app
from services.vision.simulator import create_simulator
from tests.conftest import (
    CLERK_ROLES,
    CLERK_UNIT,
    SuiteConsumer,
    case_settings,
    gateway_settings,
    register_test_consumers,
)

# name → (scopes, roles)
VISION_CONSUMERS: dict[str, SuiteConsumer] = {
    "engine": SuiteConsumer(["vision:ingest"], []),
    "reviewer": SuiteConsumer(["vision:read", "vision:write"], ["operator"]),
    "viewer": SuiteConsumer(["vision:read"], []),
    "vision-admin": SuiteConsumer(["vision:read", "vision:write", "vision:ingest", "admin"], ["operator"]),
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
    # A district centre's reviewer and viewer: Tianhe's cameras and alarms only.
    "tianhe-reviewer": SuiteConsumer(["vision:read", "vision:write"], ["operator"], district="440106"),
    "tianhe-viewer": SuiteConsumer(["vision:read"], [], district="440106"),
}


@dataclass
class VisionStack:
    infrastructure: Infrastructure
    gateway_url: str
    client: httpx.AsyncClient
    api_keys: dict[str, str]
    case_app: FastAPI
    vision_app: FastAPI
    simulator: FastAPI
    simulator_url: str

    def as_(self, consumer: str, **headers: str) -> dict[str, str]:
        return {"X-API-Key": self.api_keys[consumer], **headers}

    @property
    def vision_runtime(self) -> Runtime:
        runtime: Runtime = self.vision_app.state.kit
        return runtime


@pytest.fixture(scope="session")
def vision_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.vision")


async def _register(gateway_database: str) -> dict[str, str]:
    return await register_test_consumers(gateway_database, VISION_CONSUMERS)


@pytest.fixture
async def vision_stack(
    infrastructure: Infrastructure,
    databases: dict[str, str],
    vision_database: str,
    clean: None,
    tmp_path: Path,
) -> AsyncIterator[VisionStack]:
    await truncate_all(vision_database)
    simulator = create_simulator()
    case_app = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(simulator) as simulator_url, serve_app(case_app) as case_url:
        vision_app = create_vision_app(
            VisionSettings(
                environment="test",
                database_url=vision_database,
                **infrastructure.nats_settings(VISION_NATS.user),
                internal_token_public_key=infrastructure.public_key,
                outbox_poll_seconds=0.2,
                blob_dir=tmp_path / "blobs",
                analysis_engines={"simulator": simulator_url},
                recheck_delay_seconds=0.0,
                recheck_scan_seconds=0.2,
            )
        )
        async with serve_app(vision_app) as vision_url:
            settings = gateway_settings(
                infrastructure, databases, case_url, upstreams={"case": case_url, "vision": vision_url}
            )
            keys = await _register(databases["gateway"])
            async with (
                serve_app(create_gateway_app(settings)) as gateway_url,
                httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
            ):
                running = VisionStack(
                    infrastructure, gateway_url, client, keys, case_app, vision_app, simulator, simulator_url
                )
                await wait_until(running.vision_runtime.messaging_ready.is_set)
                await wait_until(case_app.state.kit.messaging_ready.is_set)
                yield running
