"""The layering rules of ARCHITECTURE.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: Path, include_tests: bool = False) -> list[Path]:
    return [p for p in folder.rglob("*.py") if include_tests or "tests" not in p.relative_to(ROOT).parts]


def offending(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service_and_not_the_gateway(service):
    others = tuple(f"services.{other}" for other in SERVICES if other != service)
    assert (
        offending(python_files(ROOT / "services" / service, include_tests=True), (*others, "gateway")) == []
    )


def test_the_kit_and_the_contract_import_no_service():
    # The dev stack is the one exception: it is the composition root that starts every process.
    kit = [p for p in python_files(ROOT / "citygrid") if "devstack" not in p.parts]
    files = kit + python_files(ROOT / "contract")
    assert offending(files, ("services", "gateway")) == []
    assert offending(kit, ("contract",)) == []


def test_the_gateway_imports_no_service():
    assert offending(python_files(ROOT / "gateway", include_tests=True), ("services",)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_domain_modules_do_no_io(service):
    domain = ROOT / "services" / service / "domain"
    files = list(domain.rglob("*.py")) if domain.exists() else []
    assert offending(files, ("fastapi", "sqlalchemy", "httpx", "nats", "asyncpg", "starlette")) == []


def _calls_of(routes: list[Any]) -> list[tuple[str, Any]]:
    """Every endpoint and dependency function of these routes, with included routers' own."""
    from fastapi.dependencies.utils import get_dependant
    from fastapi.routing import APIRoute

    found: list[tuple[str, Any]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append((route.path, route.endpoint))
            stack = list(route.dependant.dependencies)
            while stack:
                sub = stack.pop()
                if sub.call is not None:
                    found.append((route.path, sub.call))
                stack.extend(sub.dependencies)
        elif hasattr(route, "original_router"):  # an included router and the dependencies it adds
            for depends in route.include_context.dependencies:
                found.append(("(router)", depends.dependency))
                found.extend(
                    ("(router)", sub.call)
                    for sub in get_dependant(path="", call=depends.dependency).dependencies
                    if sub.call is not None
                )
            found.extend(_calls_of(route.original_router.routes))
    return found


def test_no_route_runs_a_dependency_or_an_endpoint_in_the_thread_pool():
    """FastAPI runs a plain ``def`` dependency or endpoint in a worker thread on every request (a
    thread hop each, measured at several percent of a request's CPU): every one is ``async def``."""
    import inspect

    from gateway.main import create_app as create_gateway
    from gateway.settings import GatewaySettings
    from services.case.main import CaseSettings
    from services.case.main import create_app as create_case
    from services.vision.main import VisionSettings
    from services.vision.main import create_app as create_vision

    apps = [
        create_case(CaseSettings(environment="test")),
        create_vision(VisionSettings(environment="test")),
        create_gateway(GatewaySettings(environment="test", upstreams={"case": "http://case"})),
    ]
    calls = [call for app in apps for call in _calls_of(app.routes)]
    assert len(calls) > 100  # the walk reached the routers' routes
    sync = sorted(
        {
            f"{path}: {getattr(call, '__qualname__', call)}"
            for path, call in calls
            if not inspect.iscoroutinefunction(call if inspect.isfunction(call) else call.__call__)
        }
    )
    assert sync == []
