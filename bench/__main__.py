"""``make bench``: gateway overhead, outbox relay throughput and point → grid lookups, as ratios to
same-run baselines.

Starts its own embedded PostgreSQL and nats-server (or uses DATABASE_URL/NATS_URL), writes
``bench/results/latest.json`` and prints a table. Timings are for comparison within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
from sqlalchemy.ext.asyncio import create_async_engine

from bench import cases as case_bench
from bench import grid
from bench import vision as vision_bench
from bench.stack import REPORT, beside, case_behind_gateway, timed
from citygrid.db import KitBase, create_sessionmaker, unit_of_work
from citygrid.devstack.servers import create_databases, database_url, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.events import EventData
from citygrid.messaging import ensure_stream, stream_config
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.outbox import OutboxRelay, encode_payload
from citygrid.settings import to_asyncpg_url

RESULTS = Path(__file__).resolve().parent / "results"


class BenchHappened(EventData):
    subject = "bench.thing.happened"
    n: int
    text: str


def random_png(size: int) -> bytes:
    """Bytes that pass the upload checks (PNG signature, IEND at the end) and never repeat."""
    iend = b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8 - len(iend)) + iend


async def gateway_overhead(server_url: str, nats_access: NatsAccess, requests: int) -> dict[str, Any]:
    case_db, gateway_db = database_url(server_url, "bench_case"), database_url(server_url, "bench_gateway")
    async with (
        case_behind_gateway(case_db, gateway_db, nats_access) as stack,
        httpx.AsyncClient(timeout=30) as client,
    ):
        case_url, gateway_url, via_gateway = stack.case_url, stack.gateway_url, stack.via_gateway
        created = await client.post(f"{gateway_url}/api/case/v1/cases", json=REPORT, headers=via_gateway)
        case_id = created.json()["id"]
        for _ in range(50):  # warm both paths
            await client.get(f"{case_url}/v1/cases/{case_id}", headers=stack.direct())
            await client.get(f"{gateway_url}/api/case/v1/cases/{case_id}", headers=via_gateway)
        direct_get = await timed(
            lambda: client.get(f"{case_url}/v1/cases/{case_id}", headers=stack.direct()), requests
        )
        gateway_get = await timed(
            lambda: client.get(f"{gateway_url}/api/case/v1/cases/{case_id}", headers=via_gateway), requests
        )
        direct_post = await timed(
            lambda: client.post(f"{case_url}/v1/cases", json=REPORT, headers=stack.direct()), requests // 2
        )
        gateway_post = await timed(
            lambda: client.post(f"{gateway_url}/api/case/v1/cases", json=REPORT, headers=via_gateway),
            requests // 2,
        )
        # Evidence photos of 1 MiB, each new (a case keeps at most 50), as raw image bodies.
        photos = max(1, min(40, requests // 20))

        def photo_upload(base: str, case: str, headers: Callable[[], dict[str, str]]) -> Any:
            async def call() -> httpx.Response:
                return await client.post(
                    f"{base}/cases/{case}/evidence",
                    params={"kind": "before"},
                    content=random_png(1_048_576),
                    headers={**headers(), "Content-Type": "image/png"},
                )

            return call

        direct_case = (await client.post(f"{case_url}/v1/cases", json=REPORT, headers=stack.direct())).json()
        gateway_case = (await client.post(f"{case_url}/v1/cases", json=REPORT, headers=stack.direct())).json()
        direct_photo = await timed(photo_upload(f"{case_url}/v1", direct_case["id"], stack.direct), photos)
        gateway_photo = await timed(
            photo_upload(f"{gateway_url}/api/case/v1", gateway_case["id"], lambda: via_gateway), photos
        )
    return {
        "get_case": beside(gateway_get, direct_get),
        "report_case": beside(gateway_post, direct_post),
        "photo_1mib": beside(gateway_photo, direct_photo),
    }


async def outbox_throughput(server_url: str, nats_url: str, events: int) -> dict[str, Any]:
    url = database_url(server_url, "bench_kit")
    engine = create_async_engine(to_asyncpg_url(url))
    async with engine.begin() as connection:
        await connection.run_sync(KitBase.metadata.drop_all)
        await connection.run_sync(KitBase.metadata.create_all)
    sessions = create_sessionmaker(engine)
    client = await nats.connect(nats_url)
    jetstream = client.jetstream()
    for domain in ("bench", "benchraw"):
        with contextlib.suppress(Exception):  # absent on a fresh server
            await jetstream.delete_stream(domain.upper())
        await ensure_stream(jetstream, stream_config(domain))
    payload = {"text": "x" * 200}
    try:
        started = time.perf_counter()
        for start in range(0, events, 500):
            async with unit_of_work(sessions, source="bench") as uow:
                for n in range(start, min(events, start + 500)):
                    uow.publish(BenchHappened(n=n, **payload), aggregate_id=str(n), version=1)
        write_seconds = time.perf_counter() - started

        relay = OutboxRelay(sessions=sessions, nats=client, batch_size=500)
        started = time.perf_counter()
        while await relay.relay_once():
            pass
        relay_seconds = time.perf_counter() - started

        # Baseline: the same number of payloads published straight to JetStream, pipelined the same way.
        body = encode_payload({"data": payload})
        started = time.perf_counter()
        for start in range(0, events, 500):
            futures = [
                await jetstream.publish_async(
                    "benchraw.thing.happened", body, headers={"Nats-Msg-Id": f"raw-{n}"}
                )
                for n in range(start, min(events, start + 500))
            ]
            await asyncio.gather(*futures)
        raw_seconds = time.perf_counter() - started
    finally:
        await client.close()
        await engine.dispose()
    return {
        "events": events,
        "outbox_write_events_per_s": events / write_seconds,
        "relay_events_per_s": events / relay_seconds,
        "raw_publish_events_per_s": events / raw_seconds,
        "relay_vs_raw_ratio": (events / relay_seconds) / (events / raw_seconds),
    }


async def main(requests: int, events: int, cases: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-"))
    try:
        # The services connect as their own NATS users; the outbox figures publish as the admin.
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats_access):
            await create_databases(server_url, ["bench_case", "bench_gateway", "bench_kit"])
            await asyncio.to_thread(upgrade, "services.case", database_url(server_url, "bench_case"))
            await asyncio.to_thread(upgrade, "gateway", database_url(server_url, "bench_gateway"))
            await vision_bench.prepare(server_url)
            return {
                "gateway_overhead": await gateway_overhead(server_url, nats_access, requests),
                "outbox": await outbox_throughput(server_url, nats_access.admin_url, events),
                "vision": await vision_bench.run(server_url, nats_access, cameras=500_000, detections=50_000),
                "cases": await case_bench.run(server_url, nats_access, cases=cases, requests=requests // 2),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--cases", type=int, default=100_000, help="cases loaded for the query figures")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments.requests, arguments.events, arguments.cases))
    results["grid"] = grid.run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    overhead, outbox = results["gateway_overhead"], results["outbox"]
    for name, figures in overhead.items():
        print(
            f"{name:<12} direct p50 {figures['baseline']['p50_ms']:.2f} ms  p99 {figures['baseline']['p99_ms']:.2f} ms | "
            f"gateway p50 {figures['measured']['p50_ms']:.2f} ms  p99 {figures['measured']['p99_ms']:.2f} ms | "
            f"gateway/direct p50 ×{figures['ratio_p50']:.2f}"
        )
    print(
        f"outbox       {outbox['events']} events: write {outbox['outbox_write_events_per_s']:.0f}/s, relay "
        f"{outbox['relay_events_per_s']:.0f}/s vs raw JetStream publish {outbox['raw_publish_events_per_s']:.0f}/s "
        f"(relay/raw ×{outbox['relay_vs_raw_ratio']:.2f})"
    )
    print("\n".join(grid.describe(results["grid"])))
    print("\n".join(vision_bench.report(results["vision"])))
    case_bench.print_results(results["cases"])
    print(f"results in {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    cli()
