"""The gas service at the city's scale, each figure beside its baseline from the same run.

``python -m bench.gas`` (``make bench`` runs it with 200,000 cylinders; the city's figure is
``--cylinders 5400000 --scans 20000000``):

- **import**: a CSV file of N cylinders registered through the service's import (parsed, checked,
  streamed into COPY in one transaction) against a raw COPY of the same rows into a table with
  the same indexes;
- **fill checks** with the registry and a history of scans loaded: requests/s and p50/p99 at a fixed
  concurrency (wrk, the service as its own process) beside PostgreSQL running the route's statements
  (pgbench), and at a steady rate from an open-loop client (``--rate``), with the service's CPU per
  check;
- **trace and recall**: p50/p99 of a cylinder's history and of a fill batch's recall;
- **memory**: the service process's resident set after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.hotpath import Route, cpu_seconds, pgbench, postgres_cpu_seconds, process, wait_healthy, wrk
from bench.stack import percentile
from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.db import create_sessionmaker
from citygrid.devstack.servers import create_databases, database_url, free_port, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_asyncpg_url

DB = "bench_gas"
STATION = "GZGAS-ST-TH01"
COMPANIES = ("GZGAS", "NANFANG", "HUAYUE")
SCAN_BATCH = 200_000
CHECK_CODES = 2_000  # the codes the load asks about, spread over the registry
PRINCIPAL = Principal(
    subject="bench-scale",
    kind="service",
    name="bench-scale",
    scopes=frozenset({"gas:read", "gas:write", "gas:ingest"}),
    unit=STATION,  # a scale's credential names its station
)
CSV_HEADER = "code,owner_code,manufacturer,serial,manufactured_on,last_inspected_on,last_inspection_passed,tare_kg,capacity_kg\n"


def code_of(n: int) -> str:
    return f"GZ{n:010d}"


def csv_rows(count: int) -> bytes:
    """A registry as a station sees it: most cylinders fillable (made or inspected within four
    years, owned by the station's company or one that entrusts it); one in 20 belongs to a company
    that does not, and is refused."""
    today = date.today()
    lines = [CSV_HEADER]
    for n in range(count):
        made = today - timedelta(days=30 + n % 2_900)
        due = made + timedelta(days=365 * 4)
        inspected = due - timedelta(days=60) if due - timedelta(days=60) < today else None
        owner = COMPANIES[2] if n % 20 == 0 else COMPANIES[n % 2]
        lines.append(
            f"{code_of(n)},{owner},Foshan Steel Cylinder Works,S{n},{made.isoformat()},"
            f"{inspected.isoformat() if inspected else ''},{'true' if inspected else ''},16.8,14.5\n"
        )
    return "".join(lines).encode()


async def chunks(body: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), size):
        yield body[offset : offset + size]


async def register_enterprises(url: str) -> None:
    engine = create_async_engine(to_asyncpg_url(url))
    async with engine.begin() as connection:
        for code in COMPANIES:
            await connection.execute(
                text(
                    "INSERT INTO enterprises (code, kind, name, licence_number) "
                    "VALUES (:code, 'gas_company', :code, 'L') ON CONFLICT DO NOTHING"
                ),
                {"code": code},
            )
        await connection.execute(
            text(
                "INSERT INTO enterprises (code, kind, name, company_code, licence_number, licence_valid_until, "
                "district_code, lon, lat) VALUES (:s, 'filling_station', 'Tianhe', 'GZGAS', 'L', '2035-12-31', "
                "'440106', 113.36, 23.13) ON CONFLICT DO NOTHING"
            ),
            {"s": STATION},
        )
        await connection.execute(
            text(
                "INSERT INTO entrustments (company_code, station_code) VALUES ('NANFANG', :s) ON CONFLICT DO NOTHING"
            ),
            {"s": STATION},
        )
    await engine.dispose()


async def import_figures(url: str, cylinders: int) -> dict[str, Any]:
    from services.gas import bulk

    body = csv_rows(cylinders)
    engine = create_async_engine(to_asyncpg_url(url))
    sessions = create_sessionmaker(engine)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE cylinders CASCADE"))
        started = time.perf_counter()
        imported = await bulk.import_csv(sessions, chunks(body), max_bytes=len(body) + 1)
        import_seconds = time.perf_counter() - started
        assert imported == cylinders, imported
        # The baseline: the same rows, already parsed, straight into COPY of a table like it.
        parser = bulk.Parser(frozenset(COMPANIES))
        records = parser.feed(body.decode(), final=True)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS raw_cylinders"))
            await connection.execute(text("CREATE TABLE raw_cylinders (LIKE cylinders INCLUDING ALL)"))
        async with engine.begin() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            started = time.perf_counter()
            await raw.copy_records_to_table("raw_cylinders", records=records, columns=list(bulk.COPY_COLUMNS))
            raw_seconds = time.perf_counter() - started
            await connection.execute(text("DROP TABLE raw_cylinders"))
    finally:
        await engine.dispose()
    return {
        "cylinders": cylinders,
        "file_bytes": len(body),
        "import_seconds": import_seconds,
        "raw_copy_seconds": raw_seconds,
        "import_rows_per_s": cylinders / import_seconds,
        "import_vs_raw_ratio": raw_seconds / import_seconds,
    }


async def load_scans(url: str, cylinders: int, scans: int) -> float:
    """Fixture, not measured: ``scans`` fills, dispatches and deliveries over the last 11 months."""
    engine = create_async_engine(to_asyncpg_url(url))
    kinds = (("fill", "filled"), ("dispatch", "in_transit"), ("deliver", "at_user"), ("recover", "returned"))
    start = datetime.now(UTC) - timedelta(days=330)
    span = timedelta(days=329).total_seconds()
    columns = [
        "id",
        "at",
        "cylinder_code",
        "kind",
        "status_after",
        "enterprise_code",
        "fill_batch",
        "source",
        "recorded_by",
        "recorded_at",
    ]
    import uuid

    started = time.perf_counter()
    async with engine.begin() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        for offset in range(0, scans, SCAN_BATCH):
            rows = []
            for n in range(offset, min(offset + SCAN_BATCH, scans)):
                kind, status = kinds[n % 4]
                at = start + timedelta(seconds=span * ((n * 7919) % scans) / scans)
                rows.append(
                    (uuid.uuid4(), at, code_of(n % cylinders), kind, status, STATION,
                     f"B{n // 400}" if kind == "fill" else None, "api", "bench", at)
                )  # fmt: skip
            await raw.copy_records_to_table("scans", records=rows, columns=columns)
    async with engine.connect() as connection:
        await connection.execute(text("COMMIT"))
        await connection.execute(text("ANALYZE scans"))
        await connection.execute(text("ANALYZE cylinders"))
    await engine.dispose()
    return time.perf_counter() - started


def check_body(code: str) -> str:
    return json.dumps({"cylinder_code": code, "station_code": STATION, "scale_id": "S1"})


CHECK_SQL = """BEGIN;
SELECT e.*, c.*, now() FROM enterprises e LEFT JOIN cylinders c ON c.code = '{code}' WHERE e.code = '{station}';
SELECT array_agg(company_code) FROM entrustments WHERE station_code = '{station}';
INSERT INTO fill_checks (id, at, cylinder_code, station_code, scale_id, allowed, reasons)
VALUES (gen_random_uuid(), now(), '{code}', '{station}', 'S1', true, '');
COMMIT;
"""


async def steady(
    url: str, headers: dict[str, str], codes: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    """An open-loop client: one check every 1/rate s whatever the answers' pace; latency of each
    (aiohttp: a tenth of httpx's CPU per call, so the client keeps its pace)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(
        base_url=url, headers={**headers, "content-type": "application/json"}, connector=connector
    ) as client:

        async def one(code: str) -> None:
            nonlocal errors
            began = time.perf_counter()
            async with client.post("/v1/fill-checks", data=check_body(code)) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - began) * 1000)

        tasks = []
        began = time.perf_counter()
        n = 0
        while time.perf_counter() - began < seconds:
            due = began + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(codes[n % len(codes)])))
            n += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return {
        "target_per_s": rate,
        "achieved_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": errors,
    }


