"""The transport rules on real PostgreSQL and NATS: positions evaluated once whichever replica stored
them and however many replicas run, a batch that commits late still evaluated, a violation recorded
once per episode with its track, and its event in the outbox of the same transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.settings import to_libpq_url
from citygrid.testing import first_runs_done, wait_until
from services.muck.tests.conftest import PLATFORM, READER, Muck

PLATE = "粤A00001D"
FAST = {"rules_round_seconds": 0.1, "rules_lease_seconds": 1.0}


def speeding(start_ago_s: int, count: int, plate: str = PLATE, kmh: float = 85.0) -> list[dict[str, Any]]:
    """``count`` reports 10 s apart, from ``start_ago_s`` seconds ago, at ``kmh``, empty, on a road."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=start_ago_s)
    return [
        {
            "plate": plate,
            "at": (start + timedelta(seconds=10 * i)).isoformat(),
            "location": {"type": "Point", "coordinates": [113.40 + 0.0002 * i, 23.13]},
            "speed_kmh": kmh,
            "direction": 90,
            "load": "empty",
        }
        for i in range(count)
    ]


async def fetch(muck: Muck, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(muck.runtime.settings.database_url))
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def violations(muck: Muck) -> list[asyncpg.Record]:
    return await fetch(muck, "SELECT * FROM violations ORDER BY at")


async def violation_events(muck: Muck) -> list[dict[str, Any]]:
    rows = await fetch(
        muck, "SELECT payload FROM outbox WHERE subject = 'muck.violation.detected' ORDER BY created_at"
    )
    return [json.loads(row["payload"]) for row in rows]


async def test_sustained_overspeed_is_one_violation_with_its_track_and_its_event(muck_factory) -> None:
    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        # Two minutes at 85 km/h: overspeed after 60 s, once for the episode.
        response = await muck.post("/v1/positions", {"positions": speeding(300, 12)}, scopes=PLATFORM)
        assert response.status_code == 200, response.text
        await wait_until(lambda: _count(muck, "violations", 1), timeout=20)
        (row,) = await violations(muck)
        assert (row["plate"], row["kind"], row["severity"]) == (PLATE, "overspeed", "normal")
        assert row["at"] - row["episode_started_at"] == timedelta(seconds=60)
        assert len(row["track"]) >= 2

        # The same reports sent again (an acknowledgement lost) and a later round find nothing new.
        await muck.post("/v1/positions", {"positions": speeding(300, 12)}, scopes=PLATFORM)
        await wait_until(lambda: _horizon_passed_all(muck), timeout=20)
        assert len(await violations(muck)) == 1

        (event,) = await violation_events(muck)
        data = event["data"]
        assert (data["reference"], data["kind"], data["plate"]) == (str(row["id"]), "overspeed", PLATE)
        assert data["category_code"] == "20312"
        (evidence,) = data["evidence"]
        assert evidence["content_type"] == "application/geo+json"

        # The evidence is the track document served under its hash.
        track = await muck.get(f"/v1/violations/{row['id']}/track", scopes=READER)
        assert track.status_code == 200, track.text
        assert track.headers["content-type"] == "application/geo+json"
        assert hashlib.sha256(track.content).hexdigest() == evidence["sha256"] == row["track_sha256"]
        assert len(track.content) == evidence["size_bytes"]
        feature = track.json()
        assert feature["geometry"]["type"] == "LineString"
        assert feature["properties"]["plate"] == PLATE

        listed = await muck.get("/v1/violations?kind=overspeed", scopes=READER)
        assert [item["id"] for item in listed.json()["items"]] == [str(row["id"])]


async def test_two_replicas_evaluate_each_position_once_and_the_second_takes_over_the_first(
    muck_factory,
) -> None:
    async with muck_factory(**FAST) as first:
        await first.register_fleet(2)
        async with muck_factory(**FAST) as second:
            # Reports reach both replicas, as a load balancer spreads them.
            await first.post("/v1/positions", {"positions": speeding(600, 6)}, scopes=PLATFORM)
            # Neither half lasts the 60 s overspeed needs; together, in time order, they do.
            await second.post("/v1/positions", {"positions": speeding(540, 6)}, scopes=PLATFORM)
            await wait_until(lambda: _count(first, "violations", 1), timeout=20)
            await wait_until(lambda: _horizon_passed_all(first), timeout=20)
            leaders = [app.app.state.muck_metrics.rules_leader._value.get() for app in (first, second)]
            assert sorted(leaders) == [0, 1]

        # ``second`` stopped. Whichever led, positions sent now are evaluated by the survivor, once.
        survivor = first
        await survivor.post(
            "/v1/positions", {"positions": speeding(200, 12, plate="粤A00002D")}, scopes=PLATFORM
        )
        await wait_until(lambda: _count(survivor, "violations", 2), timeout=30)
        await wait_until(lambda: _horizon_passed_all(survivor), timeout=20)
        found = await violations(survivor)
        assert sorted((row["plate"], row["kind"]) for row in found) == [
            ("粤A00001D", "overspeed"),
            ("粤A00002D", "overspeed"),
        ]
        assert len(await violation_events(survivor)) == 2
        (cursor,) = await fetch(survivor, "SELECT owner FROM rule_cursor")
        assert cursor["owner"] == survivor.app.state.rules.owner


