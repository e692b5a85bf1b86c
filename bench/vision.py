"""Vision figures: detections/s through the pure pipeline and through HTTP intake, and the time to
import 500,000 cameras, each beside a raw COPY of the same rows in the same run.

``python -m bench.vision`` runs it alone; ``make bench`` runs it with the others.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.auth import PRINCIPAL_HEADER, Principal, generate_keypair, sign_principal
from citygrid.devstack.servers import create_databases, database_url, servers_for
from citygrid.devstack.stack import dev_identities
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_asyncpg_url
from citygrid.testing import serve_app

CLASSES = ("littering", "exposed_garbage", "road_occupying_stall", "overflowing_bin", "illegal_parking")
DISTRICT_PREFIXES = ("440103", "440104", "440105", "440106", "440111", "440112", "440113")
RAW_DETECTION_COLUMNS = ("camera_id", "algorithm_code", "detected_at", "confidence", "boxes")


def camera_rows(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "camera_id": f"{DISTRICT_PREFIXES[n % len(DISTRICT_PREFIXES)]}00081320{n:06d}",
            "name": f"camera {n}",
            "owner": ("public_security", "transport", "city_management", "housing_construction")[n % 4],
            "lon": 112.95 + rng.random() * 1.1,
            "lat": 22.55 + rng.random() * 1.4,
            "address": f"street {n % 5000}",
        }
        for n in range(count)
    ]


def detection_stream(cameras: list[str], count: int) -> list[dict[str, Any]]:
    """Bursts: each (camera, class) is seen every 2 s for a while, with jittering boxes."""
    rng = random.Random(11)
    start = datetime.now(UTC) - timedelta(hours=2)
    keys = list(itertools.product(cameras, CLASSES))
    detections = []
    for n in range(count):
        camera_id, code = keys[n % len(keys)]
        step = n // len(keys)
        jitter = rng.random() / 50
        detections.append(
            {
                "camera_id": camera_id,
                "algorithm_code": code,
                "detected_at": (start + timedelta(seconds=2 * step)).isoformat(),
                "confidence": 0.7 + rng.random() * 0.29,
                "boxes": [{"x": 0.4 + jitter, "y": 0.4, "width": 0.2, "height": 0.2}],
            }
        )
    return detections


def pure_pipeline(detections: list[dict[str, Any]]) -> dict[str, Any]:
    from services.vision.domain.catalogue import BY_CODE
    from services.vision.domain.geometry import Rect
    from services.vision.domain.pipeline import KeyState, Observation, observe

    observations = [
        (
            (d["camera_id"], d["algorithm_code"]),
            Observation(
                datetime.fromisoformat(d["detected_at"]),
                d["confidence"],
                Rect(**d["boxes"][0]),
            ),
        )
        for d in detections
    ]
    states: dict[tuple[str, str], KeyState] = {}
    counter = itertools.count()
    started = time.perf_counter()
    for key, observation in observations:
        state = states.setdefault(key, KeyState())
        observe(state, observation, BY_CODE[key[1]].gates, (), counter.__next__)
    seconds = time.perf_counter() - started
    return {"detections": len(observations), "detections_per_s": len(observations) / seconds}


async def http_intake(
    vision_url: str, token: str, detections: list[dict[str, Any]], batch: int, concurrency: int
) -> float:
    batches = [detections[i : i + batch] for i in range(0, len(detections), batch)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            items = queue.get_nowait()
            response = await client.post(
                f"{vision_url}/v1/detections", json={"detections": items}, headers={PRINCIPAL_HEADER: token}
            )
            response.raise_for_status()

    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        return time.perf_counter() - started


async def run(server_url: str, nats: NatsAccess, *, cameras: int, detections: int) -> dict[str, Any]:
    from bench.stack import service_nats
    from services.vision import registry
    from services.vision.events import NATS_IDENTITY
    from services.vision.main import VisionSettings, create_app
    from services.vision.registry import checked_records, copy_cameras

    url = database_url(server_url, "bench_vision")
    engine = create_async_engine(to_asyncpg_url(url))
    results: dict[str, Any] = {}
    try:
        # -- 500,000 cameras: checked and upserted through the staging table, vs raw COPY -------------
        rows = camera_rows(cameras)
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE cameras CASCADE"))
        started = time.perf_counter()
        records, refused = checked_records(rows)
        async with engine.begin() as connection:
            imported = await copy_cameras(connection, records)
        import_seconds = time.perf_counter() - started
        assert imported == cameras, imported
        assert not refused, refused[:3]
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS raw_cameras"))
            await connection.execute(text("CREATE TABLE raw_cameras (LIKE cameras INCLUDING DEFAULTS)"))
        async with engine.begin() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            started = time.perf_counter()
            await raw.copy_records_to_table(
                "raw_cameras",
                records=records,
                columns=list(registry.COLUMNS),
            )
            raw_seconds = time.perf_counter() - started
            await connection.execute(text("DROP TABLE raw_cameras"))
        results["camera_import"] = {
            "cameras": cameras,
            "import_seconds": import_seconds,
            "raw_copy_seconds": raw_seconds,
            "import_vs_raw_ratio": import_seconds / raw_seconds,
        }

        # -- detections: pure pipeline, HTTP intake, raw COPY of the same rows -------------------------
        stream = detection_stream([r[0] for r in records[:1000]], detections)
        results["pipeline"] = pure_pipeline(stream)
        private_key, public_key = generate_keypair()
        with tempfile.TemporaryDirectory(prefix="citygrid-bench-blobs-") as blob_dir:
            app = create_app(
                VisionSettings(
                    environment="test",
                    database_url=url,
                    **service_nats(nats, NATS_IDENTITY),
                    internal_token_public_key=public_key,
                    blob_dir=Path(blob_dir),
                    db_pool_size=8,
                )
            )
            principal = Principal(
                subject="bench-engine", kind="consumer", name="bench", scopes=frozenset({"vision:ingest"})
            )
            token = sign_principal(principal, private_key=private_key, audience="vision", ttl_seconds=3600)
            async with serve_app(app) as vision_url:
                await http_intake(vision_url, token, stream[:1000], 500, 2)  # warm up
                async with engine.begin() as connection:
                    await connection.execute(text("TRUNCATE alarms CASCADE"))
                http_seconds = await http_intake(vision_url, token, stream, 500, 4)
                # A burst: the same 200 keys over and over, as when one scene floods the engines.
                burst = detection_stream([r[0] for r in records[1000:1040]], len(stream))
                burst_seconds = await http_intake(vision_url, token, burst, 500, 4)
        async with engine.begin() as connection:
            alarms = (
                await connection.execute(text("SELECT count(*) FROM alarms WHERE raised_at IS NOT NULL"))
            ).scalar_one()
            await connection.execute(
                text(
                    "CREATE TEMP TABLE raw_detections (camera_id text, algorithm_code text, "
                    "detected_at timestamptz, confidence float8, boxes jsonb)"
                )
            )
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            copy_rows = [
                (
                    d["camera_id"],
                    d["algorithm_code"],
                    datetime.fromisoformat(d["detected_at"]),
                    d["confidence"],
                    json.dumps(d["boxes"]),
                )
                for d in stream
            ]
            started = time.perf_counter()
            await raw.copy_records_to_table(
                "raw_detections", records=copy_rows, columns=list(RAW_DETECTION_COLUMNS)
            )
            raw_detection_seconds = time.perf_counter() - started
        results["intake"] = {
            "detections": len(stream),
            "keys": 1000 * len(CLASSES),
            "alarms_raised": alarms,
            "http_detections_per_s": len(stream) / http_seconds,
            "raw_copy_detections_per_s": len(stream) / raw_detection_seconds,
            "http_vs_raw_ratio": raw_detection_seconds / http_seconds,
            "burst_keys": 40 * len(CLASSES),
            "burst_http_detections_per_s": len(burst) / burst_seconds,
        }
    finally:
        await engine.dispose()
    return results


def report(results: dict[str, Any]) -> list[str]:
    imported, pipeline, intake = results["camera_import"], results["pipeline"], results["intake"]
    return [
        f"vision import {imported['cameras']} cameras in {imported['import_seconds']:.1f}s vs raw COPY "
        f"{imported['raw_copy_seconds']:.1f}s (×{imported['import_vs_raw_ratio']:.2f})",
        f"vision pipe   {pipeline['detections']} detections through the pure pipeline: "
        f"{pipeline['detections_per_s']:.0f}/s",
        f"vision intake {intake['detections']} detections over HTTP: {intake['http_detections_per_s']:.0f}/s vs raw "
        f"COPY {intake['raw_copy_detections_per_s']:.0f}/s (http/raw ×{intake['http_vs_raw_ratio']:.3f}); "
        f"{intake['alarms_raised']} alarms from both runs",
        f"vision burst  {intake['detections']} detections of {intake['burst_keys']} keys over HTTP: "
        f"{intake['burst_http_detections_per_s']:.0f}/s",
    ]


async def prepare(server_url: str) -> None:
    await create_databases(server_url, ["bench_vision"])
    await asyncio.to_thread(upgrade, "services.vision", database_url(server_url, "bench_vision"))


async def main(cameras: int, detections: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-"))
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            await prepare(server_url)
            return await run(server_url, nats, cameras=cameras, detections=detections)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vision", description=__doc__)
    parser.add_argument("--cameras", type=int, default=500_000)
    parser.add_argument("--detections", type=int, default=50_000)
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments.cameras, arguments.detections))
    print(json.dumps(results, indent=2))
    print("\n".join(report(results)))


if __name__ == "__main__":
    cli()
