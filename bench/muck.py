"""The muck service's position intake, each figure beside a raw COPY of the same rows in the same run.

``python -m bench.muck`` (``--trucks 7000`` for the city's fleet):

- **raw COPY**: the rows the intake would write, copied straight into ``positions`` by one client
  in batches of 5,000 — what PostgreSQL itself takes;
- **HTTP**: vendors' platforms posting batches of 500, several at once, each answered once stored;
- **JT/T 808**: one TCP connection per truck (registered, authenticated), each sending 0x0200
  reports and waiting for each acknowledgement, as a terminal does;

with positions/s end to end, the ratio to raw COPY, and the service's CPU per position (positions/s
per core of the service: the figure that says how many cores the fleet needs), and its memory. The
clients run on the same machine and take CPU of their own: the per-core figure is the one to
compare across machines. The register holds 3,000 sites and 500 routes, so the transport rules run
on every position behind the intake, in the replica holding their lease:

- **rules**: a fresh raw COPY of the same rows, and the time until the rules have evaluated them
  all (positions/s, ratio to raw COPY);
- **intake to violation**: trucks reporting 70 s at 85 km/h, each batch's answer to the violation
  row the rules record for it (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.gas import rss_mib
from bench.hotpath import cpu_seconds, process, wait_healthy
from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.devstack.servers import create_databases, database_url, free_port, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.jt808.codec import (
    AUTHENTICATE,
    BEIJING,
    OK,
    POSITION,
    REGISTER,
    Authentication,
    FrameReader,
    GeneralReply,
    Header,
    Position,
    Registration,
    RegistrationReply,
    decode_frame,
    encode_frame,
)
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_libpq_url
from services.muck.models import POSITION_COLUMNS

DB = "bench_muck"
PRINCIPAL = Principal(
    subject="bench-platform",
    kind="service",
    name="bench-platform",
    scopes=frozenset({"muck:read", "muck:write", "muck:ingest"}),
)
HTTP_BATCH = 500


def plate(n: int) -> str:
    return f"粤B{n:05d}D"


def phone(n: int) -> str:
    return f"0139{n:08d}"


SITES, ROUTES = 3_000, 500


async def register_places(url: str) -> None:
    """3,000 sites (a third disposal) and 500 routes over the city, placed the same way every run."""
    import random

    chance = random.Random(808)
    connection = await asyncpg.connect(to_libpq_url(url))

    def point() -> tuple[float, float]:
        return 113.0 + chance.random() * 0.8, 22.8 + chance.random() * 0.8

    try:
        sites = []
        for n in range(SITES):
            lon, lat = point()
            ring = [
                [lon - 0.001, lat - 0.001],
                [lon + 0.001, lat - 0.001],
                [lon + 0.001, lat + 0.001],
                [lon - 0.001, lat + 0.001],
                [lon - 0.001, lat - 0.001],
            ]
            kind = "disposal" if n % 3 == 0 else "construction"
            sites.append(
                (
                    f"S{n:04d}",
                    kind,
                    f"site {n}",
                    "440106",
                    json.dumps(ring),
                    "PZ",
                    datetime(2026, 1, 1).date(),
                    datetime(2030, 1, 1).date(),
                    10_000.0,
                )
            )
        await connection.executemany(
            "INSERT INTO sites (code, kind, name, district_code, boundary, permit_number, permit_valid_from, "
            "permit_valid_until, approved_quantity_m3) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9)",
            sites,
        )
        await connection.executemany(
            "INSERT INTO routes (code, name, line, width_m) VALUES ($1, $2, $3::jsonb, 40)",
            [(f"R{n:03d}", f"route {n}", json.dumps([list(point()), list(point())])) for n in range(ROUTES)],
        )
    finally:
        await connection.close()


async def rules_caught_up(connection: asyncpg.Connection, timeout: float = 600.0) -> None:
    """Wait until every stored position is below the rules' horizon."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        done = await connection.fetchval(
            "SELECT coalesce((SELECT horizon FROM rule_cursor), 0) > coalesce((SELECT max(txid) FROM positions), 0)"
        )
        if done:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the rules did not catch up")