async def test_a_batch_that_commits_late_is_still_evaluated(muck_factory) -> None:
    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        connection = await asyncpg.connect(to_libpq_url(muck.runtime.settings.database_url))
        try:
            late = connection.transaction()
            await late.start()
            start = datetime.now(UTC) - timedelta(minutes=5)
            txid = await connection.fetchval("SELECT (pg_current_xact_id()::text)::bigint")
            await connection.executemany(
                "INSERT INTO positions (plate, at, lon, lat, speed_kmh, direction, alarm, status, load, "
                "source, blind_area, received_at) VALUES ($1, $2, 113.4, 23.13, 90, 90, 0, 0, 0, 'http', "
                "false, now())",
                [(PLATE, start + timedelta(seconds=10 * i)) for i in range(12)],
            )
            # Rounds go on meanwhile (other trucks report); none passes the open transaction.
            await muck.post(
                "/v1/positions", {"positions": speeding(100, 3, plate="粤A00001D", kmh=20)}, scopes=PLATFORM
            )
            await wait_until(lambda: _cursor_exists(muck), timeout=20)
            for _ in range(5):
                (cursor,) = await fetch(muck, "SELECT horizon FROM rule_cursor")
                assert cursor["horizon"] <= txid
            await late.commit()
        finally:
            await connection.close()
        await wait_until(lambda: _count(muck, "violations", 1), timeout=20)
        (row,) = await violations(muck)
        assert row["kind"] == "overspeed"


async def _count(muck: Muck, table: str, expected: int) -> bool:
    rows = await fetch(muck, f"SELECT count(*) AS n FROM {table}")  # noqa: S608 (a test's own table name)
    return int(rows[0]["n"]) >= expected


async def _cursor_exists(muck: Muck) -> bool:
    return bool(await fetch(muck, "SELECT 1 FROM rule_cursor"))


async def _horizon_passed_all(muck: Muck) -> bool:
    """Every stored position is below the rules' horizon: they have all been evaluated."""
    rows = await fetch(
        muck,
        "SELECT (SELECT horizon FROM rule_cursor) > coalesce((SELECT max(txid) FROM positions), 0) AS done",
    )
    return bool(rows and rows[0]["done"])


async def test_violations_older_than_the_record_retention_are_deleted_and_newer_ones_kept(muck: Muck) -> None:
    from services.muck import retention

    # The service's own round runs once a few seconds after the start (then every 10 minutes): let it
    # pass first, or it may delete the row before this test's round does.
    await first_runs_done(muck.runtime, "muck-retention")
    connection = await asyncpg.connect(to_libpq_url(muck.runtime.settings.database_url))
    try:
        for plate, age_days in (("粤A00001D", 6 * 365), ("粤A00002D", 30)):
            await connection.execute(
                "INSERT INTO violations (id, plate, kind, severity, episode_started_at, at, lon, lat, detail, "
                "created_at) VALUES (gen_random_uuid(), $1, 'overspeed', 'normal', now(), now(), 113.4, 23.1, "
                "'test', now() - make_interval(days => $2))",
                plate,
                age_days,
            )
    finally:
        await connection.close()
    assert await retention.purge_once(muck.runtime.db) == 1
    assert "muck-retention" in {job.name for job in muck.runtime.jobs}, "the service runs it"
    assert [row["plate"] for row in await violations(muck)] == ["粤A00002D"]


# -- manifests moved by the geofences; terminals offline on a manifest -----------------------------

SITE_LON, DUMP_LON, LAT = 113.36, 113.40, 23.13


def ring(lon: float, half: float = 0.001) -> list[list[float]]:
    return [
        [lon - half, LAT - half],
        [lon + half, LAT - half],
        [lon + half, LAT + half],
        [lon - half, LAT + half],
    ]


