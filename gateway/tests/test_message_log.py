"""The message log through a running gateway, on real PostgreSQL: what a call leaves behind, two
replicas' chains, tampering found by verify, retention, the database away, and who may read it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from citygrid.db import create_sessionmaker
from citygrid.settings import to_asyncpg_url, to_libpq_url
from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.consumers.service import register_consumer
from gateway.main import create_app
from gateway.message_log.chain import Hasher
from gateway.message_log.partitions import PARTITIONS
from gateway.message_log.recorder import Call, MessageLog
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

KEY = "message-log-test-key-" + "x" * 16
PHONE = "13800138000"


def upstream_app() -> FastAPI:
    """A stand-in for the case service: a page, an object, a creation (the gateway's view only)."""
    app = FastAPI()

    @app.get("/v1/cases")
    async def cases() -> dict[str, Any]:
        items = [{"id": "c1", "status": "open", "reporter_phone": PHONE}, {"id": "c2", "status": "closed"}]
        return {"items": items, "next_cursor": None}

    @app.get("/v1/cases/{case_id}")
    async def case(case_id: str) -> dict[str, Any]:
        return {"id": case_id, "status": "open", "description": "a full bin"}

    @app.post("/v1/cases")
    async def report(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"id": "c3"}, status_code=201)

    return app


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    metrics_url: str

    @property
    def message_log(self) -> MessageLog:
        log: MessageLog = self.app.state.gateway.message_log
        return log


@dataclass
class Setup:
    database: str
    upstream: str
    keys: dict[str, str]
    subjects: dict[str, str]
    infrastructure: Infrastructure

    def as_(self, name: str, **headers: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[name], **headers}

    def settings(self, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": self.database,
            **self.infrastructure.nats_settings("gateway"),
            "upstreams": {"case": self.upstream},
            "internal_token_private_key": self.infrastructure.private_key,
            "message_log_key": KEY,
            "message_log_flush_seconds": 0.05,
        }
        return GatewaySettings(**(values | overrides))

    @contextlib.asynccontextmanager
    async def gateway(self, **overrides: Any) -> AsyncIterator[Gateway]:
        app = create_app(self.settings(**overrides))
        async with (
            serve_app(app) as url,
            serve_app(app.state.internal_app) as metrics_url,
            httpx.AsyncClient(base_url=url, timeout=20.0) as client,
        ):
            yield Gateway(app, client, metrics_url)

    async def rows(self) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(to_libpq_url(self.database))
        try:
            return list(await connection.fetch("SELECT * FROM message_log ORDER BY writer_id, seq"))
        finally:
            await connection.close()

    async def tamper(self, statement: str, *args: Any) -> None:
        """What whoever owns the database can do: past the append-only trigger."""
        connection = await asyncpg.connect(to_libpq_url(self.database))
        try:
            await connection.execute("SET session_replication_role = replica")
            await connection.execute(statement, *args)
        finally:
            await connection.close()


CONSUMERS = {
    "reader": ["cases:read"],
    "clerk": ["cases:read", "cases:write"],
    "admin": ["admin", "cases:read"],
}


@pytest.fixture
async def setup(infrastructure: Infrastructure, gateway_database: str) -> AsyncIterator[Setup]:
    database = gateway_database
    await truncate_all(database)
    engine = create_async_engine(to_asyncpg_url(database))
    keys, subjects = {}, {}
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            for name, scopes in CONSUMERS.items():
                consumer, keys[name] = await register_consumer(session, name=name, scopes=scopes)
                subjects[name] = f"consumer:{consumer.id}"
    finally:
        await engine.dispose()
    async with serve_app(upstream_app()) as upstream:
        yield Setup(database, upstream, keys, subjects, infrastructure)


