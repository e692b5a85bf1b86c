"""What ``make run`` starts: every process of the platform, named by module so the kit imports none."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str  # run as `python -m <module>`
    package: str  # holds `migrations/`
    database: str
    preferred_port: int
    demo_seed: str | None = None  # "<module>:<async function(client, headers)>"


GATEWAY = ProcessSpec("gateway", "gateway.main", "gateway", "citygrid_gateway", 8000)

SERVICES: tuple[ProcessSpec, ...] = (
    ProcessSpec(
        "case", "services.case.main", "services.case", "citygrid_case", 8101, "services.case.demo:seed"
    ),
)

# The demo consumer may do everything, so the README walkthrough needs one key only.
DEMO_CONSUMER = "demo"
DEMO_SCOPES = ("admin", "pii:read", "cases:read", "cases:write")
DEMO_ROLES = ("inspector", "operator", "dispatcher", "handler", "supervisor")
