"""A whole city's grid imported as one streamed file, parsed in the grid's worker process while the
service goes on serving.

These calls go to the case service itself, with a signed principal: the gateway in front of it
keeps the kit's 1 MiB body limit for every route (see docs/grid-and-dispatch.md for the route's own
limit there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.testing import serve_app
from services.case import grid_store
from services.case.domain.demo_grid import demo_cells
from services.case.domain.grid import GridCell, GridIndex
from services.case.grid_store import cell_feature, create_grid_pool
from services.case.main import CaseSettings
from services.case.main import create_app as create_case_app
from tests.conftest import case_settings
from tests.test_bad_input import assert_problem
from tests.test_case_grid import collection, square

IMPORT = "/v1/admin/grid/import"
GEOJSON = {"Content-Type": "application/geo+json"}
CELLS_PER_DISTRICT = 1820  # about 20,000 cells over the 11 districts: ~9 MB of GeoJSON


def admin_headers(infrastructure, **extra: str) -> dict[str, str]:
    principal = Principal(
        subject="grid-admin", kind="service", name="grid admin", scopes=frozenset({"admin", "cases:read"})
    )
    return {PRINCIPAL_HEADER: infrastructure.token(principal, audience="case", ttl_seconds=600), **extra}


def wired() -> None:
    assert "grid_import_max_bytes" in CaseSettings.model_fields, (
        "services/case/main.py: CaseSettings.grid_import_max_bytes and the grid route's own body limit "
        "are not wired yet"
    )


@pytest.fixture(scope="module")
def city() -> tuple[list[GridCell], dict[str, Any], bytes]:
    cells = demo_cells(CELLS_PER_DISTRICT)
    document = {"type": "FeatureCollection", "features": [cell_feature(cell) for cell in cells]}
    return cells, document, json.dumps(document, ensure_ascii=False).encode()


@pytest.fixture
def temporary_dir(tmp_path, monkeypatch):
    """Where the service spools uploads during the test, to see that none is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


async def direct(stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.case_url, timeout=300.0)


def _with_pid(function: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """(worker) Run a grid task and say which process ran it."""
    return os.getpid(), function(*args)


class WatchedPool(Executor):
    """The grid's process pool, noting for each task the process that ran it and how many times
    the event loop went round while it ran."""

    def __init__(self, ticks: Callable[[], int]) -> None:
        self.ticks = ticks
        self.pool = create_grid_pool()
        self.tasks: list[tuple[str, int, int]] = []  # (function, worker pid, loop turns meanwhile)

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        started = self.ticks()
        inner = self.pool.submit(_with_pid, fn, *args, **kwargs)
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def done(future: concurrent.futures.Future[tuple[int, Any]]) -> None:
            try:
                pid, result = future.result()
            except BaseException as error:
                outer.set_exception(error)
                return
            self.tasks.append((fn.__name__, pid, self.ticks() - started))
            outer.set_result(result)

        inner.add_done_callback(done)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait, cancel_futures=cancel_futures)