@contextlib.asynccontextmanager
async def own_writer(setup: Setup, **options: Any) -> AsyncIterator[MessageLog]:
    """A writer on an engine of its own, outside any gateway (this month's partition made)."""
    engine = create_async_engine(to_asyncpg_url(setup.database))
    sessions = create_sessionmaker(engine)
    try:
        await PARTITIONS.ensure(sessions, datetime.now(UTC).date())
        values: dict[str, Any] = {
            "hasher": Hasher.of(KEY),
            "sessions": lambda: sessions,
            "metrics": GatewayMetrics(CollectorRegistry()),
        }
        yield MessageLog(**(values | options))
    finally:
        await engine.dispose()


async def written(gateway: Gateway, count: int, setup: Setup) -> list[asyncpg.Record]:
    async def enough() -> bool:
        return not gateway.message_log.pending and len(await setup.rows()) >= count

    await wait_until(enough)
    return await setup.rows()


async def verify(gateway: Gateway, setup: Setup, **params: str) -> dict[str, Any]:
    response = await gateway.client.get(
        "/admin/v1/message-log/verify", params=params, headers=setup.as_("admin")
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- what a call leaves behind -----------------------------------------------------------------------


async def test_calls_are_recorded_with_their_consumer_dataset_action_status_and_request_id(setup):
    async with setup.gateway() as gateway:
        page = await gateway.client.get(
            "/api/case/v1/cases",
            params={"status": "open"},
            headers=setup.as_("reader", **{"X-Request-ID": "req-1"}),
        )
        one = await gateway.client.get("/api/case/v1/cases/c7", headers=setup.as_("reader"))
        refused = await gateway.client.post("/api/case/v1/cases", json={}, headers=setup.as_("reader"))
        created = await gateway.client.post("/api/case/v1/cases", json={}, headers=setup.as_("clerk"))
        anonymous = await gateway.client.get("/api/case/v1/cases")
        assert (page.status_code, one.status_code, refused.status_code, created.status_code) == (
            200,
            200,
            403,
            201,
        )
        assert anonymous.status_code == 401
        rows = await written(gateway, 4, setup)

    by_path = {(row["method"], row["path"], row["consumer"]): row for row in rows}
    assert len(rows) == 4  # the anonymous call was answered for no one: not recorded
    listed = by_path[("GET", "/api/case/v1/cases", setup.subjects["reader"])]
    assert (listed["dataset"], listed["action"], listed["status"], listed["request_id"]) == (
        "case/cases",
        "read",
        200,
        "req-1",
    )
    assert listed["query_keys"] == ["status"]
    # An /api answer is not read: the log says nothing of what it held (the exchange's reads do).
    assert (rows[0]["record_count"], rows[0]["fields"]) == (None, None)
    single = by_path[("GET", "/api/case/v1/cases/c7", setup.subjects["reader"])]
    assert single["request_id"] == one.headers["x-request-id"]
    denied = by_path[("POST", "/api/case/v1/cases", setup.subjects["reader"])]
    assert (denied["action"], denied["status"]) == ("write", 403)
    made = by_path[("POST", "/api/case/v1/cases", setup.subjects["clerk"])]
    assert made["status"] == 201
    assert {row["writer_id"] for row in rows} == {gateway.message_log.writer_id}
    assert sorted(row["seq"] for row in rows) == [1, 2, 3, 4]


async def test_no_query_value_and_no_body_reaches_the_log(setup):
    async with setup.gateway() as gateway:
        await gateway.client.get(
            f"/api/case/v1/cases?reporter_phone={PHONE}&name=%E5%BC%A0%E4%B8%89&{PHONE}",
            headers=setup.as_("reader"),
        )
        await gateway.client.post(
            "/api/case/v1/cases", json={"reporter_phone": PHONE, "name": "张三"}, headers=setup.as_("clerk")
        )
        rows = await written(gateway, 2, setup)
    text = json.dumps([dict(row) for row in rows], default=str)
    assert PHONE not in text  # neither the query's value, nor a query name, nor the answer's value
    assert "张三" not in text
    assert rows[0]["query_keys"] == ["name", "reporter_phone"]


async def test_a_phone_number_a_caller_puts_in_a_path_is_kept_as_its_kind_only(setup):
    async with setup.gateway() as gateway:
        await gateway.client.get(f"/api/case/v1/cases/{PHONE}", headers=setup.as_("reader"))
        (row,) = await written(gateway, 1, setup)
    assert row["path"] == "/api/case/v1/cases/[phone]"


async def test_a_nul_in_a_path_is_recorded_percent_encoded_and_the_log_goes_on(setup):
    async with setup.gateway() as gateway:
        await gateway.client.get("/api/case/v1/cases/ab%00cd", headers=setup.as_("reader"))
        await gateway.client.get("/api/case/v1/cases/c7", headers=setup.as_("reader"))
        rows = await written(gateway, 2, setup)
    assert sorted(row["path"] for row in rows) == ["/api/case/v1/cases/ab%00cd", "/api/case/v1/cases/c7"]


async def test_admins_page_through_the_log_and_filter_it(setup):
    async with setup.gateway() as gateway:
        for _ in range(3):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        await gateway.client.post("/api/case/v1/cases", json={}, headers=setup.as_("reader"))
        await written(gateway, 4, setup)
        admin = setup.as_("admin")
        first = (await gateway.client.get("/admin/v1/message-log", params={"limit": 2}, headers=admin)).json()
        second = (
            await gateway.client.get(
                "/admin/v1/message-log", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
            )
        ).json()
        refused = (
            await gateway.client.get("/admin/v1/message-log", params={"status": "4xx"}, headers=admin)
        ).json()
        by_consumer = (
            await gateway.client.get(
                "/admin/v1/message-log",
                params={"consumer": setup.subjects["reader"], "dataset": "case/cases", "status": "200"},
                headers=admin,
            )
        ).json()
        since = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        later = (
            await gateway.client.get("/admin/v1/message-log", params={"since": since}, headers=admin)
        ).json()
    assert [item["seq"] for item in first["items"] + second["items"]] == [1, 2, 3, 4]
    assert second["next_cursor"] is None
    assert [item["status"] for item in refused["items"]] == [403]
    assert len(by_consumer["items"]) == 3
    assert later["items"] == []
    assert first["items"][0]["at"].endswith("+08:00")


async def test_the_log_exports_as_ndjson_and_as_csv(setup):
    async with setup.gateway() as gateway:
        for _ in range(3):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        await written(gateway, 3, setup)
        ndjson = await gateway.client.get("/admin/v1/message-log/export", headers=setup.as_("admin"))
        as_csv = await gateway.client.get(
            "/admin/v1/message-log/export", params={"format": "csv"}, headers=setup.as_("admin")
        )
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert (lines[0]["record_count"], lines[0]["fields"]) == (None, [])
    assert as_csv.headers["content-type"].startswith("text/csv")
    header, *rows = as_csv.text.splitlines()
    assert header.startswith("id,writer_id,seq,at,")
    assert len(rows) == 3


@pytest.mark.parametrize("path", ["", "/export", "/verify"])
async def test_only_a_city_wide_admin_reads_the_log(setup, path):
    async with setup.gateway() as gateway:
        anonymous = await gateway.client.get(f"/admin/v1/message-log{path}")
        reader = await gateway.client.get(f"/admin/v1/message-log{path}", headers=setup.as_("reader"))
        admin = await gateway.client.get(f"/admin/v1/message-log{path}", headers=setup.as_("admin"))
    assert (anonymous.status_code, reader.status_code, admin.status_code) == (401, 403, 200)


# --- chains ----------------------------------------------------------------------------------------


async def test_two_gateways_writing_at_once_keep_two_valid_chains(setup):
    async with setup.gateway() as one, setup.gateway() as other:
        await asyncio.gather(
            *(
                gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
                for _ in range(40)
                for gateway in (one, other)
            )
        )
        rows = await written(one, 80, setup)
        assert not other.message_log.pending
        result = await verify(one, setup)
    assert {row["writer_id"] for row in rows} == {one.message_log.writer_id, other.message_log.writer_id}
    assert result == {
        "ok": True,
        "writers_checked": 2,
        "records_checked": 80,
        "kept_from": result["kept_from"],
        "breaks": [],
    }


async def test_the_table_refuses_updates_and_deletes(setup):
    async with setup.gateway() as gateway:
        await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        await written(gateway, 1, setup)
    connection = await asyncpg.connect(to_libpq_url(setup.database))
    try:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await connection.execute("UPDATE message_log SET status = 200")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM message_log")
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("tampering", "reason", "at_seq", "record_of_seq"),
    [
        pytest.param("UPDATE message_log SET status = 500 WHERE seq = 4", "changed", 4, 4, id="an-edit"),
        pytest.param("DELETE FROM message_log WHERE seq = 4", "removed", 5, 5, id="a-removal"),
        pytest.param(
            "UPDATE message_log SET seq = CASE seq WHEN 4 THEN 5 ELSE 4 END WHERE seq IN (4, 5)",
            "reordered",
            4,
            5,
            id="a-swap",
        ),
        pytest.param("DELETE FROM message_log WHERE seq > 7", "tail_removed", 7, None, id="a-cut-tail"),
        pytest.param("DELETE FROM message_log WHERE seq < 3", "head_removed", 3, 3, id="a-cut-head"),
    ],
)
async def test_verify_finds_tampering_at_the_record_it_touched(
    setup, tampering, reason, at_seq, record_of_seq
):
    async with setup.gateway() as gateway:
        for _ in range(8):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        before = {row["seq"]: row["id"] for row in await written(gateway, 8, setup)}
        assert (await verify(gateway, setup))["ok"]
        await setup.tamper(tampering)
        result = await verify(gateway, setup)
    assert not result["ok"]
    (found,) = result["breaks"]
    assert (found["reason"], found["seq"]) == (reason, at_seq)
    expected_id = None if record_of_seq is None else str(before[record_of_seq])
    assert found["record_id"] == expected_id
    assert found["writer_id"] == str(gateway.message_log.writer_id)


