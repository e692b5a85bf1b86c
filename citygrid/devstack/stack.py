"""What ``make run`` starts: every process of the platform, named by module so the kit imports none."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from citygrid.natsauth import ADMIN, OPERATOR, NatsIdentity


@dataclass(frozen=True)
class ListenerSpec:
    """A listener of a process beside its HTTP port (a TCP protocol its devices speak)."""

    # As ``make run`` prints it: unique across processes (the muck and waste services both speak
    # JT/T 808), since it names the listener's line.
    label: str  # "muck JT/T 808"
    setting: str  # the process's variable for its port
    preferred_port: int
    scheme: str = "tcp"
    # The process's variable for the listener's address: loopback in development, like HTTP.
    host_setting: str | None = None


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str  # run as `python -m <module>`
    package: str  # holds `migrations/`
    database: str
    preferred_port: int
    demo_seed: str | None = None  # "<module>:<async function(client, headers)>"
    # "<module>:<NatsIdentity constant>": the NATS user the process connects as (none: no NATS).
    nats_identity: str | None = None
    listeners: tuple[ListenerSpec, ...] = ()


GATEWAY = ProcessSpec(
    "gateway",
    "gateway.main",
    "gateway",
    "citygrid_gateway",
    8000,
    nats_identity="gateway.subscriptions.intake:NATS_IDENTITY",
)

SERVICES: tuple[ProcessSpec, ...] = (
    ProcessSpec(
        "case",
        "services.case.main",
        "services.case",
        "citygrid_case",
        8101,
        "services.case.demo:seed",
        "services.case.events:NATS_IDENTITY",
    ),
    ProcessSpec(
        "gas",
        "services.gas.main",
        "services.gas",
        "citygrid_gas",
        8102,
        "services.gas.demo:seed",
        "services.gas.events:NATS_IDENTITY",
    ),
    ProcessSpec(
        "muck",
        "services.muck.main",
        "services.muck",
        "citygrid_muck",
        8103,
        "services.muck.demo:seed",
        "services.muck.events:NATS_IDENTITY",
        listeners=(
            ListenerSpec("muck JT/T 808", "CITYGRID_JT808_PORT", 8808, host_setting="CITYGRID_JT808_HOST"),
        ),
    ),
    ProcessSpec(
        "waste",
        "services.waste.main",
        "services.waste",
        "citygrid_waste",
        8104,
        "services.waste.demo:seed",
        "services.waste.events:NATS_IDENTITY",
        listeners=(
            ListenerSpec("waste JT/T 808", "CITYGRID_JT808_PORT", 8809, host_setting="CITYGRID_JT808_HOST"),
        ),
    ),
    ProcessSpec(
        "vision",
        "services.vision.main",
        "services.vision",
        "citygrid_vision",
        8105,
        "services.vision.demo:seed",
        "services.vision.events:NATS_IDENTITY",
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
    # "<module>:<function(engine) -> NatsIdentity>": the NATS user an engine of this kind gets.
    engine_identity: str | None = None


SIMULATORS: tuple[SimulatorSpec, ...] = (
    SimulatorSpec(
        "vision-simulator",
        "services.vision.simulator",
        8106,
        "vision",
        "CITYGRID_ANALYSIS_ENGINES",
        "simulator",
        "services.vision.events:engine_identity",
    ),
)


def _named(reference: str) -> object:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def service_identity(process: ProcessSpec) -> NatsIdentity | None:
    if process.nats_identity is None:
        return None
    identity = _named(process.nats_identity)
    assert isinstance(identity, NatsIdentity), process.nats_identity
    return identity


def service_identities() -> list[NatsIdentity]:
    """The NATS users of the platform's services, as each declares it."""
    return [identity for process in (*SERVICES, GATEWAY) if (identity := service_identity(process))]


def engine_identities(engines: Iterable[tuple[str, str]]) -> list[NatsIdentity]:
    """NATS users of outside engines, given as (service, engine name): each service says what its
    engines may do (the same template as its simulators')."""
    templates = {s.service: s.engine_identity for s in SIMULATORS if s.engine_identity}
    identities = []
    for service, engine in engines:
        make = _named(templates[service])
        assert callable(make), templates[service]
        identity = make(engine)
        assert isinstance(identity, NatsIdentity)
        identities.append(identity)
    return identities


def deployed_identities(engines: Iterable[tuple[str, str]]) -> list[NatsIdentity]:
    """Every NATS user of a deployment: the services, the engines, and the read-only operator."""
    return [*service_identities(), *engine_identities(engines), OPERATOR]


def dev_identities() -> list[NatsIdentity]:
    """The dev stack's and the tests' users: what a deployment has (the simulators standing in for
    the engines), plus the admin with every right that tools and test helpers use."""
    simulated = [(s.service, s.engine) for s in SIMULATORS if s.engine_identity]
    return [*deployed_identities(simulated), ADMIN]


# The demo consumer may do everything, so the README walkthrough needs one key only.
DEMO_CONSUMER = "demo"
DEMO_SCOPES = (
    "admin",
    "pii:read",
    "cases:read",
    "cases:write",
    "gas:read",
    "gas:write",
    "gas:ingest",
    "muck:read",
    "muck:write",
    "muck:ingest",
    "waste:read",
    "waste:write",
    "waste:ingest",
    "vision:read",
    "vision:write",
    "vision:ingest",
)
DEMO_ROLES = ("inspector", "operator", "dispatcher", "handler", "supervisor", "regulator")
