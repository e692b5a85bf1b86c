"""One scope declaration per route, checked by the gateway and by the service itself.

Every operation of every service's OpenAPI document is called twice with a principal that holds
every scope of the platform but the one the declaration (``contract.scopes``) says it needs: once
through a real gateway with an API key, once straight at the service with a valid internal token
bound to that very request. Both must refuse it with 403 ``auth.missing_scope`` naming that scope,
so the gateway and the service compute the same scope for every route, and a principal that
reaches a service directly still needs it. The kit's mechanism is pinned on a probe service too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.auth import PRINCIPAL_HEADER, Principal, RequestTarget, sign_principal
from citygrid.db import create_sessionmaker
from citygrid.http import create_service_app
from citygrid.scopes import ScopeRules
from citygrid.settings import ServiceSettings, to_asyncpg_url
from citygrid.testing import Infrastructure, serve_app, truncate_all
from contract.scopes import SERVICES
from gateway.consumers.service import register_consumer
from gateway.main import create_app as create_gateway_app
from gateway.routing import UPSTREAMS, required_scope
from services.case.main import create_app as create_case_app
from services.vision.events import NATS_IDENTITY as VISION_NATS
from services.vision.main import VisionSettings
from services.vision.main import create_app as create_vision_app
from services.waste.events import NATS_IDENTITY as WASTE_NATS
from services.waste.main import WasteSettings
from services.waste.main import create_app as create_waste_app
from tests.conftest import case_settings, gateway_settings
from tests.test_bad_input import assert_problem

METHODS = ("get", "post", "put", "patch", "delete")
SAMPLE_ID = "0193f0a2-7c1e-7a00-8000-000000000000"
SCOPE_IN_TEXT = re.compile(r"needs the scope '([a-z0-9_:]+)'")


def every_scope() -> frozenset[str]:
    datasets = {rules.dataset for rules in SERVICES.values()}
    actions = ("read", "write", "ingest")
    return frozenset(
        {f"{dataset}:{action}" for dataset in datasets for action in actions} | {"admin", "pii:read"}
    )


@dataclass(frozen=True)
class Operation:
    service: str
    method: str
    template: str  # as the OpenAPI document has it
    path: str  # with sample parameters, as the service receives it

    @property
    def declared(self) -> str:
        return SERVICES[self.service].required_scope(self.method, self.path)

    @property
    def at_the_gateway(self) -> str:
        """The gateway's URL of the operation: the Open311 door, or ``/api/<service>/``."""
        return self.path if self.path.startswith("/open311/") else f"/api/{self.service}{self.path}"


def concrete(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: "json" if m.group(1) == "format" else SAMPLE_ID, template)


def operations(service: str, app: FastAPI) -> list[Operation]:
    found = []
    for template, item in app.openapi()["paths"].items():
        if not template.startswith(("/v1/", "/open311/")):
            continue  # health: served to anyone, never routed by the gateway
        for method in METHODS:
            if method in item:
                found.append(Operation(service, method.upper(), template, concrete(template)))
    return found


def refused_scope(response: httpx.Response) -> str:
    """The scope a 403 ``auth.missing_scope`` names, in problem+json or in Open311's error list."""
    assert response.status_code == 403, response.text
    body: Any = response.json()
    if isinstance(body, list):  # Open311: [{"code": 403, "description": ..., "problem": ...}]
        assert body[0]["problem"] == "auth.missing_scope", body
        match = SCOPE_IN_TEXT.search(body[0]["description"])
        assert match, body
        return match.group(1)
    assert_problem(response, 403, "auth.missing_scope")
    scope: str = body["required_scope"]
    return scope


@dataclass
class Platform:
    infrastructure: Infrastructure
    gateway: httpx.AsyncClient
    services: dict[str, str]
    apps: dict[str, FastAPI]
    keys: dict[frozenset[str], str]  # scopes → API key


@pytest.fixture
async def platform(
    infrastructure, databases, vision_database, waste_database, clean, tmp_path: Path
) -> AsyncIterator[Platform]:
    await truncate_all(vision_database)
    await truncate_all(waste_database)
    apps = {
        "case": create_case_app(case_settings(infrastructure, databases)),
        "vision": create_vision_app(
            VisionSettings(
                environment="test",
                database_url=vision_database,
                **infrastructure.nats_settings(VISION_NATS.user),
                internal_token_public_key=infrastructure.public_key,
                blob_dir=tmp_path / "blobs",
            )
        ),
        "waste": create_waste_app(
            WasteSettings(
                environment="test",
                database_url=waste_database,
                **infrastructure.nats_settings(WASTE_NATS.user),
                internal_token_public_key=infrastructure.public_key,
                jt808_port=0,  # the kernel's pick: parallel workers never share a port
            )
        ),
    }
    wanted = {frozenset(every_scope() - {rules.required_scope(m, p)}) for rules, m, p in probes(apps)}
    keys = await register_keys(databases["gateway"], wanted)
    async with (
        serve_app(apps["case"]) as case_url,
        serve_app(apps["vision"]) as vision_url,
        serve_app(apps["waste"]) as waste_url,
    ):
        upstreams = {"case": case_url, "vision": vision_url, "waste": waste_url}
        settings = gateway_settings(infrastructure, databases, case_url, upstreams=upstreams)
        async with (
            serve_app(create_gateway_app(settings)) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as gateway,
        ):
            yield Platform(infrastructure, gateway, upstreams, apps, keys)


