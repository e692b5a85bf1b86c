"""Cases at scale: a year of cases loaded by COPY, then case creation direct and through the gateway,
the case list and the evaluation (综合评价) queries, each beside a baseline from the same run.

Baselines: creation straight to the case service (what the gateway adds); the list's own SQL run
raw (what HTTP, the principal and the models add); ``count(*)`` of the very rows an evaluation
reads (what computing the figures adds to touching them).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench.stack import REPORT, beside, case_behind_gateway, timed
from citygrid.devstack.servers import create_databases, database_url
from citygrid.ids import new_id
from citygrid.migrate import upgrade
from citygrid.natsauth import NatsAccess
from citygrid.settings import to_libpq_url
from contract.common import GUANGZHOU_DISTRICTS
from services.case.domain.categories import load_catalogue
from services.case.evaluation import TOUCHES_PERIOD_SQL

CASE_DATABASE, GATEWAY_DATABASE = "bench_cases", "bench_cases_gateway"
HOUR = timedelta(hours=1)
CHUNK = 20_000  # cases per COPY round

CASE_COLUMNS = (
    "id", "number", "status", "category_code", "description", "lon", "lat", "district_code",
    "street_code", "source", "unit", "stage", "stage_started_at", "deadline_at", "overdue_at",
    "registered_at", "dispatched_at", "handled_at", "closed_at", "version", "reported_by",
    "created_at", "updated_at",
)  # fmt: skip
HISTORY_COLUMNS = (
    "id", "case_id", "action", "from_status", "to_status", "actor", "actor_name", "unit", "at", "deadline_at",
)  # fmt: skip
STAGE_OF_STATUS = {
    "reported": "register",
    "registered": "dispatch",
    "dispatched": "handle",
    "accepted": "handle",
    "handled": "verify",
}

Step = tuple[str, datetime, datetime | None, str]  # action, at, the deadline running then, status after


def case_timeline(rng: random.Random, created: datetime) -> tuple[list[Step], dict[str, datetime]]:
    """One case's planned steps (some in the future) and the deadline of each stage it enters."""
    deadlines = {"register": created + 4 * HOUR}
    steps: list[Step] = [("report", created, None, "reported")]
    fate = rng.random()
    if fate < 0.02:
        steps.append(("reject", created + rng.uniform(0.2, 3) * HOUR, deadlines["register"], "rejected"))
        return steps, deadlines
    if fate < 0.03:
        steps.append(("merge", created + rng.uniform(0.2, 3) * HOUR, deadlines["register"], "merged"))
        return steps, deadlines
    registered = created + rng.uniform(0.1, 3) * HOUR
    steps.append(("register", registered, deadlines["register"], "registered"))
    deadlines["dispatch"] = registered + 4 * HOUR
    dispatched = registered + rng.uniform(0.1, 3) * HOUR
    steps.append(("dispatch", dispatched, deadlines["dispatch"], "dispatched"))
    deadlines["handle"] = dispatched + 24 * HOUR
    accepted = dispatched + rng.uniform(0.05, 1) * HOUR
    steps.append(("accept", accepted, deadlines["handle"], "accepted"))
    if fate < 0.04:
        steps.append(("cancel", accepted + 2 * HOUR, deadlines["handle"], "cancelled"))
        return steps, deadlines
    if fate < 0.06:
        return steps, deadlines  # never handled: overdue and pending
    if fate < 0.09:
        steps.append(("extension_approved", accepted + HOUR, deadlines["handle"], "accepted"))
        deadlines["handle"] += 24 * HOUR
    handled = dispatched + math.exp(rng.gauss(math.log(4), 1.2)) * HOUR
    steps.append(("handle", handled, deadlines["handle"], "handled"))
    deadlines["verify"] = handled + 8 * HOUR
    if rng.random() < 0.07:
        rework = handled + rng.uniform(0.5, 4) * HOUR
        steps.append(("rework", rework, deadlines["verify"], "accepted"))
        deadlines["handle"] = rework + 24 * HOUR
        handled = rework + math.exp(rng.gauss(math.log(3), 1.0)) * HOUR
        steps.append(("handle", handled, deadlines["handle"], "handled"))
        deadlines["verify"] = handled + 8 * HOUR
    steps.append(("close", handled + rng.uniform(0.5, 6) * HOUR, deadlines["verify"], "closed"))
    return steps, deadlines


