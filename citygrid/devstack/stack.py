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
    ProcessSpec(
        "vision",
        "services.vision.main",
        "services.vision",
        "citygrid_vision",
        8105,
        "services.vision.demo:seed",
    ),
)


@dataclass(frozen=True)
class SimulatorSpec:
    """A stand-in for an outside system a service calls (no database, not behind the gateway)."""

    name: str
    module: str
    preferred_port: int
    service: str  # the service that calls it
    setting: str  # that service's variable naming it: a JSON map {engine name: base URL}
    engine: str


SIMULATORS: tuple[SimulatorSpec, ...] = (
    SimulatorSpec(
        "vision-simulator",
        "services.vision.simulator",
        8106,
        "vision",
        "CITYGRID_ANALYSIS_ENGINES",
        "simulator",
    ),
)

# The demo consumer may do everything, so the README walkthrough needs one key only.
DEMO_CONSUMER = "demo"
DEMO_SCOPES = (
    "admin",
    "pii:read",
    "cases:read",
    "cases:write",
    "vision:read",
    "vision:write",
    "vision:ingest",
)
DEMO_ROLES = ("inspector", "operator", "dispatcher", "handler", "supervisor")