async def rules_rate(url: str, trucks: int, count: int) -> dict[str, float]:
    """A raw COPY of ``count`` rows (an hour ago), then the time the rules take to evaluate them."""
    data = rows(trucks, count, datetime.now(UTC) - timedelta(hours=1))
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        await rules_caught_up(connection)
        started = time.perf_counter()
        for first in range(0, len(data), 5_000):
            await connection.copy_records_to_table(
                "positions", records=data[first : first + 5_000], columns=list(POSITION_COLUMNS)
            )
        await rules_caught_up(connection)
        seconds = time.perf_counter() - started
    finally:
        await connection.close()
    return {"positions": count, "seconds": seconds, "per_s": count / seconds}


async def violation_latency(
    url: str, service_url: str, headers: dict[str, str], trucks: int
) -> dict[str, float]:
    """Each of ``trucks`` trucks posts 70 s at 85 km/h; from the answer to its violation's row."""
    answered: dict[str, float] = {}
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    async with httpx.AsyncClient(base_url=service_url, timeout=60) as client:
        for n in range(trucks):
            body = {
                "positions": [
                    {
                        "plate": plate(n),
                        "at": (start + timedelta(seconds=10 * i)).isoformat(),
                        "location": {"type": "Point", "coordinates": [113.9 + i * 0.0003, 23.7]},
                        "speed_kmh": 85.0,
                        "load": "empty",
                    }
                    for i in range(8)
                ]
            }
            response = await client.post("/v1/positions", json=body, headers=headers)
            response.raise_for_status()
            answered[plate(n)] = time.time()
            await asyncio.sleep(0.02)
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            found = await connection.fetch(
                "SELECT plate, extract(epoch FROM created_at) AS at FROM violations WHERE kind = 'overspeed' "
                "AND plate = ANY($1::text[])",
                list(answered),
            )
            if len(found) >= len(answered):
                break
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    latencies = sorted(max(0.0, float(row["at"]) - answered[row["plate"]]) for row in found)
    if not latencies:
        raise RuntimeError("no violation was recorded")
    return {
        "trucks": len(latencies),
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def register_fleet(url: str, trucks: int) -> None:
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        await connection.execute(
            "INSERT INTO companies (code, name, licence_number) VALUES ('BENCH', 'Bench Transport', 'ZT-0')"
        )
        await connection.copy_records_to_table(
            "trucks",
            records=[
                (plate(n), "BENCH", phone(n).rjust(20, "0"), f"ZT-{n}", datetime(2030, 1, 1).date(), 18.0)
                for n in range(trucks)
            ],
            columns=[
                "plate",
                "company_code",
                "terminal_phone",
                "approval_number",
                "approval_valid_until",
                "capacity_m3",
            ],
        )
    finally:
        await connection.close()


def rows(trucks: int, count: int, start: datetime) -> list[tuple[Any, ...]]:
    received = datetime.now(UTC)
    values = []
    for n in range(count):
        truck = n % trucks
        values.append(
            {
                "plate": plate(truck),
                "at": start + timedelta(seconds=n // trucks),
                "lon": 113.30 + (truck % 100) * 0.001,
                "lat": 23.10 + (n % 97) * 0.0001,
                "speed_kmh": 35.0,
                "direction": 90,
                "altitude_m": 12,
                "alarm": 0,
                "status": 0b11,
                "load": 3,
                "mileage_km": None,
                "source": "http",
                "blind_area": False,
                "received_at": received,
            }
        )
    return [tuple(value[name] for name in POSITION_COLUMNS) for value in values]


async def raw_copy(url: str, trucks: int, count: int) -> dict[str, float]:
    data = rows(trucks, count, datetime.now(UTC) - timedelta(hours=3))
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        started = time.perf_counter()
        for first in range(0, len(data), 5_000):
            await connection.copy_records_to_table(
                "positions", records=data[first : first + 5_000], columns=list(POSITION_COLUMNS)
            )
        seconds = time.perf_counter() - started
    finally:
        await connection.close()
    return {"positions": count, "seconds": seconds, "per_s": count / seconds}


async def http_intake(
    service_url: str, headers: dict[str, str], trucks: int, count: int, senders: int
) -> dict[str, float]:
    start = datetime.now(UTC) - timedelta(hours=2)
    bodies = []
    for first in range(0, count, HTTP_BATCH):
        bodies.append(
            json.dumps(
                {
                    "positions": [
                        {
                            "plate": plate(n % trucks),
                            "at": (start + timedelta(seconds=n // trucks)).isoformat(),
                            "location": {"type": "Point", "coordinates": [113.30 + (n % 100) * 0.001, 23.1]},
                            "speed_kmh": 35.0,
                            "load": "full",
                        }
                        for n in range(first, min(first + HTTP_BATCH, count))
                    ]
                }
            ).encode()
        )
    queue = list(reversed(bodies))
    stored = 0

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal stored
        while queue:
            body = queue.pop()
            response = await client.post(
                "/v1/positions", content=body, headers={**headers, "Content-Type": "application/json"}
            )
            response.raise_for_status()
            stored += response.json()["stored"]

    async with httpx.AsyncClient(base_url=service_url, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(senders)))
        seconds = time.perf_counter() - started
    return {"positions": stored, "seconds": seconds, "per_s": stored / seconds}


class BenchTerminal:
    def __init__(self, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.n, self.reader, self.writer = n, reader, writer
        self.frames = FrameReader()
        self.pending: list[bytes] = []
        self.serial = 0

    async def send(self, msg_id: int, body: bytes) -> None:
        self.serial = (self.serial + 1) & 0xFFFF
        self.writer.write(encode_frame(Header(msg_id, phone(self.n), self.serial), body))

    async def reply(self) -> Any:
        while not self.pending:
            data = await self.reader.read(4096)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.frames.feed(data))
        return decode_frame(self.pending.pop(0))


def start_sampler(into: Path | None, pid: int, intake: str) -> subprocess.Popen[bytes] | None:
    """py-spy on the service while an intake runs (``--profile DIR``); read with
    ``python -m bench.hotpath --top DIR/<intake>-service.txt``."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if into is None or spy is None:
        return None
    into.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--nonblocking"]
    return subprocess.Popen([*command, "-o", str(into / f"{intake}-service.txt")])


def stop_sampler(sampler: subprocess.Popen[bytes] | None) -> None:
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)


async def jt808_intake(
    address: tuple[str, int], trucks: int, reports_each: int, pid: int, profile_into: Path | None = None
) -> dict[str, float]:
    """Connect, register and authenticate every truck's terminal, then time the reports alone."""

    async def connect(n: int) -> BenchTerminal:
        reader, writer = await asyncio.open_connection(*address)
        terminal = BenchTerminal(n, reader, writer)
        await terminal.send(REGISTER, Registration(44, 100, "BENCH", "M1", f"T{n}", 2, plate(n)).encode(2013))
        frame = await terminal.reply()
        code = RegistrationReply.decode(frame.body, frame.header).auth_code
        await terminal.send(AUTHENTICATE, Authentication(code or "").encode(2013))
        await terminal.reply()
        return terminal

    terminals: list[BenchTerminal] = []
    for first in range(0, trucks, 500):  # connect in waves: a listen backlog is finite
        terminals += await asyncio.gather(*(connect(n) for n in range(first, min(first + 500, trucks))))
    start = datetime.now(UTC) - timedelta(hours=1)
    acknowledged = 0

    async def report(terminal: BenchTerminal) -> None:
        nonlocal acknowledged
        for step in range(reports_each):
            at = (start + timedelta(seconds=step)).astimezone(BEIJING)
            position = Position(
                0, 0b11 | (0b11 << 8), 23_100_000, 113_300_000 + terminal.n, 12, 350, 90, at, {}
            )
            await terminal.send(POSITION, position.encode(2013))
            frame = await terminal.reply()
            if GeneralReply.decode(frame.body, frame.header).result == OK:
                acknowledged += 1

    sampler = start_sampler(profile_into, pid, "jt808")
    cpu_before = cpu_seconds([pid])
    started = time.perf_counter()
    await asyncio.gather(*(report(terminal) for terminal in terminals))
    stop_sampler(sampler)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds([pid]) - cpu_before
    for terminal in terminals:
        terminal.writer.close()
    return {
        "positions": acknowledged,
        "seconds": seconds,
        "per_s": acknowledged / seconds,
        "service_cpu_us_per_position": 1e6 * cpu / max(acknowledged, 1),
    }


def service_env(
    server_url: str, nats: NatsAccess, public_key: str, port: int, jt808_port: int
) -> dict[str, str]:
    import os

    from services.muck.events import NATS_IDENTITY

    user, password = nats.credentials(NATS_IDENTITY.user)
    return {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(port),
        "CITYGRID_JT808_HOST": "127.0.0.1",
        "CITYGRID_JT808_PORT": str(jt808_port),
        "CITYGRID_DATABASE_URL": database_url(server_url, DB),
        "CITYGRID_NATS_URL": nats.server_url,
        "CITYGRID_NATS_USER": user,
        "CITYGRID_NATS_PASSWORD": password,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def run(
    trucks: int, positions: int, senders: int, reports_each: int, profile_into: Path | None = None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-muck-"))
    results: dict[str, Any] = {"trucks": trucks}
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            url = database_url(server_url, DB)
            asyncio.run(create_databases(server_url, [DB]))
            upgrade("services.muck", url)
            asyncio.run(register_fleet(url, trucks))
            asyncio.run(register_places(url))
            private_key, public_key = generate_keypair()
            headers = {
                PRINCIPAL_HEADER: sign_principal(
                    PRINCIPAL, private_key=private_key, audience="muck", ttl_seconds=7200
                )
            }
            port, jt808_port = free_port(), free_port()
            service_url = f"http://127.0.0.1:{port}"
            log = workdir / "muck.log"
            with process(
                [sys.executable, "-m", "services.muck.main"],
                service_env(server_url, nats, public_key, port, jt808_port),
                log,
            ) as child:
                wait_healthy(service_url, child, log)  # its partitions exist from here on
                results["raw_copy"] = asyncio.run(raw_copy(url, trucks, positions))
                sampler = start_sampler(profile_into, child.pid, "http")
                before = cpu_seconds([child.pid])
                results["http"] = asyncio.run(http_intake(service_url, headers, trucks, positions, senders))
                stop_sampler(sampler)
                results["http"]["service_cpu_us_per_position"] = (
                    1e6 * (cpu_seconds([child.pid]) - before) / max(results["http"]["positions"], 1)
                )
                results["jt808"] = asyncio.run(
                    jt808_intake(("127.0.0.1", jt808_port), trucks, reports_each, child.pid, profile_into)
                )
                results["rules"] = asyncio.run(rules_rate(url, trucks, positions))
                results["violations"] = asyncio.run(
                    violation_latency(url, service_url, headers, min(trucks, 200))
                )
                results["service_rss_mib"] = rss_mib(child.pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(results: dict[str, Any]) -> list[str]:
    raw = results["raw_copy"]
    lines = [f"muck raw COPY  {raw['per_s']:.0f} positions/s ({raw['positions']} rows)"]
    for intake in ("http", "jt808"):
        figures = results[intake]
        per_core = 1e6 / max(figures["service_cpu_us_per_position"], 1e-9)
        lines.append(
            f"muck {intake:<9} {figures['per_s']:.0f} positions/s end to end (×{figures['per_s'] / raw['per_s']:.2f} "
            f"of raw COPY), service CPU {figures['service_cpu_us_per_position']:.0f} µs/position "
            f"= {per_core:.0f} positions/s per core"
        )
    rules = results["rules"]
    lines.append(
        f"muck rules     {rules['per_s']:.0f} positions/s evaluated (×{rules['per_s'] / raw['per_s']:.2f} of raw COPY; "
        f"{SITES} sites, {ROUTES} routes)"
    )
    latency = results["violations"]
    lines.append(
        f"muck intake to violation p50 {latency['p50_s'] * 1000:.0f} ms, p99 {latency['p99_s'] * 1000:.0f} ms "
        f"({latency['trucks']} trucks)"
    )
    lines.append(f"muck service RSS {results['service_rss_mib']:.0f} MiB with {results['trucks']} trucks")
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.muck", description=__doc__)
    parser.add_argument("--trucks", type=int, default=2_000)
    parser.add_argument("--positions", type=int, default=200_000, help="for the raw COPY and HTTP runs")
    parser.add_argument("--senders", type=int, default=8, help="HTTP batches in flight")
    parser.add_argument("--reports", type=int, default=20, help="0x0200 reports per terminal")
    parser.add_argument("--profile", type=Path, help="sample the service with py-spy into this directory")
    arguments = parser.parse_args()
    results = run(
        arguments.trucks, arguments.positions, arguments.senders, arguments.reports, arguments.profile
    )
    print("\n".join(report(results)))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "muck.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    cli()