async def test_an_edited_writer_row_is_found(setup):
    async with setup.gateway() as gateway:
        for _ in range(3):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        await written(gateway, 3, setup)
        await setup.tamper("UPDATE message_log_writers SET last_seq = 2")
        result = await verify(gateway, setup)
    assert [found["reason"] for found in result["breaks"]] == ["writer_changed"]


COPY_OF_RECORD_2 = (
    "INSERT INTO message_log SELECT {writer}, {seq}, at + interval '1 second', gen_random_uuid(), request_id,"
    " consumer, dataset, action, method, path, query_keys, status, duration_ms,"
    " dropped_before, prev_hash, prev_at, hash FROM message_log WHERE seq = 2"
)
MADE_UP_WRITER = "'0192f0a0-0000-7000-8000-0000000f0a9e'::uuid"


@pytest.mark.parametrize(
    ("tampering", "reason", "at_seq", "by_the_writer"),
    [
        pytest.param(
            COPY_OF_RECORD_2.format(writer=MADE_UP_WRITER, seq="seq"),
            "unknown_writer",
            2,
            False,
            id="a-made-up-writer",
        ),
        pytest.param("DELETE FROM message_log_writers", "unknown_writer", 1, True, id="a-removed-writer-row"),
        pytest.param(
            COPY_OF_RECORD_2.format(writer="writer_id", seq="4"), "past_seal", 4, True, id="past-the-seal"
        ),
    ],
)
async def test_verify_finds_records_no_writer_wrote(setup, tampering, reason, at_seq, by_the_writer):
    """Records that no walk of a sealed chain reaches would otherwise verify unseen, and an export
    would show them as the gateway's."""
    async with setup.gateway() as gateway:
        for _ in range(3):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        await written(gateway, 3, setup)
        await setup.tamper(tampering)
        result = await verify(gateway, setup)
    (found,) = result["breaks"]
    assert (found["reason"], found["seq"]) == (reason, at_seq)
    assert (found["writer_id"] == str(gateway.message_log.writer_id)) is by_the_writer


