"""Snapshots reach the blob store before intake takes its per-key locks: no lock, and no other
replica's batch of the same key, waits on a write and its fsync."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from citygrid.blobs import BlobStore, StoredBlob
from citygrid.settings import to_libpq_url
from services.vision import intake
from services.vision.tests.conftest import TIANHE_CAMERA, camera, detection, snapshot
from services.vision.tests.test_service import alarm_rows

KEY = (TIANHE_CAMERA, "littering")


@dataclass
class WatchedBlobStore:
    """The real store, and at each write whether the key's advisory lock is held by anyone."""

    inner: BlobStore
    database: str
    key: tuple[str, str]
    lock_held_at_put: list[bool] = field(default_factory=list)

    async def put(self, data: bytes, content_type: str) -> StoredBlob:
        lock = intake.lock_key(self.key)
        connection = await asyncpg.connect(to_libpq_url(self.database))
        try:
            held = await connection.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = $1 AND objid = $2 AND objsubid = 1",
                (lock >> 32) & 0xFFFFFFFF,
                lock & 0xFFFFFFFF,
            )
        finally:
            await connection.close()
        self.lock_held_at_put.append(bool(held))
        return await self.inner.put(data, content_type)

    async def get(self, sha256: str) -> bytes:
        return await self.inner.get(sha256)

    async def exists(self, sha256: str) -> bool:
        return await self.inner.exists(sha256)


async def test_http_intake_writes_snapshots_before_it_takes_the_keys_lock(vision, vision_database):
    await vision.register(camera())
    context = vision.app.state.vision
    watched = WatchedBlobStore(context.blobs, vision_database, KEY)
    context.blobs = watched
    response = await vision.ingest(
        detection(algorithm="littering", confidence=0.85, snapshot_base64=snapshot("one")),
        detection(algorithm="littering", confidence=0.95, snapshot_base64=snapshot("two")),
        detection(algorithm="littering", confidence=0.95, snapshot_base64=snapshot("two")),  # same bytes
    )
    assert response.status_code == 200, response.text
    assert watched.lock_held_at_put == [False, False]  # each distinct snapshot once, no lock held
    (alarm,) = await alarm_rows(vision)
    stored = await vision.client.get(f"/v1/snapshots/{alarm.snapshot_sha256}", headers=vision.as_())
    assert b"two" in stored.content


async def test_a_batch_given_raw_to_ingest_is_staged_before_its_first_query(vision, vision_database):
    """The NATS intake hands ``ingest`` raw items inside an open unit of work."""
    await vision.register(camera())
    context = vision.app.state.vision
    watched = WatchedBlobStore(context.blobs, vision_database, KEY)
    async with vision.runtime.uow() as uow:
        results = await intake.ingest(
            uow,
            [detection(algorithm="littering", snapshot_base64=snapshot("raw"))],
            blobs=watched,
            catalogue=context.catalogue,
        )
    assert results[0].outcome == "raised"
    assert watched.lock_held_at_put == [False]
