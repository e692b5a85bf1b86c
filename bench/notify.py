"""Commit throughput and latency of outbox-writing transactions with and without ``NOTIFY`` in each.

``UnitOfWork.flush_events`` inserts the outbox rows and then runs ``NOTIFY citygrid_outbox`` in the
same transaction. PostgreSQL serialises every notifying transaction on one cluster-wide lock from
pre-commit until after its commit record is flushed, so notifying writers cannot share a WAL flush
(group commit). For each writer count this runs W writers on their own connections, each committing
one ~1 KB outbox row per transaction, once with the ``NOTIFY`` (and a relay-like listener on the
channel) and once without, on a throwaway server with fsync on (``--no-durable`` turns it off).

``python -m bench.notify [--writers 1,4,16] [--seconds 10]`` prints a table and writes
``.data/bench/notify.json``; ``--control`` adds a run with ``SELECT 1`` in place of the ``NOTIFY``
(the same round trips, no lock). Figures compare the modes within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.devstack.servers import create_databases, database_url, servers_for
from citygrid.events import EventData, envelope
from citygrid.ids import new_id
from citygrid.outbox import OutboxMessage
from citygrid.settings import to_asyncpg_url, to_libpq_url

# The channel the kit used to NOTIFY on every event-producing commit (it no longer does).
OUTBOX_CHANNEL = "citygrid_outbox"

OUTPUT = Path(__file__).resolve().parent.parent / ".data" / "bench" / "notify.json"
DATABASE = "bench_notify"
WRITER_APP = "bench-notify-writer"
INSERT = "INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3::jsonb)"
# The statement each mode sends between the INSERT and the COMMIT. ``control`` (``--control``) is the
# same number of round trips as ``notify`` without the NOTIFY, to tell the lock from the round trip.
MODES: dict[str, str | None] = {
    "notify": f"NOTIFY {OUTBOX_CHANNEL}",
    "no_notify": None,
    "control": "SELECT 1",
}
# What the writers' backends are waiting on, sampled while they run: the notify lock shows as
# Lock/object (the heavyweight lock on database 0), WAL flushes as IO/WalSync or LWLock/WALWrite.
WAITS = """
SELECT coalesce(wait_event_type, 'CPU') AS kind, coalesce(wait_event, state) AS event
FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'
"""


class BenchCaseChanged(EventData):
    """A case-like event: the outbox rows of the case service are of about this size."""

    subject: ClassVar[str] = "bench.case.changed"
    case_id: str
    number: str
    status: str
    category_code: str
    district_code: str
    location: dict[str, Any]
    source: str
    unit: str | None
    version: int
    actor: str
    note: str
    occurred_at: datetime
    origin: dict[str, str]


def event_template() -> dict[str, Any]:
    """One realistic outbox payload (the CloudEvent envelope as the kit stores it), ~1 KB as JSON."""
    data = BenchCaseChanged(
        case_id=str(new_id()),
        number="GZ-440106-20250101-000123",
        status="dispatched",
        category_code="20106",
        district_code="440106",
        location={"type": "Point", "coordinates": [113.3245, 23.1291]},
        source="inspector",
        unit="440106-urban-management-brigade-3",
        version=4,
        actor="dispatcher:440106:zhang.wei",
        note="Exposed garbage beside the bus stop on Tianhe Road; reported twice this week. " * 6,
        occurred_at=datetime.now(UTC),
        origin={"service": "vision", "reference": f"vision:alarm:{new_id()}"},
    )
    event = envelope(data, source="case", aggregate_id=data.case_id, aggregate_version=data.version)
    return event.model_dump(mode="json", exclude_none=True)


@dataclass
class Samples:
    """Per-transaction timings of one writer: (finished at, COMMIT round trip, whole transaction)."""

    finished: list[float] = field(default_factory=list)
    commit: list[float] = field(default_factory=list)
    transaction: list[float] = field(default_factory=list)


async def writer(
    dsn: str, template: dict[str, Any], extra: str | None, stop: asyncio.Event, ready: asyncio.Barrier
) -> Samples:
    """Commit one outbox row per transaction until ``stop``: BEGIN, INSERT, [``extra``,] COMMIT; with
    ``NOTIFY`` as ``extra`` these are the statements the unit of work sends."""
    samples = Samples()
    connection = await asyncpg.connect(dsn, server_settings={"application_name": WRITER_APP})
    subject = template["type"].rsplit(".", 1)[0]
    try:
        await ready.wait()
        while not stop.is_set():
            event_id = new_id()
            payload = json.dumps({**template, "id": str(event_id)}, separators=(",", ":"))
            started = time.perf_counter()
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute(INSERT, event_id, subject, payload)
            if extra is not None:
                await connection.execute(extra)
            committing = time.perf_counter()
            await transaction.commit()
            finished = time.perf_counter()
            samples.finished.append(finished)
            samples.commit.append(finished - committing)
            samples.transaction.append(finished - started)
    finally:
        await connection.close()
    return samples


async def sample_waits(dsn: str, stop: asyncio.Event, waits: Counter[str]) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            for row in await connection.fetch(WAITS, WRITER_APP):
                waits[f"{row['kind']}/{row['event']}"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)
    finally:
        await connection.close()


def latency(values: list[float]) -> dict[str, float]:
    """Median and 99th percentile in milliseconds (nearest rank, as the other benchmarks)."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000}


