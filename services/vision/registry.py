"""The camera registry: bulk import with COPY, queries, heartbeats and the offline sweep.

``python -m services.vision.registry import cameras.csv`` loads a file (CSV or JSON) straight into
the database named by ``CITYGRID_DATABASE_URL``; the HTTP import takes batches of 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, and_, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from citygrid.auth import Principal, require_district
from citygrid.db import transaction_time
from citygrid.errors import NotFound, PreconditionFailed
from citygrid.pagination import decode_cursor, encode_cursor
from contract.common import GUANGZHOU_DISTRICTS
from services.vision.catalogue import get_algorithm
from services.vision.domain.camera_ids import InvalidCameraId, parse_camera_id
from services.vision.models import Camera, CameraLiveness, CameraOverride
from services.vision.schemas import CameraIn, Owner, Refusal, Regions

COLUMNS = (
    "camera_id",
    "name",
    "owner",
    "division_code",
    "district_code",
    "industry_code",
    "device_type",
    "network_code",
    "lon",
    "lat",
    "address",
    "grid_code",
    "engine",
    "regions",
)
OWNERS = frozenset(o.value for o in Owner)
CameraRecord = tuple[Any, ...]
# The HTTP routes' schema of regions of interest: a file row is held to the same rules.
REGIONS: TypeAdapter[dict[str, list[list[tuple[float, float]]]]] = TypeAdapter(Regions)
# pg_try_advisory_xact_lock key of the offline sweep: one replica sweeps at a time.
SWEEP_LOCK = 7_732_002
SWEEP_BATCH = 5_000


class CameraNotFound(NotFound):
    code = "vision.camera_not_found"


class StaleCamera(PreconditionFailed):
    code = "vision.stale_version"
    title = "Stale version"


class InvalidCameraRow(ValueError):
    pass


def record_of(row: dict[str, Any]) -> CameraRecord:
    """One camera as a COPY record; checks what a row of a file can get wrong, cheaply."""
    camera_id = str(row.get("camera_id") or "").strip()
    try:
        parts = parse_camera_id(camera_id)
    except InvalidCameraId as error:
        raise InvalidCameraRow(f"camera_id: {error}") from None
    name = str(row.get("name") or "").strip()
    if not 1 <= len(name) <= 200 or "\x00" in name:
        raise InvalidCameraRow("name: 1–200 characters")
    owner = str(row.get("owner") or "").strip()
    if owner not in OWNERS:
        raise InvalidCameraRow(f"owner: one of {', '.join(sorted(OWNERS))}")
    try:
        lon, lat = float(row["lon"]), float(row["lat"])
    except (KeyError, TypeError, ValueError):
        raise InvalidCameraRow("lon, lat: numbers") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidCameraRow("lon, lat: a point on Earth")
    district = parts.district_code or (str(row.get("district_code") or "").strip() or None)
    if district is not None and district not in GUANGZHOU_DISTRICTS:
        raise InvalidCameraRow(f"district_code: unknown district {district}")
    address = str(row.get("address") or "").strip()[:300] or None
    grid_code = str(row.get("grid_code") or "").strip() or None
    engine = str(row.get("engine") or "").strip() or None
    regions = checked_regions(row.get("regions"))
    return (
        camera_id,
        name,
        owner,
        parts.division_code,
        district,
        parts.industry_code,
        parts.device_type_code,
        parts.network_code,
        lon,
        lat,
        address,
        grid_code,
        engine,
        json.dumps(regions),
    )


def checked_regions(raw: Any) -> dict[str, Any]:
    """A row's regions of interest, held to the HTTP schema: per class, 1–8 polygons of 3–64
    ``[x, y]`` vertices in the image's normalised range (0–1). A CSV cell is JSON text."""
    if raw is None or raw == "" or raw == {}:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidCameraRow("regions: not JSON") from None
    try:
        regions = REGIONS.validate_python(raw)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidCameraRow(
            f"regions{'.' + where if where else ''}: {first['msg']} (per class, polygons of at least "
            "3 [x, y] points with x and y from 0 to 1)"
        ) from None
    return {
        code: [[list(vertex) for vertex in polygon] for polygon in polygons]
        for code, polygons in regions.items()
    }


def record_of_model(camera: CameraIn) -> CameraRecord:
    return record_of(
        {
            **camera.model_dump(mode="json", exclude={"location"}),
            "lon": camera.location.lon,
            "lat": camera.location.lat,
        }
    )


def checked_records(rows: Iterable[dict[str, Any]]) -> tuple[list[CameraRecord], list[Refusal]]:
    """Valid rows (the last one wins when an id repeats) and the reasons the others were refused."""
    records: dict[str, CameraRecord] = {}
    refused: list[Refusal] = []
    for index, row in enumerate(rows):
        try:
            record = record_of(row)
        except InvalidCameraRow as error:
            refused.append(Refusal(index=index, code="vision.invalid_camera", detail=str(error)))
            continue
        records[record[0]] = record
    return list(records.values()), refused


