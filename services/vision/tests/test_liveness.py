"""Camera heartbeats on real PostgreSQL: a batch updates the narrow liveness table and rewrites no
``cameras`` row; the offline sweep marks silent cameras offline once, whichever replicas run it,
and never races a heartbeat into a wrong status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from citygrid.settings import to_libpq_url
from citygrid.testing import wait_until
from services.vision.registry import (
    CAME_ONLINE,
    HEARTBEAT_UPSERT,
    SWEEP,
    SWEEP_LOCK,
    mark_offline,
    record_heartbeats,
)
from services.vision.tests.conftest import INGEST, Vision, camera

CAMERAS = [f"440106000813200010{n:02d}" for n in range(40)]


async def heartbeat(vision, camera_ids) -> dict[str, Any]:
    response = await vision.client.post(
        "/v1/cameras/heartbeats", json={"camera_ids": list(camera_ids)}, headers=vision.as_(INGEST)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def camera_row_versions(vision) -> dict[str, tuple[str, str]]:
    """Each camera row's creating transaction and place: both change when the row is rewritten."""
    async with vision.runtime.db() as session:
        rows = await session.execute(text("SELECT camera_id, xmin::text, ctid::text FROM cameras"))
        return {camera_id: (xmin, ctid) for camera_id, xmin, ctid in rows}


async def statuses(vision) -> dict[str, str]:
    async with vision.runtime.db() as session:
        return {c: s for c, s in await session.execute(text("SELECT camera_id, status FROM cameras"))}


async def updated_rows(session) -> tuple[int, int, int]:
    """Rows of ``cameras`` updated, of ``camera_liveness`` updated and of those HOT, as this
    backend counts them so far."""
    row = (
        await session.execute(
            text(
                "SELECT pg_stat_get_xact_tuples_updated('cameras'::regclass), "
                "pg_stat_get_xact_tuples_updated('camera_liveness'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('camera_liveness'::regclass)"
            )
        )
    ).one()
    return (int(row[0]), int(row[1]), int(row[2]))


# The tests silence cameras for two hours and sweep them with a one-hour timeout themselves; the
# service's own sweep (every fifth of its timeout) must not get there first, so it waits three.
QUIET_SWEEP = 3 * 3600.0


@pytest.fixture
async def vision(vision_factory) -> AsyncIterator[Vision]:
    async with vision_factory(camera_offline_seconds=QUIET_SWEEP) as running:
        yield running


async def silence(vision, camera_ids, *, hours: int = 2) -> None:
    """The cameras' last heartbeat, hours ago: as if they had gone quiet."""
    async with vision.runtime.db() as session, session.begin():
        await session.execute(
            text(
                "UPDATE camera_liveness SET last_heartbeat_at = now() - make_interval(hours => :hours) "
                "WHERE camera_id = ANY(:ids)"
            ),
            {"ids": list(camera_ids), "hours": hours},
        )


async def test_a_heartbeat_batch_rewrites_no_camera_row_and_updates_liveness_in_place(vision):
    await vision.register(*[camera(c) for c in CAMERAS])
    first = await heartbeat(vision, [*CAMERAS, "44010600081320999999"])
    assert first == {"online": len(CAMERAS), "unknown": ["44010600081320999999"]}
    assert set((await statuses(vision)).values()) == {"online"}  # the transition: written once
    before = await camera_row_versions(vision)

    async with vision.runtime.db() as session, session.begin():
        # The backend's counts not yet flushed to the statistics include its earlier transactions:
        # what this one did is the difference.
        before_counts = await updated_rows(session)
        online, unknown = await record_heartbeats(session, list(reversed(CAMERAS)) + CAMERAS[:5])
        after_counts = await updated_rows(session)
    cameras_updated, liveness_updated, liveness_hot = (
        a - b for a, b in zip(after_counts, before_counts, strict=True)
    )
    assert (online, unknown) == (len(CAMERAS), [])
    assert cameras_updated == 0
    assert liveness_updated == liveness_hot == len(CAMERAS)  # in place: no index entry written
    assert await camera_row_versions(vision) == before

    detail = (await vision.client.get(f"/v1/cameras/{CAMERAS[0]}", headers=vision.as_())).json()
    assert detail["status"] == "online"
    assert detail["last_heartbeat_at"] is not None
    listed = await vision.client.get(
        "/v1/cameras", params={"status": "online", "limit": 5}, headers=vision.as_()
    )
    assert all(c["last_heartbeat_at"] is not None for c in listed.json()["items"])