async def run_mode(dsn: str, writers: int, seconds: float, warmup: float, mode: str) -> dict[str, Any]:
    """W writers for ``warmup + seconds``; only transactions inside the last ``seconds`` count."""
    admin = await asyncpg.connect(dsn)
    try:  # the same starting point for every run: an empty table, a fresh checkpoint
        await admin.execute("TRUNCATE outbox")
        await admin.execute("CHECKPOINT")
    finally:
        await admin.close()
    received = 0

    def on_notify(*_: object) -> None:
        nonlocal received
        received += 1

    listener: asyncpg.Connection | None = None
    notify = mode == "notify"
    if notify:  # as the relay does: one LISTEN connection per service process
        listener = await asyncpg.connect(dsn)
        await listener.add_listener(OUTBOX_CHANNEL, on_notify)
    template = event_template()
    stop = asyncio.Event()
    ready = asyncio.Barrier(writers + 1)
    waits: Counter[str] = Counter()
    tasks = [asyncio.create_task(writer(dsn, template, MODES[mode], stop, ready)) for _ in range(writers)]
    try:
        await ready.wait()
        await asyncio.sleep(warmup)
        window_start = time.perf_counter()
        sampler = asyncio.create_task(sample_waits(dsn, stop, waits))
        await asyncio.sleep(seconds)
        window_end = time.perf_counter()
        stop.set()
        results = await asyncio.gather(*tasks)
        await sampler
        total = sum(len(result.finished) for result in results)
        if listener is not None:
            deadline = time.monotonic() + 5
            while received < total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        if listener is not None:
            await listener.close()
    commit: list[float] = []
    transaction: list[float] = []
    for result in results:
        for finished, commit_s, transaction_s in zip(
            result.finished, result.commit, result.transaction, strict=True
        ):
            if finished - transaction_s >= window_start and finished <= window_end:
                commit.append(commit_s)
                transaction.append(transaction_s)
    sampled = sum(waits.values()) or 1
    return {
        "commits": len(commit),
        "commits_per_s": len(commit) / (window_end - window_start),
        "commit_latency": latency(commit),
        "transaction_latency": latency(transaction),
        "notifications_received": received if notify else None,
        "transactions_total": total,
        "writer_waits_share": {name: count / sampled for name, count in waits.most_common(6)},
    }