def synthesize(
    count: int, now: datetime, seed: int = 7
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Chunks of (case rows, history rows): a year of cases over the districts, streets, units and
    categories, each as far along its course as ``now`` allows."""
    rng = random.Random(seed)
    districts = sorted(GUANGZHOU_DISTRICTS)
    categories = [category.code for category in load_catalogue().categories]
    for first in range(0, count, CHUNK):
        cases: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        for number in range(first, min(count, first + CHUNK)):
            case_id = new_id()
            # In report order, as the table fills in service: a period's cases lie together.
            created = now - timedelta(seconds=(count - number - rng.random()) * 365 * 86400 / count)
            district = rng.choice(districts)
            street = f"{district}{rng.randrange(1, 13):03d}" if rng.random() < 0.9 else None
            unit = f"{district}-unit-{rng.randrange(15):02d}"
            planned, deadlines = case_timeline(rng, created)
            done = [s for s in planned if s[1] <= now]
            times = {action: at for action, at, _, _ in done}  # the last of each action
            status = done[-1][3]
            stage = STAGE_OF_STATUS.get(status)
            deadline = deadlines.get(stage) if stage else None
            dispatched = "dispatch" in times
            cases.append(
                (
                    case_id, f"B{number:011d}", status, rng.choice(categories), "bench case",
                    113.0 + rng.random(), 22.6 + rng.random() * 1.3, district, street, "inspector",
                    unit if dispatched else None, stage, done[-1][1] if stage else None, deadline,
                    deadline + timedelta(minutes=1) if deadline and deadline < now else None,
                    times.get("register"), times.get("dispatch"), times.get("handle"), times.get("close"),
                    len(done), "bench", created, done[-1][1],
                )
            )  # fmt: skip
            previous = None
            for action, at, running, after in done:
                history.append(
                    (new_id(), case_id, action, previous, after, "bench", "bench",
                     unit if action == "dispatch" else None, at, running)
                )  # fmt: skip
                previous = after
        yield cases, history


async def load_cases(url: str, count: int, now: datetime) -> dict[str, float]:
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        started = time.perf_counter()
        history_rows = 0
        for cases, history in synthesize(count, now):
            await connection.copy_records_to_table("cases", records=cases, columns=CASE_COLUMNS)
            await connection.copy_records_to_table("case_history", records=history, columns=HISTORY_COLUMNS)
            history_rows += len(history)
        seconds = time.perf_counter() - started
        await connection.execute("VACUUM ANALYZE cases")
        await connection.execute("VACUUM ANALYZE case_history")
    finally:
        await connection.close()
    return {
        "cases": count,
        "history_rows": history_rows,
        "load_seconds": seconds,
        "rows_per_s": (count + history_rows) / seconds,
    }


def rows_of_period_sql() -> str:
    """``count(*)`` of the cases an evaluation of ``[$1, $2)`` reads."""
    condition = TOUCHES_PERIOD_SQL.replace(":start", "$1").replace(":end", "$2")
    return f"SELECT count(*) FROM cases c WHERE {condition}"  # noqa: S608 - fixed text


async def run(
    server_url: str, nats: NatsAccess, *, cases: int, requests: int, repeats: int = 5
) -> dict[str, Any]:
    await create_databases(server_url, [CASE_DATABASE, GATEWAY_DATABASE])
    case_db, gateway_db = database_url(server_url, CASE_DATABASE), database_url(server_url, GATEWAY_DATABASE)
    await asyncio.to_thread(upgrade, "services.case", case_db)
    await asyncio.to_thread(upgrade, "gateway", gateway_db)
    raw = await asyncpg.connect(to_libpq_url(case_db))
    now = await raw.fetchval("SELECT now()")
    loaded = await load_cases(case_db, cases, now)

    results: dict[str, Any] = {"loaded": loaded}
    try:
        async with (
            case_behind_gateway(case_db, gateway_db, nats, evaluation_gauges_seconds=3600) as stack,
            httpx.AsyncClient(timeout=120) as client,
        ):
            case_url, gateway_url, via_gateway, direct = (
                stack.case_url,
                stack.gateway_url,
                stack.via_gateway,
                stack.direct,
            )
            for _ in range(20):  # warm both paths
                await client.post(f"{case_url}/v1/cases", json=REPORT, headers=direct())
                await client.post(f"{gateway_url}/api/case/v1/cases", json=REPORT, headers=via_gateway)
            direct_post = await timed(
                lambda: client.post(f"{case_url}/v1/cases", json=REPORT, headers=direct()), requests
            )
            gateway_post = await timed(
                lambda: client.post(f"{gateway_url}/api/case/v1/cases", json=REPORT, headers=via_gateway),
                requests,
            )
            results["report_case"] = beside(gateway_post, direct_post)

            list_sql = (
                "SELECT * FROM cases WHERE district_code = $1 ORDER BY created_at DESC, id DESC LIMIT 51"
            )
            results["list_district_page"] = beside(
                await timed(
                    lambda: client.get(
                        f"{case_url}/v1/cases",
                        params={"district": "440106", "limit": 50},
                        headers=direct(),
                    ),
                    repeats * 4,
                ),
                await timed(lambda: raw.fetch(list_sql, "440106"), repeats * 4),
            )

            count_sql = rows_of_period_sql()
            for days in (30, 365):
                period = (now - timedelta(days=days), now)

                async def count_rows(period: tuple[datetime, datetime] = period) -> object:
                    return await raw.fetchval(count_sql, *period)

                rows = await count_rows()
                baseline = await timed(count_rows, repeats)
                for by in ("district", "street", "unit", "category"):
                    query = {"from": period[0].isoformat(), "to": period[1].isoformat(), "by": by}

                    async def evaluate(query: dict[str, str] = query) -> httpx.Response:
                        return await client.get(f"{case_url}/v1/evaluation", params=query, headers=direct())

                    await evaluate()  # warm
                    measured = await timed(evaluate, repeats)
                    results[f"evaluation_{days}d_by_{by}"] = {"rows": rows, **beside(measured, baseline)}
    finally:
        await raw.close()
    return results


def print_results(results: dict[str, Any]) -> None:
    loaded = results["loaded"]
    print(
        f"cases        {loaded['cases']} cases + {loaded['history_rows']} history rows by COPY in "
        f"{loaded['load_seconds']:.1f} s ({loaded['rows_per_s']:.0f} rows/s)"
    )
    creation = results["report_case"]
    print(
        f"report_case  with them loaded: direct p50 {creation['baseline']['p50_ms']:.2f} ms  "
        f"p99 {creation['baseline']['p99_ms']:.2f} ms | gateway p50 {creation['measured']['p50_ms']:.2f} ms  "
        f"p99 {creation['measured']['p99_ms']:.2f} ms | gateway/direct p50 ×{creation['ratio_p50']:.2f}"
    )
    for name, figures in results.items():
        if name in ("loaded", "report_case"):
            continue
        rows = f" ({figures['rows']} cases)" if "rows" in figures else ""
        print(
            f"{name:<28} p50 {figures['measured']['p50_ms']:.1f} ms  p99 {figures['measured']['p99_ms']:.1f} ms"
            f" | baseline p50 {figures['baseline']['p50_ms']:.1f} ms{rows} | ×{figures['ratio_p50']:.2f}"
        )
