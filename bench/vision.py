"""Vision figures: detections/s through the pure pipeline and through HTTP intake, the time to
import 500,000 cameras, each beside a raw COPY of the same rows in the same run; and camera
heartbeats, the liveness table against the registry update it replaced, in rows/s and WAL.

``python -m bench.vision`` runs it alone (``--part heartbeats --cameras 100000`` for a short run of
one part); ``make bench`` runs it with the others.
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
PARTS = ("import", "heartbeats", "intake")
HEARTBEAT_BATCH = 5_000  # the most one heartbeat request carries
# What every heartbeat did before migration 0003: the registry row rewritten, all six indexes too.
LEGACY_HEARTBEAT = text(
    "UPDATE cameras SET status = 'online', last_heartbeat_at = now() "
    "WHERE camera_id = ANY(CAST(:ids AS varchar[])) RETURNING camera_id"
)
XACT_COUNTS = text(
    "SELECT pg_stat_get_xact_tuples_updated('cameras'::regclass), "
    "pg_stat_get_xact_tuples_hot_updated('cameras'::regclass), "
    "pg_stat_get_xact_tuples_updated('camera_liveness'::regclass), "
    "pg_stat_get_xact_tuples_hot_updated('camera_liveness'::regclass)"
)
WAL_POSITION = text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")  # bytes, as numeric
SIZES = text(
    "SELECT pg_relation_size('cameras'), pg_indexes_size('cameras'), "
    "pg_relation_size('camera_liveness'), pg_indexes_size('camera_liveness')"
)


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


async def heartbeat_rounds(
    sessions: Any, camera_ids: list[str], *, rounds: int, legacy: bool
) -> dict[str, Any]:
    """Every camera heartbeats once a round (a minute of the fleet), in batches of 5,000, one
    transaction each. Per round: rows/s, WAL bytes per batch, rows rewritten and how many HOT."""
    from services.vision.registry import record_heartbeats

    batches = [camera_ids[i : i + HEARTBEAT_BATCH] for i in range(0, len(camera_ids), HEARTBEAT_BATCH)]
    figures = []
    for _ in range(rounds):
        counts = [0, 0, 0, 0]
        async with sessions() as session:
            start_wal = await session.scalar(WAL_POSITION)
        started = time.perf_counter()
        for batch in batches:
            async with sessions() as session, session.begin():
                # Pending counts of earlier transactions are included: the difference is this one's.
                before = (await session.execute(XACT_COUNTS)).one()
                if legacy:
                    await session.execute(LEGACY_HEARTBEAT, {"ids": batch})
                else:
                    await record_heartbeats(session, batch)
                after = (await session.execute(XACT_COUNTS)).one()
            counts = [c + a - b for c, a, b in zip(counts, after, before, strict=True)]
        seconds = time.perf_counter() - started
        async with sessions() as session:
            wal = await session.scalar(WAL_POSITION) - start_wal
        figures.append(
            {
                "rows_per_s": len(camera_ids) / seconds,
                "wal_bytes_per_batch": float(wal) / len(batches),
                "cameras_rows_updated": counts[0],
                "cameras_rows_hot": counts[1],
                "liveness_rows_updated": counts[2],
                "liveness_rows_hot": counts[3],
            }
        )
    async with sessions() as session:
        sizes = (await session.execute(SIZES)).one()
    return {
        "rounds": figures,
        "cameras_heap_mb": sizes[0] / 2**20,
        "cameras_indexes_mb": sizes[1] / 2**20,
        "liveness_heap_mb": sizes[2] / 2**20,
        "liveness_indexes_mb": sizes[3] / 2**20,
    }


async def sweep_figures(sessions: Any, database: str, camera_ids: list[str]) -> dict[str, Any]:
    """The offline sweep of the whole fleet: nothing silent, then 1 % silent; with the plan."""
    from services.vision.registry import SWEEP, mark_offline

    await vacuum(database, "camera_liveness", "cameras")
    started = time.perf_counter()
    none = await mark_offline(sessions, 300)
    idle_seconds = time.perf_counter() - started
    silent = camera_ids[::100]
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE camera_liveness SET last_heartbeat_at = now() - interval '1 hour' "
                "WHERE camera_id = ANY(CAST(:ids AS varchar[]))"
            ),
            {"ids": silent},
        )
        plan = "\n".join(
            (await session.scalars(text(f"EXPLAIN {SWEEP.text}"), {"timeout": 300.0, "batch": 5000})).all()
        )
    started = time.perf_counter()
    swept = 0
    while True:  # as the job does: again at once while batches are full
        count = await mark_offline(sessions, 300)
        swept += count
        if count < 5000:
            break
    silent_seconds = time.perf_counter() - started
    assert (none, swept) == (0, len(silent)), (none, swept)
    return {
        "cameras": len(camera_ids),
        "nothing_silent_ms": idle_seconds * 1000,
        "silent": len(silent),
        "one_percent_silent_ms": silent_seconds * 1000,
        "plan": plan,
    }


async def vacuum(database: str, *tables: str) -> None:
    import asyncpg

    from citygrid.settings import to_libpq_url

    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        await connection.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    finally:
        await connection.close()


async def heartbeats(url: str, camera_ids: list[str], rounds: int) -> dict[str, Any]:
    """Both paths over the same cameras: the liveness table first (on a registry no earlier run
    bloated), then the registry update it replaced."""
    from citygrid.db import create_sessionmaker

    engine = create_async_engine(to_asyncpg_url(url))
    sessions = create_sessionmaker(engine)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE camera_liveness"))
            await connection.execute(text("UPDATE cameras SET status = 'unknown', last_heartbeat_at = NULL"))
        await vacuum(url, "cameras")
        liveness = await heartbeat_rounds(sessions, camera_ids, rounds=rounds, legacy=False)
        sweep = await sweep_figures(sessions, url, camera_ids)
        await vacuum(url, "cameras")
        legacy = await heartbeat_rounds(sessions, camera_ids, rounds=rounds, legacy=True)
    finally:
        await engine.dispose()
    return {
        "cameras": len(camera_ids),
        "batch": HEARTBEAT_BATCH,
        "liveness": liveness,
        "legacy": legacy,
        "sweep": sweep,
    }


async def run(
    server_url: str,
    nats: NatsAccess,
    *,
    cameras: int,
    detections: int,
    parts: tuple[str, ...] = PARTS,
    rounds: int = 3,
) -> dict[str, Any]:
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
        if "import" in parts:
            results["camera_import"] = {
                "cameras": cameras,
                "import_seconds": import_seconds,
                "raw_copy_seconds": raw_seconds,
                "import_vs_raw_ratio": import_seconds / raw_seconds,
            }
        if "heartbeats" in parts:
            results["heartbeats"] = await heartbeats(url, [r[0] for r in records], rounds)
        if "intake" not in parts:
            return results

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


def _steady(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The rounds after the first (which, on the liveness path, inserts the rows and writes each
    camera's first transition), averaged."""
    steady = rounds[1:] or rounds
    return {key: sum(r[key] for r in steady) / len(steady) for key in steady[0]}