class Ticker:
    """A coroutine that only counts how often the event loop gets round to it."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_whole_citys_grid_imports_as_one_streamed_file_while_the_service_serves(
    stack, infrastructure, city, monkeypatch, temporary_dir
):
    wired()
    cells, _, body = city
    assert len(body) > 8 * 1024 * 1024
    assert len(cells) > 19_000
    holder = stack.case_app.state.grid
    slices: list[list[int]] = []  # per index build: the ticker's count at each of its slices
    original = GridIndex.build_stepwise

    async with Ticker() as ticker:

        def watched(cls, cells, *, step=2000):  # type: ignore[no-untyped-def]
            seen: list[int] = []  # the ticker's count each time the build resumes
            slices.append(seen)
            building = original(cells, step=step)
            while True:
                try:
                    next(building)
                except StopIteration as done:
                    return done.value
                yield
                seen.append(ticker.count)

        monkeypatch.setattr(GridIndex, "build_stepwise", classmethod(watched))
        pool = WatchedPool(lambda: ticker.count)
        monkeypatch.setattr(holder, "pool", pool)
        try:
            async with await direct(stack) as client:
                imported = await client.post(
                    IMPORT, content=body, headers=admin_headers(infrastructure, **GEOJSON)
                )
                summary = (await client.get("/v1/grid", headers=admin_headers(infrastructure))).json()
                located = await client.get(
                    "/v1/grid/locate",
                    params={"lon": 113.3245, "lat": 23.1291},
                    headers=admin_headers(infrastructure),
                )
        finally:
            pool.shutdown()

    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert result["imported"] == result["cells"] == summary["cells"] == len(cells)
    assert located.status_code == 200
    assert located.json()["district_code"] == "440106"
    # Parsing and validating ran in another process, while the event loop kept going round.
    # (A refresh of this replica may have reloaded the grid as well: its work is held to the same.)
    assert "parse_grid_file" in [name for name, _, _ in pool.tasks]
    for name, pid, turns in pool.tasks:
        assert pid != os.getpid(), name
        assert turns >= 100, (name, turns)
    # The parent indexes the new grid in slices, and the loop goes round between every two.
    assert any(len(seen) > len(cells) // 2000 for seen in slices)
    for seen in slices:
        assert all(later > earlier for earlier, later in pairwise(seen)), seen
    assert list(temporary_dir.iterdir()) == []  # the upload's spool file is gone


async def test_a_big_grid_file_is_refused_whole_with_the_feature_named(
    stack, infrastructure, city, temporary_dir
):
    wired()
    _, document, _ = city
    before = (await stack.client.get("/api/case/v1/grid", headers=stack.as_("reader"))).json()
    broken = {**document, "features": list(document["features"])}
    feature = broken["features"][15_000]
    broken["features"][15_000] = {**feature, "properties": {**feature["properties"], "code": "4401"}}
    async with await direct(stack) as client:
        refused = await client.post(
            IMPORT, content=json.dumps(broken).encode(), headers=admin_headers(infrastructure, **GEOJSON)
        )
        problem = assert_problem(refused, 422, "case.invalid_grid")
        assert problem["errors"][0]["loc"] == ["body", "features", 15_000]
        truncated = await client.post(
            IMPORT,
            content=json.dumps(document).encode()[:-100],
            headers=admin_headers(infrastructure, **GEOJSON),
        )
        assert_problem(truncated, 400, "request.malformed_json")
    assert (await stack.client.get("/api/case/v1/grid", headers=stack.as_("reader"))).json() == before
    assert list(temporary_dir.iterdir()) == []


async def test_a_grid_file_of_another_type_is_refused_with_415(stack, infrastructure):
    async with await direct(stack) as client:
        for content_type in (
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
        ):
            refused = await client.post(
                IMPORT, content=b"{}", headers=admin_headers(infrastructure, **{"Content-Type": content_type})
            )
            assert_problem(refused, 415, "http.unsupported_media_type")
        as_json = await client.post(
            IMPORT,
            content=b'{"type": "FeatureCollection", "features": []}',
            headers=admin_headers(infrastructure, **{"Content-Type": "application/json; charset=utf-8"}),
        )
        assert_problem(as_json, 422, "case.invalid_grid")  # JSON is accepted: it has no features


@pytest.fixture
async def small_limit_service(stack, infrastructure, databases) -> AsyncIterator[str]:
    """A replica whose grid import limit is 2 MiB (above the kit's 1 MiB for other bodies)."""
    settings = case_settings(infrastructure, databases).model_copy(
        update={"grid_import_max_bytes": 2 * 1024 * 1024}
    )
    async with serve_app(create_case_app(settings)) as url:
        yield url


async def test_a_grid_file_over_the_import_limit_is_refused_with_413(
    small_limit_service, infrastructure, city, temporary_dir
):
    wired()
    _, _, body = city
    headers = admin_headers(infrastructure, **GEOJSON)

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: the running count decides
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    async with httpx.AsyncClient(base_url=small_limit_service, timeout=120.0) as client:
        announced = await client.post(IMPORT, content=body, headers=headers)
        assert_problem(announced, 413, "http.payload_too_large")
        chunked = await client.post(IMPORT, content=streamed(), headers=headers)
        assert_problem(chunked, 413, "http.payload_too_large")
        # Under the import limit but over the kit's 1 MiB: the route's own limit applies.
        one_district = json.dumps(
            {"type": "FeatureCollection", "features": json.loads(body)["features"][:3000]}
        ).encode()
        assert 1024 * 1024 < len(one_district) < 2 * 1024 * 1024
        accepted = await client.post(IMPORT, content=one_district, headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["imported"] == 3000
    assert list(temporary_dir.iterdir()) == []


async def test_the_grid_table_is_written_with_the_features_as_stored_json(stack, infrastructure):
    """The parent process hands the database JSON text; what is stored is a JSON object."""
    async with stack.case_runtime.db() as session:
        kinds = set(
            (await session.scalars(text("SELECT DISTINCT jsonb_typeof(feature) FROM grid_cells"))).all()
        )
    assert kinds == {"object"}


async def test_a_grid_worker_that_dies_is_a_503_and_the_next_task_gets_a_fresh_one():
    with pytest.raises(grid_store.GridWorkerFailed) as failed:
        await grid_store._in_pool(None, os._exit, 3)  # the worker process ends mid-task
    assert failed.value.status == 503
    assert await grid_store._in_pool(None, grid_store.index_stored_features, []) == []


def interloper(x0: float) -> GridCell:
    """A Yuexiu cell from ``x0`` eastwards, 0.01° wide: Tianhe begins at 113.30 E."""
    ring = [(x0, 23.12), (x0 + 0.01, 23.12), (x0 + 0.01, 23.13), (x0, 23.13)]
    return GridCell.of("440104009009009", "interloper", ring)


@pytest.mark.parametrize(
    ("x0", "accepted"), [(113.289, True), (113.295, False)], ids=["beside", "overlapping"]
)
async def test_an_import_checks_again_when_another_commits_between_its_check_and_its_write(
    stack, infrastructure, monkeypatch, x0, accepted
):
    """Another replica's import commits just after this one read the grid to check against: this
    one sees the grid changed when it takes the lock, and checks again against the new grid."""
    original = grid_store._kept_candidates
    snapshots = 0

    async def then_another_import(session, replaced, bbox):  # type: ignore[no-untyped-def]
        nonlocal snapshots
        snapshots += 1
        found = await original(session, replaced, bbox)
        if snapshots == 1:
            async with stack.case_runtime.db() as other, other.begin():
                await grid_store.replace_grid(other, [interloper(x0)])  # all of Yuexiu: one cell
        return found

    monkeypatch.setattr(grid_store, "_kept_candidates", then_another_import)
    document = collection(square("440106001001001", 113.30, 23.12))
    as_json = admin_headers(infrastructure, **{"Content-Type": "application/json"})
    async with await direct(stack) as client:
        response = await client.post(IMPORT, content=json.dumps(document).encode(), headers=as_json)
        # This replica holds what the database holds, whichever import it learnt of last.
        await stack.case_app.state.grid.refresh_if_changed(stack.case_runtime.db)

        async def cell_at(lon: float) -> str | None:
            found = await client.get(
                "/v1/grid/locate", params={"lon": lon, "lat": 23.125}, headers=admin_headers(infrastructure)
            )
            return found.json().get("grid_code")

        assert snapshots == 2
        assert await cell_at(x0 + 0.001) == "440104009009009"  # the other import's cell
        if accepted:
            assert response.status_code == 200, response.text
            assert response.json()["districts"]["440104"] == 1  # the other import's grid, read back
            assert await cell_at(113.305) == "440106001001001"
        else:
            problem = assert_problem(response, 422, "case.invalid_grid")
            assert problem["errors"][0]["type"] == "grid.inconsistent"
            assert "440104009009009" in problem["errors"][0]["msg"]
            assert await cell_at(113.305) != "440106001001001"  # nothing of this import was written