async def register_sites(muck: Muck) -> None:
    sites = [
        {
            "code": code,
            "kind": kind,
            "name": code,
            "district_code": "440106",
            "boundary": ring(lon),
            "permit_number": "PZ-1",
            "permit_valid_from": "2026-01-01",
            "permit_valid_until": "2030-12-31",
            "approved_quantity_m3": 50_000.0,
        }
        for code, kind, lon in (("TH-CS-1", "construction", SITE_LON), ("BY-DS-1", "disposal", DUMP_LON))
    ]
    response = await muck.post("/v1/sites/import", {"sites": sites})
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == [], response.text


async def issue_directly(muck: Muck, plate: str = PLATE, window_minutes: int = 240) -> str:
    """An issued manifest, written as the issuing route writes it."""
    connection = await asyncpg.connect(to_libpq_url(muck.runtime.settings.database_url))
    try:
        return str(
            await connection.fetchval(
                "INSERT INTO manifests (id, number, plate, company_code, origin_site, disposal_site, "
                "district_code, waste_type, declared_quantity_m3, window_start, window_end, status, "
                "issued_by, issued_at) VALUES (gen_random_uuid(), 'LD-TEST-' || $1, $1, 'GZJY', 'TH-CS-1', "
                "'BY-DS-1', '440106', 'spoil', 15, now() - interval '1 hour', "
                "now() + make_interval(mins => $2), 'issued', 'test', now() - interval '1 hour') RETURNING id",
                plate,
                window_minutes,
            )
        )
    finally:
        await connection.close()


def trip(plate: str = PLATE) -> list[dict[str, Any]]:
    """Inside the site, out along the road, into the disposal site: 30 s apart, ending 2 minutes ago."""
    lons = [SITE_LON, SITE_LON, 113.37, 113.38, 113.39, DUMP_LON]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=120 + 30 * len(lons))
    return [
        {
            "plate": plate,
            "at": (start + timedelta(seconds=30 * i)).isoformat(),
            "location": {"type": "Point", "coordinates": [lon, LAT]},
            "speed_kmh": 30.0 if 0 < i < len(lons) - 1 else 2.0,
            "direction": 90,
            "load": "full" if i else "empty",
        }
        for i, lon in enumerate(lons)
    ]


async def test_a_manifest_is_loaded_on_leaving_its_site_and_delivered_on_entering_its_disposal_site(
    muck_factory,
) -> None:
    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        await register_sites(muck)
        manifest_id = await issue_directly(muck)
        response = await muck.post("/v1/positions", {"positions": trip()}, scopes=PLATFORM)
        assert response.status_code == 200, response.text

        async def delivered() -> bool:
            rows = await fetch(muck, "SELECT status FROM manifests WHERE id = $1", manifest_id)
            return bool(rows[0]["status"] == "delivered")

        await wait_until(delivered, timeout=20)
        steps = await fetch(
            muck, "SELECT action, actor FROM manifest_steps WHERE manifest_id = $1 ORDER BY id", manifest_id
        )
        assert [(row["action"], row["actor"]) for row in steps] == [
            ("load", "rules"),
            ("depart", "rules"),
            ("deliver", "rules"),
        ]
        subjects = [
            row["subject"]
            for row in await fetch(
                muck, "SELECT subject FROM outbox WHERE subject LIKE 'muck.manifest.%' ORDER BY seq"
            )
        ]
        assert subjects == ["muck.manifest.loaded", "muck.manifest.delivered"]
        # On its manifest, on no route, in no transport area: nothing broke a rule.
        assert await violations(muck) == []


async def test_a_terminal_silent_on_the_road_is_one_violation_however_many_rounds_see_it(
    muck_factory,
) -> None:
    from services.muck.rules.service import offline_round

    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        await register_sites(muck)
        manifest_id = await issue_directly(muck)
        # Left the site 15 minutes ago and went silent two positions later.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
        silent = [
            {**position, "at": (start + timedelta(seconds=30 * i)).isoformat()}
            for i, position in enumerate(trip()[:3])
        ]
        assert (await muck.post("/v1/positions", {"positions": silent}, scopes=PLATFORM)).status_code == 200

        async def on_the_road() -> bool:
            rows = await fetch(muck, "SELECT status FROM manifests WHERE id = $1", manifest_id)
            return bool(rows[0]["status"] == "in_transit")

        await wait_until(on_the_road, timeout=20)
        metrics = muck.app.state.muck_metrics
        # The service's own round may find it first: between them, it is found once.
        found = [await offline_round(muck.runtime, metrics) for _ in range(3)]
        assert sum(found) <= 1
        assert found[1:] == [0, 0]
        (row,) = await violations(muck)
        assert (row["kind"], row["manifest_number"]) == ("terminal_offline", f"LD-TEST-{PLATE}")
        assert row["episode_started_at"] == start + timedelta(seconds=60)
