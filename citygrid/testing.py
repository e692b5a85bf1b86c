"""Pytest plugin of the kit: real PostgreSQL and NATS for every test, and apps served on loopback.

Servers come from the embedded wheels (or ``DATABASE_URL``/``NATS_URL``), once per session. Each
service database is created and migrated once; every test then starts from empty tables and no
streams, so no test depends on another's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats
import nats.js.errors
import pytest
import uvicorn
from fastapi import FastAPI

from citygrid.auth import Principal, generate_keypair, sign_principal
from citygrid.devstack.servers import (
    EmbeddedNats,
    create_databases,
    database_url,
    free_port,
    servers_for,
)
from citygrid.events import CloudEvent
from citygrid.migrate import upgrade
from citygrid.serve import KEEP_ALIVE_SECONDS
from citygrid.settings import to_libpq_url


@dataclass
class Infrastructure:
    server_url: str
    nats_url: str
    private_key: str
    public_key: str
    workdir: Path
    migrated: dict[str, str] = field(default_factory=dict)

    def database(self, package: str) -> str:
        """URL of the test database of a package with migrations (created and migrated once)."""
        if package not in self.migrated:
            name = "test_" + package.replace(".", "_")
            asyncio.run(create_databases(self.server_url, [name]))
            url = database_url(self.server_url, name)
            upgrade(package, url)
            self.migrated[package] = url
        return self.migrated[package]

    def token(self, principal: Principal, audience: str, ttl_seconds: int = 60) -> str:
        return sign_principal(
            principal, private_key=self.private_key, audience=audience, ttl_seconds=ttl_seconds
        )


async def truncate_all(url: str) -> None:
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        tables = [
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            quoted = ", ".join(f'"{name}"' for name in tables)
            await connection.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


async def delete_streams(nats_url: str) -> None:
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream()
        for stream in await jetstream.streams_info():
            if stream.config.name:
                await jetstream.delete_stream(stream.config.name)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on loopback for the duration of the block; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await task
        raise RuntimeError("the app did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_until(predicate: object, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll an async or sync predicate until it is true; fail the test when time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-test-"))
    try:
        with servers_for(workdir, durable=False) as (server_url, nats_url):
            private_key, public_key = generate_keypair()
            yield Infrastructure(server_url, nats_url, private_key, public_key, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def private_nats(infrastructure: Infrastructure) -> AsyncIterator[EmbeddedNats]:
    """A NATS server of this test's own, which the test may stop and start again."""
    server = EmbeddedNats(infrastructure.workdir / f"nats-{free_port()}", free_port(), free_port())
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def stream_events(
    nats_url: str, stream: str, *, at_least: int = 0, timeout: float = 20.0
) -> list[CloudEvent]:
    """Every event stored in ``stream``, in stream order, once at least ``at_least`` are there."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream()

        async def enough() -> bool:
            try:
                info = await jetstream.stream_info(stream)
            except nats.js.errors.NotFoundError:
                return at_least == 0
            return bool(info.state.messages >= at_least)

        await wait_until(enough, timeout=timeout)
        info = await jetstream.stream_info(stream)
        events: list[CloudEvent] = []
        if not info.state.messages:
            return events
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await jetstream.get_msg(stream, sequence)
            event = CloudEvent.model_validate_json(message.data or b"")
            event.__pydantic_extra__ = {
                "nats_subject": message.subject,
                "msg_id": (message.headers or {}).get("Nats-Msg-Id"),
            }
            events.append(event)
        return events
    finally:
        await client.close()
