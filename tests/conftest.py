"""Cross-service fixtures: the case service and the gateway served on loopback, on real PG and NATS."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.auth import generate_keypair
from citygrid.db import create_sessionmaker
from citygrid.runtime import Runtime
from citygrid.settings import to_asyncpg_url
from citygrid.testing import Infrastructure, delete_streams, serve_app, truncate_all, wait_until
from gateway.consumers.service import register_consumer
from gateway.main import create_app as create_gateway_app
from gateway.settings import GatewaySettings
from services.case.events import NATS_IDENTITY as CASE_NATS
from services.case.main import CaseSettings
from services.case.main import create_app as create_case_app

# The test identity provider: an Ed25519 key pair (the gateway holds the public half only), its
# issuer, and the groups the gateway maps to CityGrid roles, scopes and districts.
PEOPLE_JWT_PRIVATE_KEY, PEOPLE_JWT_PUBLIC_KEY = generate_keypair()
PEOPLE_ISSUER = "https://idp.test.example/realms/city"
PEOPLE_AUDIENCE = "citygrid"
PEOPLE_GROUPS: dict[str, dict[str, Any]] = {
    "operators": {"roles": ["operator"], "scopes": ["cases:read", "cases:write"]},
    "readers": {"scopes": ["cases:read"]},
    "handlers": {"roles": ["handler"], "scopes": ["cases:read", "cases:write"]},
    # A person given the system role by mistake: the case service still refuses them its steps.
    "system-role": {"roles": ["system"], "scopes": ["cases:read", "cases:write"]},
    "admins": {"roles": ["supervisor"], "scopes": ["admin", "cases:read", "cases:write", "pii:read"]},
    "tianhe": {"district": "440106"},
}


def people_token(
    claims: dict[str, Any] | None = None,
    *,
    key: Any = None,
    headers: dict[str, Any] | None = None,
    defaults: bool = True,
) -> str:
    """A person's token as the test identity provider issues it: ``claims`` over the defaults
    (issuer, audience, issued now, an hour's life, a subject; none with ``defaults=False``), a claim
    set to None left out. Claims are signed as given, malformed ones included."""
    now = int(time.time())
    base: dict[str, Any] = (
        {"iss": PEOPLE_ISSUER, "aud": PEOPLE_AUDIENCE, "sub": "u-1001", "iat": now, "exp": now + 3600}
        if defaults
        else {}
    )
    merged = {name: value for name, value in (base | (claims or {})).items() if value is not None}
    payload = json.dumps(merged, separators=(",", ":")).encode()
    return jwt.api_jws.encode(payload, key or PEOPLE_JWT_PRIVATE_KEY, algorithm="EdDSA", headers=headers)


@dataclass(frozen=True)
class SuiteConsumer:
    """An API consumer the suite registers at the gateway before each test."""

    scopes: list[str]
    roles: list[str]
    district: str | None = None  # None: the whole city
    unit: str | None = None


CLERK_ROLES = ["operator", "dispatcher", "handler", "inspector"]
# The unit most tests dispatch to; the clerk handles for it.
CLERK_UNIT = "tianhe-sanitation"
CONSUMERS: dict[str, SuiteConsumer] = {
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
    "reporter": SuiteConsumer(["cases:read", "cases:write"], []),
    "reader": SuiteConsumer(["cases:read"], []),
    "admin": SuiteConsumer(["admin", "cases:read", "cases:write", "pii:read"], ["supervisor"]),
    # A district centre's keys: they see and change Tianhe's cases only.
    "tianhe-clerk": SuiteConsumer(
        ["cases:read", "cases:write"], CLERK_ROLES, district="440106", unit=CLERK_UNIT
    ),
    "tianhe-reader": SuiteConsumer(["cases:read"], [], district="440106"),
    "tianhe-admin": SuiteConsumer(
        ["admin", "cases:read", "cases:write", "pii:read"], ["supervisor"], district="440106"
    ),
    # A handler whose key names no unit: refused the unit's steps rather than allowed them everywhere.
    "unitless-handler": SuiteConsumer(["cases:read", "cases:write"], ["handler"]),
}


async def register_test_consumers(
    gateway_database: str, consumers: dict[str, SuiteConsumer]
) -> dict[str, str]:
    """Register ``consumers`` at the gateway; their keys by name."""
    engine = create_async_engine(to_asyncpg_url(gateway_database))
    sessions = create_sessionmaker(engine)
    api_keys: dict[str, str] = {}
    try:
        async with sessions() as session, session.begin():
            for name, consumer in consumers.items():
                _, api_keys[name] = await register_consumer(
                    session,
                    name=name,
                    scopes=consumer.scopes,
                    roles=consumer.roles,
                    district=consumer.district,
                    unit=consumer.unit,
                )
    finally:
        await engine.dispose()
    return api_keys


@dataclass
class Stack:
    infrastructure: Infrastructure
    gateway_url: str
    case_url: str
    case_app: FastAPI
    client: httpx.AsyncClient
    api_keys: dict[str, str]
    gateway_metrics_url: str = ""  # the gateway's internal listener (its /metrics)

    def as_(self, consumer: str, **headers: str) -> dict[str, str]:
        return {"X-API-Key": self.api_keys[consumer], **headers}

    @property
    def case_runtime(self) -> Runtime:
        runtime: Runtime = self.case_app.state.kit
        return runtime


@pytest.fixture(scope="session")
def databases(infrastructure: Infrastructure) -> dict[str, str]:
    return {"case": infrastructure.database("services.case"), "gateway": infrastructure.database("gateway")}


@pytest.fixture
async def clean(infrastructure: Infrastructure, databases: dict[str, str]) -> None:
    for url in databases.values():
        await truncate_all(url)
    await delete_streams(infrastructure.nats_url)


def case_settings(
    infrastructure: Infrastructure, databases: dict[str, str], nats_url: str | None = None
) -> CaseSettings:
    """The case service's settings: it connects to NATS as its own user, with its own permissions."""
    return CaseSettings(
        environment="test",
        database_url=databases["case"],
        **infrastructure.nats_settings(CASE_NATS.user, nats_url),
        internal_token_public_key=infrastructure.public_key,
        outbox_poll_seconds=0.2,
        blob_dir=infrastructure.workdir / "blobs" / "case",
    )


def gateway_settings(
    infrastructure: Infrastructure, databases: dict[str, str], case_url: str, **overrides: Any
) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": databases["gateway"],
        **infrastructure.nats_settings("gateway"),
        "upstreams": {"case": case_url},
        "internal_token_private_key": infrastructure.private_key,
        "people_jwt_key": PEOPLE_JWT_PUBLIC_KEY,
        "people_jwt_algorithms": ["EdDSA"],
        "people_jwt_issuer": PEOPLE_ISSUER,
        "people_jwt_audience": PEOPLE_AUDIENCE,
        "people_group_map": PEOPLE_GROUPS,
        "upstream_timeout": 5.0,
    }
    return GatewaySettings(**(values | overrides))


