"""The layering rules of ARCHITECTURE.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

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