def probes(apps: dict[str, FastAPI]) -> list[tuple[ScopeRules, str, str]]:
    return [
        (SERVICES[o.service], o.method, o.path) for name, app in apps.items() for o in operations(name, app)
    ]


async def register_keys(gateway_database: str, scope_sets: set[frozenset[str]]) -> dict[frozenset[str], str]:
    engine = create_async_engine(to_asyncpg_url(gateway_database))
    keys: dict[frozenset[str], str] = {}
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            for n, scopes in enumerate(sorted(scope_sets, key=sorted)):
                _, keys[scopes] = await register_consumer(
                    session, name=f"all-but-one-{n}", scopes=sorted(scopes), roles=["supervisor", "operator"]
                )
    finally:
        await engine.dispose()
    return keys


def all_but(scope: str) -> frozenset[str]:
    return frozenset(every_scope() - {scope})


def direct_headers(
    infrastructure: Infrastructure, operation: Operation, scopes: frozenset[str]
) -> dict[str, str]:
    principal = Principal(
        subject="consumer:scope-probe",
        kind="consumer",
        name="scope probe",
        roles=frozenset({"supervisor", "operator"}),
        scopes=scopes,
    )
    token = sign_principal(
        principal,
        private_key=infrastructure.private_key,
        audience=operation.service,
        request=RequestTarget(operation.method, operation.path.encode()),
    )
    return {PRINCIPAL_HEADER: token}


def declaration_of(app: FastAPI, service: str) -> ScopeRules:
    """What the service app checks itself: its own declaration, passed by its ``main.py``."""
    rules: ScopeRules | None = app.state.scope_rules
    assert rules is not None, f"services/{service}/main.py must pass scopes= to create_service_app"
    return rules


async def test_the_openapi_documents_have_the_routes_each_kind_of_scope_guards(platform):
    ops = [o for name, app in platform.apps.items() for o in operations(name, app)]
    declared = {o.declared for o in ops}
    assert {"cases:read", "cases:write", "vision:read", "vision:write", "vision:ingest", "admin"} <= declared
    ingest = sorted(o.path for o in ops if o.declared == "vision:ingest")
    assert ingest == ["/v1/cameras/heartbeats", "/v1/detections"]
    for o in ops:  # the gateway's own function, on the path it forwards, agrees with the declaration
        assert required_scope(UPSTREAMS[o.service], o.method, o.path.lstrip("/")) == o.declared, o


@pytest.mark.parametrize("service", ["case", "vision", "waste"])
async def test_every_route_is_refused_by_the_gateway_without_its_declared_scope(platform, service):
    for operation in operations(service, platform.apps[service]):
        key = platform.keys[all_but(operation.declared)]
        response = await platform.gateway.request(
            operation.method, operation.at_the_gateway, headers={"X-API-Key": key}
        )
        assert refused_scope(response) == operation.declared, operation


@pytest.mark.parametrize("service", ["case", "vision", "waste"])
async def test_every_route_is_refused_by_the_service_itself_without_its_declared_scope(platform, service):
    rules = declaration_of(platform.apps[service], service)
    assert rules is SERVICES[service]
    async with httpx.AsyncClient(base_url=platform.services[service], timeout=20.0) as direct:
        for operation in operations(service, platform.apps[service]):
            headers = direct_headers(platform.infrastructure, operation, all_but(operation.declared))
            response = await direct.request(operation.method, operation.path, headers=headers)
            assert refused_scope(response) == operation.declared, operation


# -- the kit's mechanism, on a probe service ----------------------------------------------------------

PROBE = ScopeRules(
    service="probe", dataset="things", ingest_paths=frozenset({"v1/feed"}), anonymous_reads=("public",)
)


def probe_app(settings: ServiceSettings) -> FastAPI:
    api = APIRouter(prefix="/v1")
    public = APIRouter(prefix="/public")

    @api.get("/things")
    async def list_things() -> dict[str, str]:
        return {"ok": "read"}

    @api.post("/things")
    async def add_thing() -> dict[str, str]:
        return {"ok": "write"}

    @api.post("/feed")
    async def feed() -> dict[str, str]:
        return {"ok": "ingest"}

    @api.get("/admin/things")
    async def administer() -> dict[str, str]:
        return {"ok": "admin"}

    @public.get("/things")
    async def public_things() -> dict[str, str]:
        return {"ok": "public"}

    @public.post("/things")
    async def public_post() -> dict[str, str]:
        return {"ok": "public write"}

    return create_service_app(settings, title="probe", routers=[api], open_routers=[public], scopes=PROBE)


