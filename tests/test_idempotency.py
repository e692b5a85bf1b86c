"""``Idempotency-Key``: a replay is the first response with the headers a client goes on with, and
the kit table's version 2 (the ``headers`` column) migrates a table full of keys without a rewrite."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from alembic import command
from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.devstack.servers import create_databases, database_url
from citygrid.idempotency import Idempotency, StoredResponse
from citygrid.migrate import alembic_config, upgrade
from citygrid.settings import to_asyncpg_url
from tests.test_case_flow import REPORT

# The revision before the kit's idempotency keys version 2, per service.
BEFORE_V2 = {"services.case": "0011", "services.vision": "0003", "gateway": "0003"}


@pytest.fixture
async def sessions(databases, clean):
    engine = create_async_engine(to_asyncpg_url(databases["case"]))
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def things_app(sessions) -> tuple[FastAPI, list[int]]:
    """A creation endpoint as a service writes one: headers set before ``remember``."""
    app = FastAPI()
    created: list[int] = []

    @app.post("/things", status_code=201)
    async def create(request: Request, response: Response) -> object:
        idempotency = await Idempotency.from_request(request, "tester")
        async with sessions() as session, session.begin():
            replay = await idempotency.replay(session)
            if replay is not None:
                return replay
            created.append(len(created) + 1)
            body = {"id": created[-1]}
            response.headers["ETag"] = f'"{created[-1]}"'
            response.headers["location"] = f"/things/{created[-1]}"  # any case: names are kept lower
            response.headers["X-Request-ID"] = "per-response"  # not a header a replay repeats
            await idempotency.remember(session, 201, body, headers=response.headers)
        return body

    return app, created


async def test_a_replay_has_the_first_status_body_etag_location_and_content_type(sessions):
    app, created = things_app(sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        first = await client.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
        again = await client.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
    assert created == [1]
    assert (again.status_code, again.json()) == (first.status_code, first.json()) == (201, {"id": 1})
    for name in ("etag", "location", "content-type"):
        assert again.headers[name] == first.headers[name], name
    assert (again.headers["etag"], again.headers["location"]) == ('"1"', "/things/1")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["idempotency-key"] == "k-1"
    assert "x-request-id" not in again.headers
    async with sessions() as session:
        stored = await session.get(StoredResponse, ("tester", "k-1"))
    assert stored is not None
    # What the handler set; the content type is the JSON body's own, the same on the replay.
    assert stored.headers == {"etag": '"1"', "location": "/things/1"}


async def test_a_key_stored_before_headers_were_replays_its_body_alone_and_a_stored_type_is_kept(sessions):
    app, created = things_app(sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        first = await client.post("/things", json={"a": 2}, headers={"Idempotency-Key": "old"})
        async with sessions() as session, session.begin():
            await session.execute(text("UPDATE idempotency_keys SET headers = NULL WHERE key = 'old'"))
        again = await client.post("/things", json={"a": 2}, headers={"Idempotency-Key": "old"})
        async with sessions() as session, session.begin():
            stored = '{"content-type": "application/vnd.citygrid+json", "etag": "\\"7\\""}'
            await session.execute(
                text("UPDATE idempotency_keys SET headers = CAST(:stored AS jsonb) WHERE key = 'old'"),
                {"stored": stored},
            )
        typed = await client.post("/things", json={"a": 2}, headers={"Idempotency-Key": "old"})
    assert created == [1]
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["content-type"] == "application/json"
    assert "etag" not in again.headers
    assert (typed.headers["content-type"], typed.headers["etag"]) == ("application/vnd.citygrid+json", '"7"')


async def test_a_retried_report_through_the_case_service_can_go_on_with_if_match(stack):
    headers = {"Idempotency-Key": "report-1"}
    first = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk", **headers))
    again = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk", **headers))
    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers.get("etag") == first.headers["etag"] == '"1"', (
        "services/case/api.py must set ETag and Location before remember(…, headers=response.headers)"
    )
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["location"].endswith(f"/cases/{first.json()['id']}")
    # The client that only saw the replay goes on with the version it was given.
    registered = await stack.client.post(
        f"/api/case/v1/cases/{again.json()['id']}/register",
        headers=stack.as_("clerk", **{"If-Match": again.headers["etag"]}),
    )
    assert registered.status_code == 200, registered.text


@pytest.mark.parametrize("package", sorted(BEFORE_V2))
async def test_version_2_of_the_keys_adds_a_nullable_column_without_rewriting_the_table(
    infrastructure, package
):
    name = f"test_idempotency_v2_{package.replace('.', '_')}"
    await create_databases(infrastructure.server_url, [name])
    url = database_url(infrastructure.server_url, name)
    config = alembic_config(package, url)
    await asyncio.to_thread(command.downgrade, config, "base")  # a database reused by a rerun
    await asyncio.to_thread(upgrade, package, url, BEFORE_V2[package])
    engine = create_async_engine(to_asyncpg_url(url))
    storage = text("SELECT relfilenode FROM pg_class WHERE relname = 'idempotency_keys'")
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO idempotency_keys (principal, key, fingerprint, status_code, body) "
                    "VALUES ('p', 'k', 'f', 201, '{\"id\": 1}')"
                )
            )
            before = await connection.scalar(storage)
        await asyncio.to_thread(upgrade, package, url)
        async with engine.connect() as connection:
            # A rewrite would have given the table new storage; adding a nullable column does not.
            assert await connection.scalar(storage) == before
            column = (
                await connection.execute(
                    text(
                        "SELECT data_type, is_nullable, column_default FROM information_schema.columns "
                        "WHERE table_name = 'idempotency_keys' AND column_name = 'headers'"
                    )
                )
            ).one()
            assert tuple(column) == ("jsonb", "YES", None)
            row = (await connection.execute(text("SELECT body, headers FROM idempotency_keys"))).one()
            assert tuple(row) == ({"id": 1}, None)
        await asyncio.to_thread(command.downgrade, config, BEFORE_V2[package])
        async with engine.connect() as connection:
            columns = await connection.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'idempotency_keys'"
                )
            )
            assert "headers" not in set(columns)
    finally:
        await engine.dispose()