async def test_silent_cameras_go_offline_once_across_two_replicas(vision_factory):
    # The replicas' own sweeps wait three hours of silence: only the calls below take cameras offline.
    async with (
        vision_factory(camera_offline_seconds=QUIET_SWEEP) as first,
        vision_factory(camera_offline_seconds=QUIET_SWEEP) as second,
    ):
        await first.register(*[camera(c) for c in CAMERAS])
        await heartbeat(second, CAMERAS)
        quiet, alive = CAMERAS[:10], CAMERAS[10:]
        await silence(first, quiet)
        alive_rows = {c: v for c, v in (await camera_row_versions(first)).items() if c in alive}

        swept = await asyncio.gather(
            mark_offline(first.runtime.db, 3600), mark_offline(second.runtime.db, 3600)
        )
        assert sum(swept) == len(quiet)
        assert list(
            await asyncio.gather(mark_offline(first.runtime.db, 3600), mark_offline(second.runtime.db, 3600))
        ) == [0, 0]
        now = await statuses(first)
        assert {c for c, s in now.items() if s == "offline"} == set(quiet)
        assert {c: v for c, v in (await camera_row_versions(first)).items() if c in alive} == alive_rows

        # Back from silence: the next heartbeat puts the camera online again.
        await heartbeat(first, quiet[:1])
        assert (await statuses(second))[quiet[0]] == "online"


async def test_a_sweep_finds_another_replicas_sweep_running_and_does_nothing(vision, vision_database):
    await vision.register(*[camera(c) for c in CAMERAS[:3]])
    await heartbeat(vision, CAMERAS[:3])
    await silence(vision, CAMERAS[:3])
    other_replica = await asyncpg.connect(to_libpq_url(vision_database))
    try:
        await other_replica.execute("BEGIN")
        assert await other_replica.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK)
        assert await mark_offline(vision.runtime.db, 3600) == 0
        await other_replica.execute("ROLLBACK")
    finally:
        await other_replica.close()
    assert await mark_offline(vision.runtime.db, 3600) == 3


async def waiting_on_a_lock(vision_database: str) -> bool:
    connection = await asyncpg.connect(to_libpq_url(vision_database))
    try:
        return bool(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await connection.close()


async def test_a_heartbeat_arriving_while_the_sweep_takes_its_camera_offline_brings_it_back(
    vision, vision_database
):
    silent = CAMERAS[0]
    await vision.register(camera(silent))
    await heartbeat(vision, [silent])
    await silence(vision, [silent])
    async with vision.runtime.db() as sweep:
        await sweep.begin()
        taken = (await sweep.execute(SWEEP, {"timeout": 3600.0, "batch": 100})).scalars().all()
        assert taken == [silent]
        late = asyncio.create_task(heartbeat(vision, [silent]))  # waits for the sweep's row lock
        await wait_until(lambda: waiting_on_a_lock(vision_database))
        assert not late.done()
        await sweep.commit()
    assert (await late)["online"] == 1
    assert (await statuses(vision))[silent] == "online"


async def test_the_sweep_leaves_a_camera_alone_whose_heartbeat_is_being_written(vision, vision_database):
    silent = CAMERAS[0]
    await vision.register(camera(silent))
    await heartbeat(vision, [silent])
    await silence(vision, [silent])
    async with vision.runtime.db() as beat:
        await beat.begin()
        assert await record_heartbeats(beat, [silent]) == (1, [])
        sweeping = asyncio.create_task(mark_offline(vision.runtime.db, 3600))  # waits for the row
        await wait_until(lambda: waiting_on_a_lock(vision_database))
        assert not sweeping.done()
        await beat.commit()
    assert await sweeping == 0
    assert (await statuses(vision))[silent] == "online"


async def test_heartbeats_and_the_sweep_read_cameras_by_index_only(vision):
    await vision.register(*[camera(c) for c in CAMERAS])
    await heartbeat(vision, CAMERAS)
    plans = []
    async with vision.runtime.db() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        for statement, params in (
            (HEARTBEAT_UPSERT, {"ids": CAMERAS}),
            (CAME_ONLINE, {"ids": CAMERAS}),
            (SWEEP, {"timeout": 3600.0, "batch": 5000}),
        ):
            explained = text(f"EXPLAIN {statement.text}")
            plans.append("\n".join((await session.scalars(explained, params)).all()))
    for plan in plans:
        assert "Seq Scan on cameras" not in plan, plan