async def test_a_keyless_chain_does_not_verify_under_a_key_even_with_an_empty_earlier_key(setup):
    """Plain SHA-256 is anyone's to compute: an empty key left among the earlier ones must not let a
    chain written without a key pass."""
    async with setup.gateway(message_log_previous_keys=[""]) as gateway:
        async with own_writer(setup, hasher=Hasher.of("")) as writer:
            writer.record(call())
            await writer.flush_once()
        result = await verify(gateway, setup)
    assert [found["reason"] for found in result["breaks"]] == ["unknown_key"]


async def test_a_window_verifies_only_its_records(setup):
    async with setup.gateway() as gateway:
        for _ in range(4):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        rows = await written(gateway, 4, setup)
        result = await verify(gateway, setup, since=rows[2]["at"].isoformat())
    assert (result["ok"], result["records_checked"]) == (True, 2)


async def test_dropping_old_partitions_for_retention_is_not_breakage(setup):
    """A writer whose first records lay in a month retention dropped verifies from its oldest kept
    record; a record removed from what is kept is still found."""
    today = datetime.now(UTC)
    old = today - timedelta(days=75)
    engine = create_async_engine(to_asyncpg_url(setup.database))
    sessions = create_sessionmaker(engine)
    moment = [old]
    try:
        await PARTITIONS.ensure(sessions, old.date())
        await PARTITIONS.ensure(sessions, today.date())
        writer = MessageLog(
            hasher=Hasher.of(KEY),
            sessions=lambda: sessions,
            metrics=GatewayMetrics(CollectorRegistry()),
            clock=lambda: moment[0],
        )
        for at in (
            old,
            old + timedelta(minutes=1),
            today,
            today + timedelta(seconds=1),
            today + timedelta(seconds=2),
        ):
            moment[0] = at
            writer.record(call())
            await writer.flush_once()
        dropped = await PARTITIONS.drop_expired(sessions, today.date(), retention_days=40)
    finally:
        await engine.dispose()
    assert dropped >= 1
    assert [row["seq"] for row in await setup.rows()] == [3, 4, 5]
    async with setup.gateway() as gateway:
        result = await verify(gateway, setup)
        assert (result["ok"], result["records_checked"]) == (True, 3), result
        assert datetime.fromisoformat(result["kept_from"]) > old
        # The oldest kept record removed: its successor's predecessor should still be there.
        await setup.tamper("DELETE FROM message_log WHERE seq = 3")
        broken = await verify(gateway, setup)
    assert [(found["reason"], found["seq"]) for found in broken["breaks"]] == [("head_removed", 4)]