def probe_settings(infrastructure: Infrastructure, database: str, **changes: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "service_name": "probe",
        "environment": "test",
        "database_url": database,
        "nats_url": infrastructure.nats_url,
        "internal_token_public_key": infrastructure.public_key,
    }
    return ServiceSettings(**(values | changes))


@contextlib.asynccontextmanager
async def probe(
    infrastructure: Infrastructure, database: str, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = probe_app(probe_settings(infrastructure, database, **changes))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def token_for(
    infrastructure: Infrastructure, method: str, path: str, *scopes: str, kind: str = "consumer"
) -> dict:
    principal = Principal(subject=f"{kind}:p", kind=kind, name="p", scopes=frozenset(scopes))  # type: ignore[arg-type]
    request = RequestTarget(method, path.encode())
    token = sign_principal(
        principal, private_key=infrastructure.private_key, audience="probe", request=request
    )
    return {PRINCIPAL_HEADER: token}


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/things", "things:read"),
        ("POST", "/v1/things", "things:write"),
        ("POST", "/v1/feed", "things:ingest"),
        ("GET", "/v1/admin/things", "admin"),
        ("GET", "/public/things", "things:read"),
        ("POST", "/public/things", "things:write"),
    ],
)
async def test_a_probe_service_refuses_a_direct_call_without_the_declared_scope(
    infrastructure, databases, method, path, scope
):
    async with probe(infrastructure, databases["gateway"]) as client:
        others = every_scope() | {"things:read", "things:write", "things:ingest"}
        lacking = await client.request(
            method, path, headers=token_for(infrastructure, method, path, *(others - {scope}))
        )
        assert refused_scope(lacking) == scope
        holding = await client.request(method, path, headers=token_for(infrastructure, method, path, scope))
        assert holding.status_code == 200, holding.text


async def test_an_anonymous_principal_may_make_only_the_reads_the_declaration_opens(
    infrastructure, databases
):
    async with probe(infrastructure, databases["gateway"]) as client:
        read = await client.get(
            "/public/things", headers=token_for(infrastructure, "GET", "/public/things", kind="anonymous")
        )
        assert read.json() == {"ok": "public"}
        for method, path, scope in [
            ("POST", "/public/things", "things:write"),
            ("GET", "/v1/things", "things:read"),
            ("GET", "/v1/admin/things", "admin"),
        ]:
            headers = token_for(
                infrastructure, method, path, "admin", "things:read", "things:write", kind="anonymous"
            )
            assert refused_scope(await client.request(method, path, headers=headers)) == scope


async def test_in_production_a_service_refuses_an_unbound_internal_token(infrastructure, databases):
    async with probe(infrastructure, databases["gateway"], environment="production") as client:
        principal = Principal(
            subject="consumer:p", kind="consumer", name="p", scopes=frozenset({"things:read"})
        )
        unbound = sign_principal(principal, private_key=infrastructure.private_key, audience="probe")
        response = await client.get("/v1/things", headers={PRINCIPAL_HEADER: unbound})
        assert_problem(response, 401, "auth.token_not_for_this_request")
        bound = await client.get(
            "/v1/things", headers=token_for(infrastructure, "GET", "/v1/things", "things:read")
        )
        assert bound.status_code == 200, bound.text


def test_a_service_with_routes_must_declare_its_scopes_in_production_and_only_its_own(infrastructure):
    production = probe_settings(infrastructure, "postgresql://x@127.0.0.1/x", environment="production")
    with pytest.raises(ValueError, match="scopes="):
        create_service_app(production, title="probe", routers=[APIRouter()])
    with pytest.raises(ValueError, match="given to the probe service"):
        create_service_app(production, title="probe", routers=[APIRouter()], scopes=SERVICES["case"])
    assert create_service_app(production, title="probe", scopes=PROBE).state.kit.verifier.require_binding
    assert not create_service_app(
        probe_settings(infrastructure, "postgresql://x@127.0.0.1/x"), title="probe"
    ).state.kit.verifier.require_binding


def test_every_declared_service_is_one_the_gateway_may_route_to():
    assert set(SERVICES) == set(UPSTREAMS) == {"case", "vision", "gas", "waste", "muck"}
    assert len({rules.dataset for rules in SERVICES.values()}) == len(SERVICES)


def test_a_district_bound_admin_is_refused_every_admin_path_by_the_declaration_itself():
    """``v1/admin`` is the whole city's administration: the one declaration the gateway and the
    service check refuses a district's admin there, and lets it do its district's ordinary work."""
    from citygrid.auth import OtherDistrict

    rules = ScopeRules(service="case", dataset="cases")
    district_admin = Principal(
        subject="consumer:t",
        kind="consumer",
        name="t",
        scopes=frozenset({"admin", "cases:write"}),
        district="440106",
    )
    city_admin = district_admin.model_copy(update={"district": None})
    for method, path in (("PUT", "v1/admin/calendars/2031"), ("GET", "/v1/admin/dead-letters")):
        with pytest.raises(OtherDistrict):
            rules.check(district_admin, method, path)
        rules.check(city_admin, method, path)
    rules.check(district_admin, "POST", "v1/cases")
