"""Pytest plugin of the kit: real PostgreSQL and NATS for every test, and apps served on loopback.

Servers come from the embedded wheels (or ``DATABASE_URL``/``NATS_URL``), once per session. Each
service database is created and migrated once; every test then starts from empty tables and no
streams, so no test depends on another's data.

NATS runs with the platform's users (``citygrid.natsauth``, passwords generated per session):
``infrastructure.nats_url`` carries the admin's credentials for test helpers, and a service under
test connects as its own user (``infrastructure.nats_settings("case")``), with its own permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import asyncpg
import httpx
import nats
import nats.js.errors
import pytest
import uvicorn
import uvicorn.server
from fastapi import FastAPI

from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.devstack.servers import (
    EmbeddedNats,
    NatsUsers,
    create_databases,
    database_url,
    free_port,
    servers_for,
)
from citygrid.devstack.stack import dev_identities
from citygrid.events import CloudEvent
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess, without_credentials
from citygrid.serve import KEEP_ALIVE_SECONDS
from citygrid.settings import to_libpq_url

if TYPE_CHECKING:
    from citygrid.runtime import Runtime


@dataclass
class Infrastructure:
    server_url: str
    nats_url: str = field(repr=False)  # carries the admin's password
    private_key: str
    public_key: str
    workdir: Path
    migrated: dict[str, str] = field(default_factory=dict)
    nats: NatsAccess | None = None
    # Servers a test starts of its own (private_nats), by URL without credentials.
    nats_servers: dict[str, NatsAccess] = field(default_factory=dict)

    @property
    def nats_server_url(self) -> str:
        """The session's NATS server without credentials: what services' settings name."""
        return self._nats_access(None).server_url

    def _nats_access(self, nats_url: str | None) -> NatsAccess:
        session = self.nats or NatsAccess(self.nats_url, self.nats_url, {})
        if nats_url is None:
            return session
        server = without_credentials(nats_url)
        if server == session.server_url:
            return session
        return self.nats_servers.get(server, NatsAccess(server, nats_url, {}))

    def nats_credentials(self, user: str, nats_url: str | None = None) -> tuple[str, str]:
        """``(user, password)`` of a NATS user (a service's name is its user) on the session's server
        or on the one ``nats_url`` names; ``("", "")`` when that server's users are unknown."""
        return self._nats_access(nats_url).credentials(user)

    def nats_settings(self, user: str, nats_url: str | None = None) -> dict[str, Any]:
        """The settings that make a service connect as ``user`` (to ``nats_url``, else the session's)."""
        access = self._nats_access(nats_url)
        name, password = access.credentials(user)
        return {"nats_url": access.server_url, "nats_user": name, "nats_password": password}

    def service_settings(self, user: str, database: str, nats_url: str | None = None) -> dict[str, Any]:
        """The settings every service has under test: its test database, NATS as its own user, the
        session's signing key and a quick outbox relay; a service's own are added to them."""
        return {
            "environment": "test",
            "database_url": database,
            **self.nats_settings(user, nats_url),
            "internal_token_public_key": self.public_key,
            "outbox_poll_seconds": 0.2,
        }

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


@dataclass
class ServiceUnderTest:
    """A service served on loopback in a test, called as the gateway calls it: each request carries
    a principal signed for the service (``as_``). A service's tests subclass it, naming the
    audience and the scopes a call has unless it says otherwise."""

    infrastructure: Infrastructure
    app: FastAPI
    url: str
    client: httpx.AsyncClient
    audience: ClassVar[str]
    default_scopes: ClassVar[tuple[str, ...]] = ()

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.kit
        return runtime

    def as_(
        self,
        scopes: tuple[str, ...] | None = None,
        roles: tuple[str, ...] = (),
        subject: str = "registrar-1",
        district: str | None = None,
        unit: str | None = None,
    ) -> dict[str, str]:
        principal = Principal(
            subject=subject,
            kind="consumer",
            name=subject,
            roles=frozenset(roles),
            scopes=frozenset(self.default_scopes if scopes is None else scopes),
            district=district,
            unit=unit,
        )
        return {PRINCIPAL_HEADER: self.infrastructure.token(principal, self.audience)}

    async def post(self, path: str, body: Any, **as_: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.as_(**as_))

    async def get(self, path: str, **as_: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.as_(**as_))


UnderTest = TypeVar("UnderTest", bound=ServiceUnderTest)


async def service_factory(
    infrastructure: Infrastructure,
    database: str,
    build: Callable[..., FastAPI],
    under_test: type[UnderTest],
) -> Callable[..., contextlib.AbstractAsyncContextManager[UnderTest]]:
    """A service's test fixture: its database emptied and the streams deleted once, then ``start``,
    which serves ``build(**overrides)`` on loopback and yields it as ``under_test`` once it is
    connected to NATS (called more than once, it starts replicas of the service)."""
    await truncate_all(database)
    await delete_streams(infrastructure.nats_url)

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[UnderTest]:
        app = build(**overrides)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            running = under_test(infrastructure, app, url, client)
            await wait_until(running.runtime.messaging_ready.is_set)
            yield running

    return start


async def first_runs_done(runtime: Runtime, *jobs: str, timeout: float = 15.0) -> None:
    """Wait until each of the service's periodic ``jobs`` has run once (they start a few seconds
    after the service): a test that then does a job's work itself is not raced by the job."""

    def ran(name: str) -> bool:
        counted = runtime.metrics.job_runs
        return any(counted.labels(job=name, outcome=outcome)._value.get() >= 1 for outcome in ("ok", "error"))

    for name in jobs:
        await wait_until(lambda name=name: ran(name), timeout=timeout)  # type: ignore[misc]


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


# Names of the tasks a running service holds (``citygrid.runtime``): one still pending when the next
# test starts is a service an earlier test left running, which would publish into this test's streams.
SERVICE_TASKS = ("messaging", "outbox-relay", "consumer-", "live-", "job-", "nats-intake")


def assert_no_service_left_running() -> None:
    """Fail the test that finds an earlier test's service still running, naming its tasks, and
    cancel them so the tests after it start clean."""
    leftovers = [
        task for task in asyncio.all_tasks() if not task.done() and task.get_name().startswith(SERVICE_TASKS)
    ]
    for task in leftovers:
        task.cancel()
    if leftovers:
        names = ", ".join(sorted(task.get_name() for task in leftovers))
        raise AssertionError(f"an earlier test left a service running (its tasks: {names})")


async def delete_streams(nats_url: str) -> None:
    """Every stream gone, for a test that starts from nothing (and no earlier test's service alive)."""
    assert_no_service_left_running()
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream()
        for stream in await jetstream.streams_info():
            if stream.config.name:
                await jetstream.delete_stream(stream.config.name)
    finally:
        await client.close()


class _QuickPolls(types.ModuleType):
    """``asyncio`` for uvicorn's server module, its polling sleeps cut to 10 ms.

    uvicorn checks its exit flag every 100 ms and, stopping, waits 100 ms for connections more than
    once: a suite that starts and stops thousands of servers spent most of its teardowns there. Only
    the polling interval changes; a server still stops the way it does in production.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(min(delay, QUICK_POLL_SECONDS), result)


QUICK_POLL_SECONDS = 0.01
uvicorn.server.asyncio = _QuickPolls("asyncio")  # type: ignore[attr-defined]
# A stopping service waits for each consumer's fetch in hand: tests stop thousands of them.
os.environ.setdefault("CITYGRID_CONSUMER_FETCH_WAIT_SECONDS", "0.1")


@contextlib.asynccontextmanager
async def serve_app(
    app: FastAPI, port: int | None = None, startup_timeout: float = 60.0
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on loopback for the duration of the block; yields its base URL.

    Without a ``port`` the kernel picks one as the server binds (port 0), so parallel test workers
    never race for a port one of them probed as free.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port or 0,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http="httptools",  # the parser production runs (citygrid.serve); the loop is the test's
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + startup_timeout
    while not server.started and not task.done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    if not server.started:
        server.should_exit = True
        await task
        raise RuntimeError("the app did not start")
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
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
        with servers_for(workdir, durable=False, identities=dev_identities()) as (server_url, nats):
            private_key, public_key = generate_keypair()
            yield Infrastructure(server_url, nats.admin_url, private_key, public_key, workdir, nats=nats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def private_nats(infrastructure: Infrastructure) -> AsyncIterator[EmbeddedNats]:
    """A NATS server of this test's own, which the test may stop and start again.

    It has the session's users and passwords (random ones for users the session does not know); its
    ``url`` carries the admin's credentials, and ``infrastructure.nats_settings(user, server.url)``
    connect a service to it as that user.
    """
    directory = infrastructure.workdir / f"nats-{free_port()}"
    known = infrastructure.nats.passwords if infrastructure.nats else {}
    users = NatsUsers.generate(directory.with_suffix(".auth.conf"), dev_identities(), known)
    server = EmbeddedNats(directory, free_port(), free_port(), users)
    await asyncio.to_thread(server.start)
    infrastructure.nats_servers[server.server_url] = server.access
    try:
        yield server
    finally:
        infrastructure.nats_servers.pop(server.server_url, None)
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


def conformance_dir(name: str) -> Path | None:
    """The conformance corpus ``name``: ``$CITYGRID_CONFORMANCE_DIR/<name>`` when that variable is set,
    else ``../shared/conformance/<name>`` next to the repository; None when the folder is absent
    (a checkout without the shared corpora), so a test can skip instead of failing."""
    import os  # here, so that adding this helper changed nothing else in the module

    root = os.environ.get("CITYGRID_CONFORMANCE_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
    directory = base / name
    return directory if directory.is_dir() else None


@dataclass
class Sse:
    """One server-sent event as a test reads it."""

    id: int | None
    event: str
    data: str

    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data)
        return loaded


class SseReader:
    """Reads one server-sent-events response event by event; every wait is bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = 15.0) -> Sse:
        fields: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line == "":
                    if data:
                        event_id = fields.get("id")
                        return Sse(
                            int(event_id) if event_id else None,
                            fields.get("event", "message"),
                            "\n".join(data),
                        )
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "data":
                        data.append(value)
                    else:
                        fields[name] = value
        raise AssertionError("the stream ended")

    async def take(self, count: int) -> list[Sse]:
        return [await self.next() for _ in range(count)]

    async def next_of(self, kind: str, timeout: float = 15.0) -> Sse:
        """The next event named ``kind``; the others are passed over."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event.event == kind:
                    return event

    async def comment(self, timeout: float = 15.0) -> str:
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line.startswith(":"):
                    return line[1:].strip()
        raise AssertionError("the stream ended")

    async def ends(self, timeout: float = 15.0) -> bool:
        """True once the server ends the stream (whatever it still sent before)."""
        async with asyncio.timeout(timeout):
            async for _ in self.lines:
                pass
        return True