async def copy_cameras(connection: AsyncConnection, records: list[CameraRecord]) -> int:
    """Upsert through a staging table filled with COPY: one round trip for the rows, one statement."""
    await connection.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS cameras_staging "
            "(LIKE cameras INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    await connection.execute(text("TRUNCATE cameras_staging"))  # a second import in one transaction
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_records_to_table("cameras_staging", records=records, columns=list(COLUMNS))
    # A row without regions keeps the camera's regions: a re-import of names and places must not
    # widen every camera's regions of interest to the whole image (PUT .../regions changes them).
    updates = ", ".join(
        "regions = CASE WHEN EXCLUDED.regions = '{}'::jsonb THEN cameras.regions ELSE EXCLUDED.regions END"
        if c == "regions"
        else f"{c} = EXCLUDED.{c}"
        for c in COLUMNS[1:]
    )
    columns = ", ".join(COLUMNS)
    result = await connection.execute(
        text(
            f"INSERT INTO cameras ({columns}) SELECT {columns} FROM cameras_staging "  # noqa: S608 - fixed names
            f"ON CONFLICT (camera_id) DO UPDATE SET {updates}, "
            "version = cameras.version + 1, updated_at = now()"
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def import_cameras(session: AsyncSession, records: list[CameraRecord]) -> int:
    if not records:
        return 0
    return await copy_cameras(await session.connection(), records)


async def get_camera(session: AsyncSession, camera_id: str, *, for_update: bool = False) -> Camera:
    query = select(Camera).where(Camera.camera_id == camera_id)
    if for_update:
        query = query.with_for_update()
    camera = await session.scalar(query)
    if camera is None:
        raise CameraNotFound(f"no camera {camera_id}", camera_id=camera_id)
    return camera


@dataclass(frozen=True)
class CameraView:
    """A camera with its last heartbeat (kept apart, in ``camera_liveness``)."""

    camera: Camera
    last_heartbeat_at: datetime | None


def _with_liveness() -> Select[Camera, datetime]:
    return select(Camera, CameraLiveness.last_heartbeat_at).outerjoin(
        CameraLiveness, CameraLiveness.camera_id == Camera.camera_id
    )


async def get_camera_view(session: AsyncSession, camera_id: str) -> CameraView:
    row = (await session.execute(_with_liveness().where(Camera.camera_id == camera_id))).first()
    if row is None:
        raise CameraNotFound(f"no camera {camera_id}", camera_id=camera_id)
    return CameraView(row[0], row[1])


@dataclass(frozen=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


async def list_cameras(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    district_code: str | None = None,
    owner: str | None = None,
    status: str | None = None,
    bbox: BBox | None = None,
) -> tuple[list[CameraView], str | None]:
    """By id; each filter has an index ending in the id, the box uses (lon, lat)."""
    query = _with_liveness().order_by(Camera.camera_id).limit(limit + 1)
    if district_code is not None:
        query = query.where(Camera.district_code == district_code)
    if owner is not None:
        query = query.where(Camera.owner == owner)
    if status is not None:
        query = query.where(Camera.status == status)
    if bbox is not None:
        query = query.where(
            and_(
                Camera.lon.between(bbox.min_lon, bbox.max_lon),
                Camera.lat.between(bbox.min_lat, bbox.max_lat),
            )
        )
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(Camera.camera_id > str(after))
    rows = [CameraView(camera, heartbeat) for camera, heartbeat in await session.execute(query)]
    next_cursor = encode_cursor(rows[limit - 1].camera.camera_id) if len(rows) > limit else None
    return rows[:limit], next_cursor


# -- liveness ----------------------------------------------------------------------------------------
#
# A heartbeat batch is one multi-row upsert of ``camera_liveness`` (HOT updates of a narrow table
# without secondary indexes), in camera order so that two overlapping batches never deadlock. It
# reads ``cameras`` by primary key to tell registered cameras from unknown ones and writes nothing
# there, except the rare row that is not online yet.
#
# The race with the sweep is closed by the liveness row's lock. The sweep locks the liveness rows
# of the cameras it takes offline (``FOR UPDATE``, in camera order) and re-checks them once it has
# the lock. If a heartbeat updated the row first, the sweep waits for it, sees the new time and
# leaves the camera alone; if the sweep locked it first, the heartbeat's upsert waits until the
# sweep commits, and the status update that follows, a statement of its own with a fresh snapshot,
# sees ``offline`` and puts the camera back online.

HEARTBEAT_UPSERT = text(
    "INSERT INTO camera_liveness (camera_id, last_heartbeat_at) "
    "SELECT c.camera_id, now() FROM cameras c WHERE c.camera_id = ANY(CAST(:ids AS varchar[])) "
    "ORDER BY c.camera_id "
    "ON CONFLICT (camera_id) DO UPDATE SET last_heartbeat_at = EXCLUDED.last_heartbeat_at "
    "RETURNING camera_id"
)
CAME_ONLINE = text(
    "UPDATE cameras SET status = 'online' "
    "WHERE camera_id = ANY(CAST(:ids AS varchar[])) AND status IN ('unknown', 'offline')"
)
# Silent cameras that are online, oldest id first, a batch at a time. A camera a replica of the
# previous release heartbeated (it still writes ``cameras.last_heartbeat_at``) is not silent.
SWEEP = text(
    "WITH silent AS ("
    " SELECT l.camera_id FROM camera_liveness l JOIN cameras c ON c.camera_id = l.camera_id"
    " WHERE l.last_heartbeat_at < now() - make_interval(secs => :timeout)"
    " AND c.status = 'online'"
    " AND (c.last_heartbeat_at IS NULL OR c.last_heartbeat_at < now() - make_interval(secs => :timeout))"
    " ORDER BY l.camera_id LIMIT :batch FOR UPDATE OF l) "
    "UPDATE cameras c SET status = 'offline' FROM silent s "
    "WHERE c.camera_id = s.camera_id AND c.status = 'online' "
    "RETURNING c.camera_id"
)


async def record_heartbeats(session: AsyncSession, camera_ids: list[str]) -> tuple[int, list[str]]:
    """The cameras an engine can see: their liveness now; returns how many are registered and
    the ids that are not."""
    unique = sorted(set(camera_ids))
    beat = list((await session.execute(HEARTBEAT_UPSERT, {"ids": unique})).scalars())
    if beat:
        await session.execute(CAME_ONLINE, {"ids": beat})
    registered = set(beat)
    return len(registered), [c for c in unique if c not in registered]


async def mark_offline(
    sessions: async_sessionmaker[AsyncSession], timeout_seconds: float, *, batch_size: int = SWEEP_BATCH
) -> int:
    """Cameras silent longer than the timeout go offline; returns how many did.

    One replica sweeps at a time (an advisory lock; another finds it taken and returns 0), and
    only cameras that are online are written, once each.
    """
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK))):
            return 0
        # A heartbeat holds its liveness rows for milliseconds; never queue long behind anything.
        await session.execute(text("SET LOCAL lock_timeout = '2s'"))
        result = await session.execute(SWEEP, {"timeout": float(timeout_seconds), "batch": batch_size})
        return len(result.scalars().all())


