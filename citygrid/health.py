"""``/healthz``: the process is alive. ``/readyz``: it can reach its database and NATS."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from citygrid.problems import problem
from citygrid.runtime import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False, response_model=None)
async def readyz(runtime: RuntimeDep) -> dict[str, object] | JSONResponse:
    checks = await runtime.readiness()
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    return problem(503, "service.not_ready", "Not ready", "a dependency is unreachable", checks=checks)