async def measure(
    writer_counts: list[int], seconds: float, warmup: float, durable: bool, control: bool
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="citygrid-bench-notify-"))
    try:
        with servers_for(workdir, durable=durable) as (server_url, _nats_url):
            await create_databases(server_url, [DATABASE])
            url = database_url(server_url, DATABASE)
            engine = create_async_engine(to_asyncpg_url(url))
            async with engine.begin() as connection:
                outbox = OutboxMessage.metadata.tables[OutboxMessage.__tablename__]
                await connection.run_sync(outbox.drop, checkfirst=True)
                await connection.run_sync(outbox.create)
                version = (await connection.execute(text("SHOW server_version"))).scalar_one()
                settings = {
                    name: (await connection.execute(text(f"SHOW {name}"))).scalar_one()
                    for name in ("fsync", "synchronous_commit", "wal_sync_method", "commit_delay")
                }
            await engine.dispose()
            dsn = to_libpq_url(url)
            rows = []
            for index, writers in enumerate(writer_counts):
                # Alternate which mode goes first, so drift over the run does not favour one.
                modes = ["notify", "no_notify", *(["control"] if control else [])]
                order = modes if index % 2 == 0 else modes[::-1]
                figures = {mode: await run_mode(dsn, writers, seconds, warmup, mode) for mode in order}
                row: dict[str, Any] = {"writers": writers, "order": order, **figures}
                row["ratio_commits_per_s"] = (
                    figures["notify"]["commits_per_s"] / figures["no_notify"]["commits_per_s"]
                )
                if control:
                    row["ratio_to_control"] = (
                        figures["notify"]["commits_per_s"] / figures["control"]["commits_per_s"]
                    )
                rows.append(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "durable": durable,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "postgres": version,
        "settings": settings,
        "payload_bytes": len(json.dumps(event_template(), separators=(",", ":"))),
        "runs": rows,
    }


def report(results: dict[str, Any]) -> list[str]:
    settings = ", ".join(f"{name}={value}" for name, value in results["settings"].items())
    lines = [
        f"PostgreSQL {results['postgres']} ({settings}); {results['payload_bytes']} B payload, "
        f"{results['seconds']:g} s per run after {results['warmup_seconds']:g} s warm-up",
        "commit latency = the COMMIT round trip; ratio = commits/s with NOTIFY / without",
        f"{'writers':>7} | {'NOTIFY c/s':>10} | {'none c/s':>10} | {'ratio':>5} | "
        f"{'NOTIFY p50/p99 ms':>17} | {'none p50/p99 ms':>17}",
    ]
    for row in results["runs"]:
        with_, without = row["notify"], row["no_notify"]
        lines.append(
            f"{row['writers']:>7} | {with_['commits_per_s']:>10.0f} | {without['commits_per_s']:>10.0f} | "
            f"{row['ratio_commits_per_s']:>5.2f} | "
            f"{with_['commit_latency']['p50_ms']:>7.2f} / {with_['commit_latency']['p99_ms']:>7.2f} | "
            f"{without['commit_latency']['p50_ms']:>7.2f} / {without['commit_latency']['p99_ms']:>7.2f}"
        )
    if any("control" in row for row in results["runs"]):
        lines.append("control (no NOTIFY, SELECT 1 in its place: the same round trips):")
        for row in results["runs"]:
            figures = row["control"]
            lines.append(
                f"{row['writers']:>7} | control {figures['commits_per_s']:>6.0f} c/s | NOTIFY/control "
                f"{row['ratio_to_control']:.2f} | p50/p99 {figures['commit_latency']['p50_ms']:.2f} / "
                f"{figures['commit_latency']['p99_ms']:.2f} ms"
            )
    for row in results["runs"]:
        for mode in row["order"]:
            waits = ", ".join(
                f"{name} {share:.0%}" for name, share in row[mode]["writer_waits_share"].items()
            )
            lines.append(f"  {row['writers']:>3} writers, {mode:<9} writer backends: {waits}")
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__)
    parser.add_argument("--writers", default="1,4,16", help="comma-separated writer counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fsync and synchronous_commit on, as in production (default); --no-durable turns them off",
    )
    parser.add_argument(
        "--control", action="store_true", help="also run without NOTIFY but with SELECT 1 in its place"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    writer_counts = [int(part) for part in arguments.writers.split(",") if part.strip()]
    results = asyncio.run(
        measure(writer_counts, arguments.seconds, arguments.warmup, arguments.durable, arguments.control)
    )
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2))
    print("\n".join(report(results)))
    print(f"results in {arguments.output}")


if __name__ == "__main__":
    cli()