async def set_regions(
    session: AsyncSession,
    camera_id: str,
    regions: dict[str, Any],
    expected_version: int,
    principal: Principal,
) -> Camera:
    camera = await get_camera(session, camera_id, for_update=True)
    require_district(principal, camera.district_code)
    if camera.version != expected_version:
        raise StaleCamera(
            f"the camera is at version {camera.version}, not {expected_version}; reload it and retry",
            current_version=camera.version,
        )
    for code in regions:
        await get_algorithm(session, code)
    camera.regions = regions
    camera.version += 1
    camera.updated_at = await transaction_time(session)
    await session.flush()
    return camera


async def set_override(
    session: AsyncSession, camera_id: str, algorithm_code: str, gates: dict[str, Any], principal: Principal
) -> None:
    camera = await get_camera(session, camera_id)
    require_district(principal, camera.district_code)
    await get_algorithm(session, algorithm_code)
    if not gates:
        await session.execute(
            delete(CameraOverride).where(
                CameraOverride.camera_id == camera_id, CameraOverride.algorithm_code == algorithm_code
            )
        )
        return
    await session.execute(
        insert(CameraOverride)
        .values(camera_id=camera_id, algorithm_code=algorithm_code, gates=gates)
        .on_conflict_do_update(
            index_elements=[CameraOverride.camera_id, CameraOverride.algorithm_code],
            set_={"gates": gates, "updated_at": func.now()},
        )
    )


# -- command line ------------------------------------------------------------------------------------


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix.lower() == ".json":
        document = json.loads(path.read_text(encoding="utf-8"))
        yield from document["cameras"] if isinstance(document, dict) else document
        return
    with path.open(newline="", encoding="utf-8") as file:
        # A ``regions`` cell stays JSON text: ``record_of`` parses and checks it, so a bad cell
        # refuses its row alone.
        yield from csv.DictReader(file)


async def import_file(database_url: str, path: Path) -> tuple[int, list[Refusal], float]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from citygrid.settings import to_asyncpg_url

    started = time.perf_counter()
    # Reading and checking the file is blocking work: a thread, so the loop stays free.
    records, refused = await asyncio.to_thread(lambda: checked_records(read_rows(path)))
    engine = create_async_engine(to_asyncpg_url(database_url))
    try:
        async with engine.begin() as connection:
            imported = await copy_cameras(connection, records)
    finally:
        await engine.dispose()
    return imported, refused, time.perf_counter() - started


def main() -> None:
    from citygrid.settings import ServiceSettings

    parser = argparse.ArgumentParser(prog="python -m services.vision.registry", description=__doc__)
    parser.add_argument("command", choices=["import"])
    parser.add_argument("file", type=Path, help="CSV with a header row (regions as JSON), or JSON")
    arguments = parser.parse_args()
    imported, refused, seconds = asyncio.run(import_file(ServiceSettings().database_url, arguments.file))
    for refusal in refused[:20]:
        print(f"row {refusal.index}: {refusal.detail}", file=sys.stderr)
    print(f"imported {imported} cameras in {seconds:.1f}s; refused {len(refused)}")


if __name__ == "__main__":
    main()
