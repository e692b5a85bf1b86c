"""``make run``: PostgreSQL, NATS, migrations, every service and the gateway, demo data, URLs.

PostgreSQL and NATS are embedded (their data under ``.data/``) unless ``DATABASE_URL``/``NATS_URL``
name real servers. The services run as separate processes under honcho; Ctrl-C or SIGTERM stops
them all, then the embedded servers.

The embedded NATS refuses anonymous clients: it runs with every process's user and permissions
(``citygrid.natsauth``), passwords generated for each run into ``.data/nats-auth.conf`` (0600),
and each service gets its own user's credentials in its environment. With ``NATS_URL``, a service's
password comes from ``<USER>_NATS_PASSWORD`` (the variables the Kubernetes config reads).

``python -m citygrid.devstack nats-auth --engine vision:edge-platform`` prints the authorization
block of a deployment (passwords as environment references) for ``deploy/kubernetes``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from citygrid.auth import generate_keypair
from citygrid.devstack.servers import (
    EmbeddedNats,
    EmbeddedPostgres,
    NatsUsers,
    create_databases,
    database_url,
    free_port,
    nats_access_from_environment,
)
from citygrid.devstack.stack import (
    DEMO_CONSUMER,
    DEMO_ROLES,
    DEMO_SCOPES,
    GATEWAY,
    SERVICES,
    SIMULATORS,
    ProcessSpec,
    deployed_identities,
    dev_identities,
    service_identity,
)
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess, authorization_config

DEV_PEOPLE_AUDIENCE = "citygrid"
# The dev stack's stand-in for the city's identity provider: a local Ed25519 key under the data
# dir (.data/keys/people-jwt.pem signs, the gateway holds the public half) and these groups.
DEV_PEOPLE_ISSUER = "citygrid-dev-identity-provider"
DEV_PEOPLE_GROUPS: dict[str, dict[str, object]] = {
    "citygrid-operators": {
        "roles": ["operator", "dispatcher"],
        "scopes": ["cases:read", "cases:write", "vision:read", "vision:write"],
    },
    "citygrid-inspectors": {"roles": ["inspector"], "scopes": ["cases:read", "cases:write"]},
    "citygrid-handlers": {"roles": ["handler"], "scopes": ["cases:read", "cases:write"]},
    "citygrid-supervisors": {
        "roles": ["supervisor"],
        "scopes": [
            "cases:read",
            "cases:write",
            "pii:read",
            "vision:read",
            "vision:write",
            "gas:read",
            "gas:write",
        ],
    },
    "citygrid-gas-regulators": {"roles": ["regulator"], "scopes": ["gas:read", "gas:write"]},
    "citygrid-muck-regulators": {"roles": ["regulator"], "scopes": ["muck:read", "muck:write"]},
    "citygrid-waste-regulators": {"roles": ["regulator"], "scopes": ["waste:read", "waste:write"]},
    "citygrid-admins": {"scopes": ["admin"]},
    "tianhe-district": {"district": "440106"},
}


def say(message: str) -> None:
    print(f"[citygrid] {message}", flush=True)


def read_or_create(path: Path, make: object) -> str:
    if path.exists():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make() if callable(make) else str(make)
    path.write_text(str(value))
    path.chmod(0o600)
    return str(value)


def dev_keys(data: Path) -> tuple[str, str, str]:
    """The internal principal's key pair, and the public key of the local people's-token signer.

    Both pairs are Ed25519, made once under ``<data>/keys`` (0600). ``people-jwt.pem`` plays the
    identity provider: sign a person's token with it (docs/identity-provider.md); the gateway gets
    only ``people-jwt.pub.pem``.
    """
    keys = data / "keys"
    for name in ("internal", "people-jwt"):
        if not (keys / f"{name}.pem").exists():
            private, public = generate_keypair()
            read_or_create(keys / f"{name}.pem", private)
            (keys / f"{name}.pub.pem").unlink(missing_ok=True)
            read_or_create(keys / f"{name}.pub.pem", public)
    return (
        (keys / "internal.pem").read_text(),
        (keys / "internal.pub.pem").read_text(),
        (keys / "people-jwt.pub.pem").read_text(),
    )


def demo_api_key(data: Path) -> str:
    from gateway.keys import issue_key

    return read_or_create(data / "keys" / "demo-api-key", lambda: issue_key().plaintext)


async def ensure_demo_consumer(gateway_url_db: str, plaintext: str) -> None:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from citygrid.db import create_sessionmaker
    from citygrid.settings import to_asyncpg_url
    from gateway.consumers.service import register_consumer
    from gateway.keys import prefix_of
    from gateway.models import ApiConsumer, ConsumerKey

    engine = create_async_engine(to_asyncpg_url(gateway_url_db))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            existing = await session.scalar(select(ApiConsumer).where(ApiConsumer.name == DEMO_CONSUMER))
            if existing is not None and await session.get(ConsumerKey, prefix_of(plaintext)) is not None:
                return
            if existing is not None:
                await session.delete(existing)
                await session.flush()
            await register_consumer(
                session, name=DEMO_CONSUMER, scopes=DEMO_SCOPES, roles=DEMO_ROLES, plaintext_key=plaintext
            )
    finally:
        await engine.dispose()


def wait_ready(urls: list[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            url = pending[0]
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    if pending:
        raise RuntimeError(f"not ready in {timeout:.0f}s: {', '.join(pending)}")


async def seed_demo(gateway_url: str, api_key: str) -> int:
    created = 0
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10.0) as client:
        for spec in SERVICES:
            if spec.demo_seed is None:
                continue
            module, _, function = spec.demo_seed.partition(":")
            seed = getattr(importlib.import_module(module), function)
            created += await seed(client, {"X-API-Key": api_key})
    return created


GATEWAY_METRICS_PORT = 9000


def announce(
    data: Path,
    started: float,
    gateway_url: str,
    service_urls: dict[str, str],
    api_key: str,
    database: str,
    nats_url: str,
    nats_users: Path | None,
    gateway_metrics_url: str,
    listeners: dict[str, str] | None = None,
) -> None:
    env = data / "dev.env"
    env.write_text(f"CITYGRID_GATEWAY_URL={gateway_url}\nCITYGRID_API_KEY={api_key}\n")
    lines = [
        "",
        f"CityGrid is up in {time.monotonic() - started:.1f}s",
        f"  gateway        {gateway_url}   (API docs: {gateway_url}/docs)",
        f"  gateway metrics {gateway_metrics_url}   (internal listener, not behind the public port)",
        f"  OAuth2 tokens  {gateway_url}/oauth/token   (keys: {gateway_url}/oauth/jwks.json)",
        f"  exchange       {gateway_url}/exchange/v1/datasets   (the catalogue of every dataset)",
        *(
            f"  {name:<14} {url}   (direct calls are refused: go through the gateway)"
            for name, url in service_urls.items()
        ),
        *(f"  {label:<14} {address}" for label, address in (listeners or {}).items()),
        f"  PostgreSQL     {database.split('@')[-1]}",
        f"  NATS           {nats_url}" + (f"   (users and passwords: {nats_users})" if nats_users else ""),
        f"  demo API key   {api_key}",
        f"  written to     {env}",
        "",
        f"  try: curl -s -H 'X-API-Key: {api_key}' {gateway_url}/api/case/v1/cases",
        "  stop: Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


def nats_credentials(process: ProcessSpec, access: NatsAccess) -> dict[str, str]:
    """The process's own NATS user (none for a process without NATS), never another's."""
    identity = service_identity(process)
    user, password = access.credentials(identity.user) if identity else ("", "")
    if identity is not None and not user:
        say(f"{identity.password_variable} is not set: {process.name} connects to NATS without credentials")
    return {"CITYGRID_NATS_USER": user, "CITYGRID_NATS_PASSWORD": password}


def print_nats_auth(engines: list[str]) -> int:
    """The authorization block of a deployment: every service, these engines, the operator."""
    pairs = []
    for engine in engines:
        service, _, name = engine.partition(":")
        if not name:
            raise SystemExit(f"--engine {engine!r}: write <service>:<engine>, e.g. vision:edge-platform")
        pairs.append((service, name))
    print(authorization_config(deployed_identities(pairs)), end="")
    return 0


def stopped_by_signal(returncode: int | None) -> bool:
    """honcho reports a stop by SIGINT/SIGTERM as 130/143, and a child it terminated as -15."""
    return returncode in (130, 143, -15)


def run(data: Path) -> int:
    from honcho.manager import Manager

    started = time.monotonic()
    data.mkdir(parents=True, exist_ok=True)
    postgres: EmbeddedPostgres | None = None
    nats_server: EmbeddedNats | None = None
    try:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            postgres = EmbeddedPostgres(data / "postgres", free_port(5432))
            say(f"starting embedded PostgreSQL on port {postgres.port}")
            server_url = postgres.start()
        identities = dev_identities()
        nats_access = nats_access_from_environment(identities)
        nats_users: Path | None = None
        if nats_access is None:
            users = NatsUsers.generate(data / "nats-auth.conf", identities)
            nats_users = users.config_file
            nats_server = EmbeddedNats(data / "nats", free_port(4222), free_port(8222), users)
            say(f"starting embedded nats-server (JetStream) on port {nats_server.port}")
            nats_server.start()
            nats_access = nats_server.access
        nats_url = nats_access.server_url

        processes: list[ProcessSpec] = [*SERVICES, GATEWAY]
        asyncio.run(create_databases(server_url, [p.database for p in processes]))
        for process in processes:
            say(f"migrating {process.database}")
            upgrade(process.package, database_url(server_url, process.database))

        private_key, public_key, people_public_key = dev_keys(data)
        api_key = demo_api_key(data)
        asyncio.run(ensure_demo_consumer(database_url(server_url, GATEWAY.database), api_key))

        ports = {p.name: free_port(p.preferred_port) for p in processes}
        ports |= {s.name: free_port(s.preferred_port) for s in SIMULATORS}
        metrics_port = free_port(GATEWAY_METRICS_PORT)  # the gateway's internal listener
        # Listeners beside HTTP (JT/T 808 for the trucks' terminals): (process, listener, port).
        listeners = [
            (process, listener, free_port(listener.preferred_port))
            for process in processes
            for listener in process.listeners
        ]
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        manager = Manager()
        base_env = {
            **os.environ,
            "CITYGRID_ENVIRONMENT": "development",
            "CITYGRID_NATS_URL": nats_url,
            "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
            "PYTHONUNBUFFERED": "1",
        }
        for process in processes:
            env = {
                **base_env,
                "CITYGRID_PORT": str(ports[process.name]),
                "CITYGRID_DATABASE_URL": database_url(server_url, process.database),
                # Photos and other blobs of each service, beside the databases.
                "CITYGRID_BLOB_DIR": str((data / "blobs" / process.name).resolve()),
                **nats_credentials(process, nats_access),
                **{listener.setting: str(port) for owner, listener, port in listeners if owner is process},
                **{
                    listener.host_setting: "127.0.0.1"
                    for owner, listener, _ in listeners
                    if owner is process and listener.host_setting
                },
            }
            for simulator in SIMULATORS:
                if simulator.service == process.name:
                    env[simulator.setting] = json.dumps({simulator.engine: urls[simulator.name]})
            if process is GATEWAY:
                env |= {
                    "CITYGRID_UPSTREAMS": json.dumps({s.name: urls[s.name] for s in SERVICES}),
                    "CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY": private_key,
                    "CITYGRID_PEOPLE_JWT_KEY": people_public_key,
                    "CITYGRID_PEOPLE_JWT_ALGORITHMS": json.dumps(["EdDSA"]),
                    "CITYGRID_PEOPLE_JWT_ISSUER": DEV_PEOPLE_ISSUER,
                    "CITYGRID_PEOPLE_JWT_AUDIENCE": DEV_PEOPLE_AUDIENCE,
                    "CITYGRID_PEOPLE_GROUP_MAP": json.dumps(DEV_PEOPLE_GROUPS),
                    "CITYGRID_INTERNAL_PORT": str(metrics_port),
                    "CITYGRID_PUBLIC_BASE_URL": urls[GATEWAY.name],
                }
            manager.add_process(process.name, f"{sys.executable} -m {process.module}", env=env)
        for simulator in SIMULATORS:
            env = {**base_env, "CITYGRID_PORT": str(ports[simulator.name])}
            manager.add_process(simulator.name, f"{sys.executable} -m {simulator.module}", env=env)

        def when_ready() -> None:
            try:
                wait_ready(
                    [urls[s.name] for s in SERVICES]
                    + [urls[s.name] for s in SIMULATORS]
                    + [urls[GATEWAY.name]]
                )
                created = asyncio.run(seed_demo(urls[GATEWAY.name], api_key))
                if created:
                    say(f"loaded {created} demo records")
                announce(
                    data,
                    started,
                    urls[GATEWAY.name],
                    {s.name: urls[s.name] for s in SERVICES},
                    api_key,
                    server_url,
                    nats_url,
                    nats_users,
                    f"http://127.0.0.1:{metrics_port}/metrics",
                    {
                        listener.label: f"{listener.scheme}://127.0.0.1:{port}"
                        for _, listener, port in listeners
                    },
                )
            except Exception as error:
                say(f"the stack did not come up: {error}")

        threading.Thread(target=when_ready, daemon=True).start()
        manager.loop()
        if stopped_by_signal(manager.returncode):
            return 0  # Ctrl-C or SIGTERM: a clean stop, not a failure
        return int(manager.returncode or 0)
    finally:
        if nats_server is not None:
            say("stopping nats-server")
            nats_server.stop()
        if postgres is not None:
            say("stopping PostgreSQL")
            postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m citygrid.devstack", description=__doc__)
    parser.add_argument("command", choices=["run", "nats-auth"])
    parser.add_argument("--data", default=os.environ.get("CITYGRID_DATA_DIR", ".data"), type=Path)
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        help="nats-auth: an outside engine as <service>:<engine> (repeatable)",
    )
    arguments = parser.parse_args()
    if arguments.command == "nats-auth":
        sys.exit(print_nats_auth(arguments.engine))
    sys.exit(run(arguments.data.resolve()))


if __name__ == "__main__":
    main()