async def timed_reads(url: str, headers: dict[str, str], paths: list[str]) -> dict[str, float]:
    latencies = []
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        for path in paths:
            began = time.perf_counter()
            response = await client.get(path)
            latencies.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "calls": len(latencies),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def service_env(server_url: str, nats: NatsAccess, public_key: str, port: int) -> dict[str, str]:
    from services.gas.events import NATS_IDENTITY

    user, password = nats.credentials(NATS_IDENTITY.user)
    return {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(port),
        "CITYGRID_DATABASE_URL": database_url(server_url, DB),
        "CITYGRID_NATS_URL": nats.server_url,
        "CITYGRID_NATS_USER": user,
        "CITYGRID_NATS_PASSWORD": password,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def _sample(into: Path | None, pid: int, seconds: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the service while the checks run (``--profile DIR``); read with
    ``python -m bench.hotpath --top DIR/fill_check-service.txt``."""
    if into is None or shutil.which("py-spy") is None:
        return None
    into.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250"]
    command += ["--format", "raw", "--nonblocking", "-o", str(into / "fill_check-service.txt")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(
    cylinders: int, scans: int, seconds: int, connections: int, rate: float, profile_into: Path | None = None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-gas-"))
    results: dict[str, Any] = {}
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            url = database_url(server_url, DB)
            asyncio.run(create_databases(server_url, [DB]))
            upgrade("services.gas", url)
            asyncio.run(register_enterprises(url))
            private_key, public_key = generate_keypair()
            headers = {
                PRINCIPAL_HEADER: sign_principal(
                    PRINCIPAL, private_key=private_key, audience="gas", ttl_seconds=7200
                )
            }
            port = free_port()
            service_url = f"http://127.0.0.1:{port}"
            log = workdir / "gas.log"
            with process(
                [sys.executable, "-m", "services.gas.main"],
                service_env(server_url, nats, public_key, port),
                log,
            ) as child:
                wait_healthy(service_url, child, log)  # its partitions exist from here on
                results["import"] = asyncio.run(import_figures(url, cylinders))
                results["scans_loaded"] = {
                    "scans": scans,
                    "seconds": asyncio.run(load_scans(url, cylinders, scans)),
                }
                rng = random.Random(7)
                codes = [code_of(rng.randrange(cylinders)) for _ in range(CHECK_CODES)]
                route = Route(
                    "fill_check",
                    "POST",
                    "/v1/fill-checks",
                    CHECK_SQL.format(code=codes[0], station=STATION),
                    body=check_body(codes[0]),
                    service="gas",
                    other_bodies=tuple(check_body(code) for code in codes[1:200]),
                    other_sql=tuple(CHECK_SQL.format(code=code, station=STATION) for code in codes[1:20]),
                )
                pgbench_bin = shutil.which("pgbench") or str(Path(_postgres_bin()) / "pgbench")
                results["fill_check_postgres"] = vars(
                    pgbench(pgbench_bin, url, route, seconds, connections, workdir)
                )
                wrk(service_url, route, headers, 2, connections, workdir)  # warm up
                sampler = _sample(profile_into, child.pid, seconds)
                cpu_before, pg_before = cpu_seconds([child.pid]), postgres_cpu_seconds()
                figures = wrk(f"{service_url}/v1/fill-checks", route, headers, seconds, connections, workdir)
                cpu = cpu_seconds([child.pid]) - cpu_before
                if sampler is not None:
                    sampler.wait(30)
                pg = postgres_cpu_seconds() - pg_before
                results["fill_check_service"] = vars(figures) | {
                    "service_cpu_ms_per_check": 1000 * cpu / max(figures.requests, 1),
                    "postgres_cpu_ms_per_check": 1000 * pg / max(figures.requests, 1),
                }
                results["fill_check_service_vs_postgres"] = (
                    figures.requests_per_s / results["fill_check_postgres"]["requests_per_s"]
                )
                results["fill_check_steady"] = asyncio.run(steady(service_url, headers, codes, rate, seconds))
                trace_paths = [f"/v1/cylinders/{code}/scans?limit=100" for code in codes[:200]]
                results["trace"] = asyncio.run(timed_reads(service_url, headers, trace_paths))
                recall_paths = [
                    f"/v1/fill-batches/B{rng.randrange(max(scans // 400, 1))}/cylinders" for _ in range(100)
                ]
                results["recall"] = asyncio.run(timed_reads(service_url, headers, recall_paths))
                results["service_rss_mib"] = rss_mib(child.pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _postgres_bin() -> str:
    from citygrid.devstack.servers import postgres_bin_dir

    return str(postgres_bin_dir())


def report(results: dict[str, Any]) -> list[str]:
    imported = results["import"]
    service, pg, steady_figures = (
        results["fill_check_service"],
        results["fill_check_postgres"],
        results["fill_check_steady"],
    )
    return [
        f"gas import   {imported['cylinders']} cylinders from CSV in {imported['import_seconds']:.1f} s "
        f"({imported['import_rows_per_s']:.0f}/s) vs raw COPY {imported['raw_copy_seconds']:.1f} s "
        f"(import/raw ×{imported['import_vs_raw_ratio']:.2f})",
        f"gas checks   {service['requests_per_s']:.0f}/s p50 {service['p50_ms']:.1f} ms p99 {service['p99_ms']:.1f} ms "
        f"(service CPU {service['service_cpu_ms_per_check']:.2f} ms/check) vs PostgreSQL {pg['requests_per_s']:.0f}/s "
        f"(×{results['fill_check_service_vs_postgres']:.2f}), {results['scans_loaded']['scans']} scans loaded",
        f"gas steady   {steady_figures['achieved_per_s']:.0f}/s of {steady_figures['target_per_s']:.0f}/s: "
        f"p50 {steady_figures['p50_ms']:.1f} ms p99 {steady_figures['p99_ms']:.1f} ms, {steady_figures['errors']} errors",
        f"gas trace    p50 {results['trace']['p50_ms']:.1f} ms p99 {results['trace']['p99_ms']:.1f} ms; "
        f"recall p50 {results['recall']['p50_ms']:.1f} ms p99 {results['recall']['p99_ms']:.1f} ms; "
        f"service RSS {results['service_rss_mib']:.0f} MiB",
    ]


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gas", description=__doc__)
    parser.add_argument("--cylinders", type=int, default=200_000)
    parser.add_argument("--scans", type=int, default=800_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=300.0, help="the steady client's checks per second")
    parser.add_argument("--profile", type=Path, help="sample the service with py-spy into this directory")
    arguments = parser.parse_args()
    results = run(
        arguments.cylinders,
        arguments.scans,
        arguments.seconds,
        arguments.connections,
        arguments.rate,
        arguments.profile,
    )
    print(json.dumps(results, indent=2, default=str))
    print("\n".join(report(results)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        cli()
