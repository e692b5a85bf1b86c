"""``/healthz``: the process is alive. ``/readyz``: it can serve HTTP (its database answers).

NATS is reported in the readiness body (and as ``citygrid_nats_connected``) but does not decide
it: while NATS is away requests keep succeeding and events wait in the outbox.
"""

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
    nats = {"nats": runtime.nats_connected} if runtime.messaging else {}
    if all(checks.values()):
        return {"status": "ready", "checks": checks, "reported": nats}
    return problem(
        503, "service.not_ready", "Not ready", "the database is unreachable", checks=checks, reported=nats
    )