async def register_consumers(gateway_database: str) -> dict[str, str]:
    return await register_test_consumers(gateway_database, CONSUMERS)


@dataclass
class ServiceStack:
    """A domain service and the case service behind one gateway, and a client of the gateway."""

    client: httpx.AsyncClient
    keys: dict[str, str]

    def as_(self, consumer: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[consumer]}


@contextlib.asynccontextmanager
async def service_with_cases(
    infrastructure: Infrastructure,
    databases: dict[str, str],
    name: str,
    service_app: FastAPI,
    consumers: dict[str, SuiteConsumer],
) -> AsyncIterator[ServiceStack]:
    """Serve ``service_app`` as upstream ``name`` with the case service behind one gateway, the given
    consumers registered, once both services are connected to NATS."""
    case_app = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(case_app) as case_url, serve_app(service_app) as service_url:
        settings = gateway_settings(
            infrastructure, databases, case_url, upstreams={"case": case_url, name: service_url}
        )
        keys = await register_test_consumers(databases["gateway"], consumers)
        async with (
            serve_app(create_gateway_app(settings)) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
        ):
            await wait_until(service_app.state.kit.messaging_ready.is_set)
            await wait_until(case_app.state.kit.messaging_ready.is_set)
            yield ServiceStack(client, keys)


@pytest.fixture
async def stack_factory(infrastructure: Infrastructure, databases: dict[str, str], clean: None):
    """Start the case service (optionally on another NATS) behind a gateway."""

    @contextlib.asynccontextmanager
    async def start(nats_url: str | None = None) -> AsyncIterator[Stack]:
        case_app = create_case_app(case_settings(infrastructure, databases, nats_url))
        async with serve_app(case_app) as case_url:
            settings = gateway_settings(infrastructure, databases, case_url)
            api_keys = await register_consumers(databases["gateway"])
            gateway_app = create_gateway_app(settings)
            async with (
                serve_app(gateway_app) as gateway_url,
                serve_app(gateway_app.state.internal_app) as gateway_metrics_url,
                httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
            ):
                yield Stack(
                    infrastructure, gateway_url, case_url, case_app, client, api_keys, gateway_metrics_url
                )

    return start


@pytest.fixture
async def stack(stack_factory) -> AsyncIterator[Stack]:
    async with stack_factory() as running:
        await wait_until(running.case_runtime.messaging_ready.is_set)
        yield running


# The vision flows' fixture lives in tests/vision_stack.py; importing it here makes it visible to tests/.
# The gas flows' fixture lives in tests/gas_stack.py.
# The muck and waste services' databases, as their own tests have them.
from services.muck.tests.conftest import muck_database  # noqa: E402, F401
from services.waste.tests.conftest import waste_database  # noqa: E402, F401
from tests.gas_stack import gas_database, gas_stack  # noqa: E402, F401
from tests.vision_stack import vision_database, vision_stack  # noqa: E402, F401