def call() -> Call:
    return Call(
        request_id="r",
        consumer="consumer:x",
        dataset="case/cases",
        action="read",
        method="GET",
        path="/api/case/v1/cases",
        query_keys=(),
        status=200,
        duration_ms=1,
    )


# --- the database away -----------------------------------------------------------------------------


class TcpRelay:
    """A TCP relay to PostgreSQL that the test can cut and restore (the gateway's database "down")."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.listen_port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self.writers.difference_update((writer, upstream_writer))


def through(relay: TcpRelay, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = (
        f"{credentials}@127.0.0.1:{relay.listen_port}" if credentials else f"127.0.0.1:{relay.listen_port}"
    )
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def gauge(gateway: Gateway, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{gateway.metrics_url}/metrics")).text
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_with_the_database_down_calls_are_answered_and_their_records_follow_when_it_is_back(setup):
    parts = urlsplit(setup.database)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    async with setup.gateway(
        database_url=through(relay, setup.database), message_log_max_pending=3
    ) as gateway:
        await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))  # the key is cached now
        await written(gateway, 1, setup)
        await relay.cut()
        answers = [
            (await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))).status_code
            for _ in range(5)
        ]
        assert answers == [200] * 5
        await asyncio.sleep(0.3)
        assert gateway.message_log.pending == 3
        assert await gauge(gateway, "citygrid_gateway_message_log_pending_records") == 3
        assert await gauge(gateway, "citygrid_gateway_message_log_dropped_records_total") == 2
        await relay.start()
        await written(gateway, 4, setup)
        await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        rows = await written(gateway, 5, setup)
        result = await verify(gateway, setup)
    await relay.cut()
    assert [row["seq"] for row in rows] == [1, 2, 3, 4, 5]
    # Two calls were not recorded, and the chain says where: the record after them.
    assert [row["dropped_before"] for row in rows] == [0, 0, 0, 0, 2]
    assert result["ok"], result


async def test_a_value_longer_than_its_column_is_cut_to_it_and_holds_no_batch_back(setup):
    """A person's subject may be 200 characters, ``person:`` and all 207: refused by the table, it
    would hold every later batch of the writer back."""
    long_subject = "person:" + "x" * 200
    async with setup.gateway() as gateway:
        async with own_writer(setup) as writer:
            writer.record(dataclasses.replace(call(), consumer=long_subject))
            writer.record(dataclasses.replace(call(), consumer=long_subject[:-1] + "y"))
            assert await writer.flush_once() == 2
        result = await verify(gateway, setup)
    first, second = (row["consumer"] for row in await setup.rows())
    assert len(first) == len(second) == 200
    assert first != second
    assert first.startswith("person:xxx")
    assert result["ok"], result


async def test_a_call_that_cannot_be_chained_is_counted_and_said_by_the_next_record(setup):
    broken = [False]

    def clock() -> datetime:
        if broken[0]:
            raise RuntimeError("no time")
        return datetime.now(UTC)

    registry = CollectorRegistry()
    async with own_writer(setup, clock=clock, metrics=GatewayMetrics(registry)) as writer:
        broken[0] = True
        writer.record(call())
        broken[0] = False
        writer.record(call())
        await writer.flush_once()
    (row,) = await setup.rows()
    assert (row["seq"], row["dropped_before"]) == (1, 1)
    assert registry.get_sample_value("citygrid_gateway_message_log_dropped_records_total") == 1


def no_database() -> async_sessionmaker[AsyncSession]:
    raise AssertionError("this writer is never flushed")


def test_records_a_caller_made_large_fill_the_buffer_sooner():
    """The buffer is bounded in bytes as well as in records: a caller who fills paths and query names
    to their limits while the database is away cannot make it outgrow the pod's memory."""

    def writer() -> MessageLog:
        return MessageLog(
            hasher=Hasher.of(KEY),
            sessions=no_database,
            metrics=GatewayMetrics(CollectorRegistry()),
            max_pending=10,
        )

    large = dataclasses.replace(
        call(), path="/api/case/v1/" + "😀" * 480, query_keys=tuple(f"{'q' * 60}{i:03d}" for i in range(20))
    )
    small, big = writer(), writer()
    for _ in range(10):
        small.record(call())
        big.record(large)
    assert (small.pending, big.pending) == (10, 2)


async def test_a_stopping_gateway_writes_what_it_buffered(setup):
    async with setup.gateway(message_log_flush_seconds=30.0, message_log_batch_size=1_000) as gateway:
        for _ in range(3):
            await gateway.client.get("/api/case/v1/cases", headers=setup.as_("reader"))
        assert gateway.message_log.pending == 3
    assert len(await setup.rows()) == 3


def test_production_refuses_a_gateway_without_a_message_log_key(infrastructure):
    with pytest.raises(ValueError, match="CITYGRID_MESSAGE_LOG_KEY"):
        GatewaySettings(
            environment="production",
            internal_token_private_key=infrastructure.private_key,
            internal_token_public_key=infrastructure.public_key,
        )
