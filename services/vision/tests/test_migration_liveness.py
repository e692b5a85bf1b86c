"""Migration 0003 on a database of the previous release: the recorded heartbeats move to
``camera_liveness`` in batches without rewriting a camera row, the indexes build concurrently and
valid, and the downgrade gives the registry its newest heartbeats back."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from pathlib import Path

import asyncpg
from alembic import command

from citygrid.devstack.servers import create_databases, database_url
from citygrid.migrate import alembic_config, upgrade
from citygrid.settings import to_libpq_url

VERSIONS = Path(__file__).resolve().parents[1] / "migrations" / "versions"


def migration_0003():
    spec = importlib.util.spec_from_file_location("vision_0003", VERSIONS / "0003_liveness_and_figures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_heartbeats_move_to_the_liveness_table_in_batches_and_come_back_on_downgrade(infrastructure):
    batch = migration_0003().BACKFILL_BATCH
    cameras = 2 * batch + 345  # three batches, the last one short
    name = f"test_vision_migration_{uuid.uuid4().hex[:8]}"
    await create_databases(infrastructure.server_url, [name])
    url = database_url(infrastructure.server_url, name)
    await asyncio.to_thread(upgrade, "services.vision", url, "0002")
    connection = await asyncpg.connect(to_libpq_url(url))
    try:
        # The previous release's registry: every tenth camera never sent a heartbeat.
        await connection.execute(
            "INSERT INTO cameras (camera_id, name, owner, division_code, industry_code, device_type, "
            "network_code, lon, lat, status, last_heartbeat_at) "
            "SELECT '44010600081320' || lpad(n::text, 6, '0'), 'cam', 'transport', '44010600', '08', "
            "'132', '0', 113.3, 23.1, CASE WHEN n % 10 = 0 THEN 'unknown' ELSE 'online' END, "
            "CASE WHEN n % 10 = 0 THEN NULL ELSE now() - n * interval '1 second' END "
            "FROM generate_series(1, $1) n",
            cameras,
        )
        before = await connection.fetch("SELECT camera_id, xmin::text, last_heartbeat_at FROM cameras")

        await asyncio.to_thread(upgrade, "services.vision", url)

        copied = dict(await connection.fetch("SELECT camera_id, last_heartbeat_at FROM camera_liveness"))
        assert copied == {r["camera_id"]: r["last_heartbeat_at"] for r in before if r["last_heartbeat_at"]}
        assert len(copied) == cameras - cameras // 10
        after = {
            r["camera_id"]: r["xmin"]
            for r in await connection.fetch("SELECT camera_id, xmin::text FROM cameras")
        }
        assert after == {r["camera_id"]: r["xmin"] for r in before}  # no camera row was written
        assert await connection.fetchval(
            "SELECT reloptions FROM pg_class WHERE relname = 'camera_liveness'"
        ) == ["fillfactor=50"]
        indexes = await connection.fetch(
            "SELECT c.relname, am.amname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE c.relname IN ('ix_reviews_at', 'ix_alarms_raised') ORDER BY c.relname"
        )
        assert [tuple(r) for r in indexes] == [
            ("ix_alarms_raised", "btree", True),
            ("ix_reviews_at", "brin", True),
        ]
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'camera_liveness'")
            == 1
        )  # its primary key, nothing else

        # New heartbeats recorded after the upgrade are what the registry gets back.
        await connection.execute(
            "UPDATE camera_liveness SET last_heartbeat_at = now() + interval '1 hour' WHERE camera_id LIKE '%5'"
        )
        newest = dict(await connection.fetch("SELECT camera_id, last_heartbeat_at FROM camera_liveness"))
        await asyncio.to_thread(command.downgrade, alembic_config("services.vision", url), "0002")
        restored = {
            r["camera_id"]: r["last_heartbeat_at"]
            for r in await connection.fetch("SELECT camera_id, last_heartbeat_at FROM cameras")
            if r["last_heartbeat_at"] is not None
        }
        assert restored == newest
        assert not await connection.fetchval("SELECT to_regclass('camera_liveness') IS NOT NULL")

        await asyncio.to_thread(upgrade, "services.vision", url)  # and up again
        assert await connection.fetchval("SELECT count(*) FROM camera_liveness") == len(newest)
    finally:
        await connection.close()
        admin = await asyncpg.connect(to_libpq_url(infrastructure.server_url))
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