def report(results: dict[str, Any]) -> list[str]:
    lines = []
    if "camera_import" in results:
        imported = results["camera_import"]
        lines.append(
            f"vision import {imported['cameras']} cameras in {imported['import_seconds']:.1f}s vs raw COPY "
            f"{imported['raw_copy_seconds']:.1f}s (×{imported['import_vs_raw_ratio']:.2f})"
        )
    if "heartbeats" in results:
        beats = results["heartbeats"]
        for name, label in (("legacy", "registry UPDATE (before)"), ("liveness", "liveness upsert (after)")):
            path = beats[name]
            steady = _steady(path["rounds"])
            rewritten = "cameras_rows_updated" if name == "legacy" else "liveness_rows_updated"
            hot = "cameras_rows_hot" if name == "legacy" else "liveness_rows_hot"
            per_round = ", ".join(f"{r['rows_per_s']:.0f}" for r in path["rounds"])
            lines.append(
                f"vision beats  {label}, {beats['cameras']} cameras, rounds 2-{len(path['rounds'])}: "
                f"{steady['rows_per_s']:.0f} rows/s (per round: {per_round}), "
                f"{steady['wal_bytes_per_batch'] / 1024:.0f} KiB WAL per batch of {beats['batch']}, "
                f"cameras rows rewritten {steady['cameras_rows_updated']:.0f} per round, "
                f"HOT {100 * steady[hot] / max(steady[rewritten], 1):.0f} %; "
                f"cameras indexes {path['cameras_indexes_mb']:.0f} MB after"
            )
        sweep = beats["sweep"]
        lines.append(
            f"vision sweep  {sweep['cameras']} cameras: {sweep['nothing_silent_ms']:.0f} ms with none silent, "
            f"{sweep['one_percent_silent_ms']:.0f} ms taking {sweep['silent']} offline"
        )
    if "intake" in results:
        pipeline, intake = results["pipeline"], results["intake"]
        lines += [
            f"vision pipe   {pipeline['detections']} detections through the pure pipeline: "
            f"{pipeline['detections_per_s']:.0f}/s",
            f"vision intake {intake['detections']} detections over HTTP: {intake['http_detections_per_s']:.0f}/s vs "
            f"raw COPY {intake['raw_copy_detections_per_s']:.0f}/s (http/raw ×{intake['http_vs_raw_ratio']:.3f}); "
            f"{intake['alarms_raised']} alarms from both runs",
            f"vision burst  {intake['detections']} detections of {intake['burst_keys']} keys over HTTP: "
            f"{intake['burst_http_detections_per_s']:.0f}/s",
        ]
    return lines


async def prepare(server_url: str) -> None:
    await create_databases(server_url, ["bench_vision"])
    await asyncio.to_thread(upgrade, "services.vision", database_url(server_url, "bench_vision"))


async def main(cameras: int, detections: int, parts: tuple[str, ...], rounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-"))
    try:
        with servers_for(workdir, durable=True, identities=dev_identities()) as (server_url, nats):
            await prepare(server_url)
            return await run(
                server_url, nats, cameras=cameras, detections=detections, parts=parts, rounds=rounds
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vision", description=__doc__)
    parser.add_argument("--cameras", type=int, default=500_000)
    parser.add_argument("--detections", type=int, default=50_000)
    parser.add_argument("--part", choices=PARTS, action="append", help="run only these parts (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="heartbeat rounds per path (every camera once)")
    arguments = parser.parse_args()
    parts = tuple(arguments.part or PARTS)
    results = asyncio.run(main(arguments.cameras, arguments.detections, parts, arguments.rounds))
    print(json.dumps(results, indent=2))
    print("\n".join(report(results)))


if __name__ == "__main__":
    cli()
