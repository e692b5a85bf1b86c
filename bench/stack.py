"""What the benchmarks share: timing helpers, and the case service served behind a gateway on
throwaway databases, reachable both directly (with a signed principal) and through the gateway."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.db import create_sessionmaker
from citygrid.natsauth import NatsAccess, NatsIdentity
from citygrid.settings import to_asyncpg_url
from citygrid.testing import serve_app

SCOPES = frozenset({"cases:read", "cases:write"})
PRINCIPAL = Principal(
    subject="bench", kind="service", name="bench", roles=frozenset({"operator"}), scopes=SCOPES
)
REPORT: dict[str, Any] = {
    "category_code": "20106",
    "description": "bench",
    "location": {"type": "Point", "coordinates": [113.32, 23.13]},
    "district_code": "440106",
    "source": "inspector",
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(samples) * 1000, "p99_ms": percentile(samples, 0.99) * 1000}


def beside(measured: list[float], baseline: list[float]) -> dict[str, Any]:
    """Both summaries and the ratio of their medians: the figure that survives a noisy machine."""
    return {
        "measured": summary(measured),
        "baseline": summary(baseline),
        "ratio_p50": statistics.median(measured) / statistics.median(baseline),
    }


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        result = await call()
        samples.append(time.perf_counter() - started)
        if isinstance(result, httpx.Response):
            result.raise_for_status()
    return samples


def service_nats(nats: NatsAccess, identity: NatsIdentity) -> dict[str, Any]:
    """The settings that connect a service to the benchmark's NATS as its own user."""
    user, password = nats.credentials(identity.user)
    return {"nats_url": nats.server_url, "nats_user": user, "nats_password": password}


@dataclass(frozen=True)
class CaseBehindGateway:
    case_url: str
    gateway_url: str
    api_key: str
    private_key: str

    def direct(self) -> dict[str, str]:
        """Headers of a direct call: a freshly signed principal, as the gateway would send."""
        return {PRINCIPAL_HEADER: sign_principal(PRINCIPAL, private_key=self.private_key, audience="case")}

    @property
    def via_gateway(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@contextlib.asynccontextmanager
async def case_behind_gateway(
    case_db: str, gateway_db: str, nats: NatsAccess, **case_settings: Any
) -> AsyncIterator[CaseBehindGateway]:
    """Serve the case service and a gateway in front of it on loopback, with an API key for the
    benchmark; the databases must exist and be migrated."""
    from gateway.consumers.service import register_consumer
    from gateway.main import create_app as create_gateway
    from gateway.settings import GatewaySettings
    from gateway.subscriptions.intake import NATS_IDENTITY as GATEWAY_IDENTITY
    from services.case.events import NATS_IDENTITY
    from services.case.main import CaseSettings
    from services.case.main import create_app as create_case

    private_key, public_key = generate_keypair()
    engine = create_async_engine(to_asyncpg_url(gateway_db))
    async with create_sessionmaker(engine)() as session, session.begin():
        _, api_key = await register_consumer(
            session,
            name=f"bench-{time.time_ns()}",
            scopes=sorted(SCOPES),
            roles=sorted(PRINCIPAL.roles),
            rate_limit_per_minute=1_000_000,
        )
    await engine.dispose()
    blob_dir = Path(tempfile.mkdtemp(prefix="citygrid-bench-blobs-"))
    case_app = create_case(
        CaseSettings(
            environment="test",
            database_url=case_db,
            **service_nats(nats, NATS_IDENTITY),
            internal_token_public_key=public_key,
            blob_dir=blob_dir,
            **case_settings,
        )
    )
    try:
        async with serve_app(case_app) as case_url:
            gateway_app = create_gateway(
                GatewaySettings(
                    environment="test",
                    database_url=gateway_db,
                    **service_nats(nats, GATEWAY_IDENTITY),
                    upstreams={"case": case_url},
                    internal_token_private_key=private_key,
                )
            )
            async with serve_app(gateway_app) as gateway_url:
                yield CaseBehindGateway(case_url, gateway_url, api_key, private_key)
    finally:
        shutil.rmtree(blob_dir, ignore_errors=True)
