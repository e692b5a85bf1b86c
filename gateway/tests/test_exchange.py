"""The exchange API over every dataset of the catalogue, through a running gateway on real
PostgreSQL: who may read what (anonymous, wrong scope, dataset scope, owner scope, revoked key), one
envelope for every list, and every personal field of every dataset masked from the catalogue's
classification unless the consumer holds ``pii:read`` or the dataset's own ``<dataset>:pii``.

The owners are stand-ins that answer the catalogue's example records (personal fields filled with a
person's invented data) and show what principal the gateway sent them.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from citygrid.auth import PRINCIPAL_HEADER
from citygrid.testing import serve_app, wait_until
from contract import catalogue
from contract.catalogue import BY_NAME, DATASETS, Dataset, PersonalKind
from gateway.exchange.masking import MASKS
from gateway.oauth.signing import ALGORITHM
from gateway.tests.test_consumers import Gateway, Setup, new_consumer, setup

__all__ = ["setup"]

PUBLISHED = Path(catalogue.__file__).resolve().parent / "published"
SERVICES = ("case", "gas", "muck", "vision", "waste")


def published() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((PUBLISHED / "catalogue.json").read_text())
    return document


def entry(name: str) -> dict[str, Any]:
    return next(item for item in published()["items"] if item["name"] == name)


# --- the catalogue itself ----------------------------------------------------------------------------


def test_every_dataset_names_paths_its_owner_serves_and_fields_its_records_have():
    scope = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
    openapis = {
        service: json.loads((PUBLISHED / "openapi" / f"{service}.json").read_text()) for service in SERVICES
    }
    channels = json.loads((PUBLISHED / "asyncapi.json").read_text())["channels"]
    published_events = {channel["address"] for channel in channels.values()}
    assert len(BY_NAME) == len(DATASETS)
    for dataset in DATASETS:
        paths = openapis[dataset.owner]["paths"]
        for path in (dataset.item_path, dataset.list_path):
            if path is not None:
                assert "get" in paths[catalogue.service_path_of(path, paths)], (dataset.name, path)
        fields = {f["name"] for f in entry(dataset.name)["fields"]}
        assert set(dataset.personal) <= fields, (dataset.name, set(dataset.personal) - fields)
        assert scope.match(dataset.read_scope)
        assert scope.match(dataset.pii_scope)
        assert set(dataset.events) <= published_events, (dataset.name, set(dataset.events) - published_events)
        if dataset.parent is not None:
            assert dataset.parent in BY_NAME


def test_no_dataset_but_cases_shares_its_scope_with_a_service():
    # A dataset scope opens the dataset only; one named like a service's would open the service.
    from contract.scopes import SERVICES

    service_scopes = {f"{rules.dataset}:read" for rules in SERVICES.values()}
    assert {d.name for d in DATASETS if d.read_scope in service_scopes} == {"cases"}


def test_every_exchange_operation_documents_its_problems_as_problem_json():
    paths = json.loads((PUBLISHED / "openapi" / "gateway.json").read_text())["paths"]
    exchange = {
        path: ops
        for path, ops in paths.items()
        # The subscriptions are the consumer's own API (the next test holds it to the same rule).
        if path.startswith("/exchange/v1") and not path.startswith("/exchange/v1/subscriptions")
    }
    assert len(exchange) == 5
    for path, operations in exchange.items():
        responses = operations["get"]["responses"]
        needed = {"401", "429"} | (
            {"400", "403", "404", "502", "503", "504"} if "datasets" not in path else set()
        )
        assert needed <= set(responses), (path, needed - set(responses))
        for status in needed:
            schema = responses[status]["content"]["application/problem+json"]["schema"]
            assert "code" in schema["required"], (path, status)
        answer = responses["200"]["content"]["application/json"]["schema"]
        if path in ("/exchange/v1/{name}", "/exchange/v1/{name}/{key}/{child}", "/exchange/v1/datasets"):
            assert answer["required"] == ["items", "next_cursor"], path


def test_every_operation_of_the_gateways_own_api_documents_its_refusals_as_problem_json():
    paths = json.loads((PUBLISHED / "openapi" / "gateway.json").read_text())["paths"]
    checked = 0
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path == "/oauth/jwks.json":  # public keys: anyone may read them, nothing refuses
                continue
            responses = operation["responses"]
            # 422 wherever there is something to validate: as the kit answers it, never FastAPI's own.
            has_input = bool(operation.get("parameters") or operation.get("requestBody"))
            for status in ("401", "429", *(("422",) if has_input else ())):
                content = responses[status]["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
            checked += 1
    assert checked >= 18


def test_every_dataset_the_issue_names_is_in_the_catalogue():
    named = {
        "cases",
        "categories",
        "grid_cells",
        "units",
        "cameras",
        "alarms",
        "cylinders",
        "scans",
        "incidents",
    }
    named |= {"trucks", "positions", "manifests", "drop_off_points", "trips", "sorting_violations"}
    assert named <= set(BY_NAME)
    assert {dataset.owner for dataset in DATASETS} == set(SERVICES)


# --- through a running gateway -----------------------------------------------------------------------


def owner_app(service: str) -> FastAPI:
    """The owner as the exchange sees it, on its real route table: each dataset's example record and
    the principal it was sent; every other route of the owner answers that it was opened."""
    app = FastAPI()
    paths = json.loads((PUBLISHED / "openapi" / f"{service}.json").read_text())["paths"]
    statics = [p for p in paths if "{" not in p]
    routes: list[tuple[re.Pattern[str], Dataset, bool]] = []
    for dataset in DATASETS:
        if dataset.owner != service:
            continue
        for path, listing in ((dataset.item_path, False), (dataset.list_path, True)):
            if path is not None:
                routes.append((re.compile("^" + path.replace("{id}", "[^/]+") + "$"), dataset, listing))

    @app.get("/{path:path}")
    async def answer(path: str, request: Request) -> Response:
        claims = jwt.decode(request.headers[PRINCIPAL_HEADER], options={"verify_signature": False})
        seen = {"X-Seen-Scopes": " ".join(claims["scopes"]), "X-Seen-District": claims["district"] or ""}
        seen["X-Seen-Path"] = request.scope["raw_path"].decode()
        if request.query_params.get("as") == "csv":
            return PlainTextResponse("id,name\n1,王建国\n", media_type="text/csv", headers=seen)
        # The owner's own routes first, as the owners register them (``/v1/cases/live`` before ``{id}``).
        if "/" + path in statics and not any(pattern.match("/" + path) for pattern, _, _ in routes):
            return JSONResponse({"opened": "/" + path}, headers=seen)
        for pattern, dataset, listing in routes:
            if pattern.match("/" + path):
                record = entry(dataset.name)["example"]
                if not listing:
                    return JSONResponse(record, headers=seen)
                if dataset.name == "incidents":  # gas lists open incidents as a bare array
                    return JSONResponse([record], headers=seen)
                if dataset.name == "categories":  # and categories without a cursor
                    return JSONResponse({"items": [record]}, headers=seen)
                if dataset.name == "trips":  # two pages, the second asked for with the first's cursor
                    following = None if request.query_params.get("cursor") == "page-2" else "page-2"
                    return JSONResponse({"items": [record], "next_cursor": following}, headers=seen)
                return JSONResponse({"items": [record], "next_cursor": None}, headers=seen)
        return JSONResponse({"code": "not_found", "opened": "/" + path}, status_code=404, headers=seen)

    return app


@pytest.fixture
async def exchange(setup: Setup) -> AsyncIterator[Gateway]:
    async with contextlib.AsyncExitStack() as stack:
        upstreams = {
            service: await stack.enter_async_context(serve_app(owner_app(service))) for service in SERVICES
        }
        # Webhook receivers on loopback: the departments' guide subscribes one.
        yield await stack.enter_async_context(
            setup.gateway(upstreams=upstreams, webhook_allow_private_targets=True, webhook_poll_seconds=0.05)
        )


# A key each dataset's owner takes (its pattern in the catalogue).
KEYS_BY_PATTERN = {
    catalogue.UUID_PATTERN: "0f6c3c1e-8f1a-4d8e-9a53-2b7d4c1f9e21",
    "^[12][0-9]{4}$": "10101",
    "^[0-9]{15}$": "440106001001001",
    "^[a-z0-9][a-z0-9-]*$": "tianhe-sanitation",
    "^\\d{20}$": "44010600001310000001",
    "^[0-9A-Za-z\\-]{6,40}$": "GZ-000001",
    "^[A-Za-z0-9][A-Za-z0-9\\-]{1,31}$": "GZ-000001",
    None: "粤A12345",
}


def key_for(dataset: Dataset) -> str:
    rule = entry(dataset.name)["key"]
    key = KEYS_BY_PATTERN[rule["pattern"]]
    assert rule["pattern"] is None or re.search(rule["pattern"], key)
    return key


def exchange_path(dataset: Dataset) -> tuple[str, bool]:
    paths = catalogue.exchange_paths(dataset)
    if "list" in paths:
        return paths["list"].replace("{id}", key_for(dataset) if "{id}" in paths["list"] else ""), True
    return paths["item"].replace("{id}", key_for(dataset)), False


def value_at(record: Any, path: str) -> list[Any]:
    """Every value at ``path`` (``a``, ``a.b``, ``a[].b``) of ``record``."""
    nodes = [record]
    for step in path.replace("[]", ".[]").split("."):
        if step == "[]":
            nodes = [element for node in nodes for element in node]
        else:
            nodes = [node[step] for node in nodes]
    return nodes


def first_record(body: Any, listing: bool) -> Any:
    if listing:
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) == 1
        return body["items"][0]
    return body


async def test_every_dataset_is_read_with_its_scope_and_refused_without(setup: Setup, exchange: Gateway):
    reader = await new_consumer(exchange, setup, name="reader", scopes=[d.read_scope for d in DATASETS])
    outsider = await new_consumer(exchange, setup, name="outsider", scopes=["categories:read"])
    for dataset in DATASETS:
        path, _ = exchange_path(dataset)
        assert (await exchange.client.get(path)).status_code == 401, path
        answer = await exchange.client.get(path, headers={"X-API-Key": reader["api_key"]})
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert "ratelimit" in answer.headers
        # The owner saw its own read scope for this one call, and no pii:read.
        seen = set(answer.headers["x-seen-scopes"].split())
        assert catalogue.owner_read_scope(dataset) in seen
        assert "pii:read" not in seen
        if dataset.name != "categories":
            refused = await exchange.client.get(path, headers={"X-API-Key": outsider["api_key"]})
            assert refused.status_code == 403, path
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["required_scope"] == dataset.read_scope


async def test_every_personal_field_of_every_dataset_is_masked_without_pii_read(
    setup: Setup, exchange: Gateway
):
    plain = await new_consumer(exchange, setup, name="plain", scopes=[d.read_scope for d in DATASETS])
    full = await new_consumer(
        exchange, setup, name="full", scopes=[d.read_scope for d in DATASETS] + ["pii:read"]
    )
    walked = 0
    for dataset in DATASETS:
        path, listing = exchange_path(dataset)
        example = entry(dataset.name)["example"]
        masked = first_record(
            (await exchange.client.get(path, headers={"X-API-Key": plain["api_key"]})).json(), listing
        )
        shown = first_record(
            (await exchange.client.get(path, headers={"X-API-Key": full["api_key"]})).json(), listing
        )
        assert shown == example, dataset.name
        for field, kind in dataset.personal.items():
            for original, got in zip(value_at(example, field), value_at(masked, field), strict=True):
                assert got != original, (dataset.name, field)
                assert got == MASKS[kind](original), (dataset.name, field)
                walked += 1
        # What is not personal comes as the owner sent it.
        for field in (f["name"] for f in entry(dataset.name)["fields"] if f["classification"] != "personal"):
            assert value_at(masked, field) == value_at(example, field), (dataset.name, field)
    assert walked == sum(len(d.personal) for d in DATASETS)


async def test_a_datasets_own_pii_scope_shows_that_dataset_only(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(
        exchange, setup, name="police", scopes=["cases:read", "incidents:read", "incidents:pii"]
    )
    key = {"X-API-Key": consumer["api_key"]}
    incidents = (await exchange.client.get("/exchange/v1/incidents", headers=key)).json()["items"][0]
    assert incidents["reporter_phone"] == catalogue.EXAMPLE_PERSONAL[PersonalKind.PHONE]
    seen = (await exchange.client.get("/exchange/v1/incidents", headers=key)).headers["x-seen-scopes"]
    assert "pii:read" in seen.split()  # the owner is told to show it, for this call
    case = (
        await exchange.client.get(
            f"/exchange/v1/cases/{KEYS_BY_PATTERN[catalogue.UUID_PATTERN]}", headers=key
        )
    ).json()
    assert case["reporter"]["phone"] == "138****8000"


async def test_a_district_consumer_is_sent_bound_to_its_district(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(exchange, setup, name="tianhe", scopes=["cases:read"], district="440106")
    answer = await exchange.client.get("/exchange/v1/cases", headers={"X-API-Key": consumer["api_key"]})
    assert answer.status_code == 200
    assert answer.headers["x-seen-district"] == "440106"


async def test_the_catalogue_is_served_and_unknown_reads_are_clear_4xx(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(exchange, setup, name="anyone", scopes=["cases:read"])
    key = {"X-API-Key": consumer["api_key"]}
    listed = await exchange.client.get("/exchange/v1/datasets", headers=key)
    assert listed.status_code == 200
    assert [item["name"] for item in listed.json()["items"]] == [d.name for d in DATASETS]
    one = (await exchange.client.get("/exchange/v1/datasets/cases", headers=key)).json()
    assert one["scopes"] == {"read": ["cases:read"], "personal": ["pii:read", "cases:pii"]}
    assert {
        "name": "reporter.phone",
        "type": "string",
        "classification": "personal",
        "personal_kind": "phone",
    } in [{k: v for k, v in f.items() if k != "nullable"} for f in one["fields"]]
    assert "case.case.closed" in one["events"]
    uuid = KEYS_BY_PATTERN[catalogue.UUID_PATTERN]
    for path, code in (
        ("/exchange/v1/datasets/nothing", "exchange.unknown_dataset"),
        ("/exchange/v1/nothing", "exchange.unknown_dataset"),
        ("/exchange/v1/cylinders", "exchange.no_such_read"),
        ("/exchange/v1/scans", "exchange.no_such_read"),
        ("/exchange/v1/drivers/GZ-000001", "exchange.no_such_read"),
        (f"/exchange/v1/cases/{uuid}/nothing", "exchange.unknown_dataset"),
    ):
        answer = await exchange.client.get(path, headers=key)
        assert answer.status_code == 404, path
        assert answer.json()["code"] == code, path
    for path in ("/exchange/v1/cases/%2E%2E", "/exchange/v1/cases/not-a-case"):
        answer = await exchange.client.get(path, headers=key)
        assert answer.status_code == 400, path
        assert answer.json()["code"] == "exchange.invalid_key", path
    # An encoded slash is a slash: one more segment, no dataset of that name under cases.
    assert (await exchange.client.get(f"/exchange/v1/cases/{uuid}%2Fhistory", headers=key)).status_code == 404
    assert (await exchange.client.post("/exchange/v1/cases", headers=key)).status_code == 405
    # The catalogue's names are no oracle: an unknown one asks for credentials first.
    assert (await exchange.client.get("/exchange/v1/nothing")).status_code == 401


async def test_a_key_never_opens_another_route_of_the_owner(setup: Setup, exchange: Gateway):
    reader = await new_consumer(exchange, setup, name="prober", scopes=[d.read_scope for d in DATASETS])
    key = {"X-API-Key": reader["api_key"]}
    probed = 0
    for dataset in DATASETS:
        rule = entry(dataset.name)["key"]
        if rule is None:
            continue
        for reserved in rule["reserved"]:
            path = catalogue.exchange_paths(dataset).get("item") or catalogue.exchange_paths(dataset)["list"]
            answer = await exchange.client.get(path.replace("{id}", reserved), headers=key)
            assert answer.status_code == 400, (dataset.name, reserved, answer.text)
            assert "opened" not in answer.text
            probed += 1
    # /v1/cylinders/export, /v1/manifests/closure and /v1/cases/live among them.
    assert probed >= 3
    for path in (
        "/exchange/v1/cylinders/export",
        "/exchange/v1/manifests/closure",
        "/exchange/v1/cases/live",
    ):
        assert (await exchange.client.get(path, headers=key)).status_code == 400, path
    # An event stream asked for is not one: the owner is asked for JSON, and answers JSON.
    streamed = await exchange.client.get("/exchange/v1/cases", headers=key | {"Accept": "text/event-stream"})
    assert streamed.status_code == 200
    assert streamed.json()["next_cursor"] is None


async def test_an_owner_answer_that_cannot_be_masked_is_never_passed_on(setup: Setup, exchange: Gateway):
    reader = await new_consumer(exchange, setup, name="csv", scopes=["cases:read"])
    answer = await exchange.client.get("/exchange/v1/cases?as=csv", headers={"X-API-Key": reader["api_key"]})
    assert answer.status_code == 502
    assert answer.json()["code"] == "gateway.unexpected_answer"
    assert "王建国" not in answer.text


async def test_every_list_has_the_one_envelope(setup: Setup, exchange: Gateway):
    reader = await new_consumer(exchange, setup, name="lists", scopes=["categories:read", "incidents:read"])
    key = {"X-API-Key": reader["api_key"]}
    for path in ("/exchange/v1/categories", "/exchange/v1/incidents"):
        body = (await exchange.client.get(path, headers=key)).json()
        assert set(body) == {"items", "next_cursor"}, path
        assert body["next_cursor"] is None


async def test_a_revoked_key_reads_nothing(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(exchange, setup, name="leaving", scopes=["cases:read"])
    key = {"X-API-Key": consumer["api_key"]}
    assert (await exchange.client.get("/exchange/v1/cases", headers=key)).status_code == 200
    revoked = await exchange.client.post(
        f"/admin/v1/consumers/{consumer['id']}/revoke", headers=setup.admin()
    )
    assert revoked.status_code == 200, revoked.text
    assert (await exchange.client.get("/exchange/v1/cases", headers=key)).status_code == 401


async def test_an_access_token_past_its_expiry_reads_nothing(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(exchange, setup, name="late", scopes=["cases:read"])
    issued = await exchange.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": consumer["id"],
            "client_secret": consumer["api_key"],
        },
    )
    assert issued.status_code == 200, issued.text
    tokens = exchange.app.state.gateway.tokens
    signer = tokens._signer(time.time())
    claims = jwt.decode(issued.json()["access_token"], options={"verify_signature": False})

    def signed(**changes: int) -> dict[str, str]:
        token = jwt.encode(
            claims | changes,
            signer.private,
            algorithm=ALGORITHM,
            headers={"kid": signer.kid, "typ": "at+jwt"},
        )
        return {"Authorization": f"Bearer {token}"}

    # The same token, signed by the gateway's own key: accepted while it lives, refused once it has not.
    assert (await exchange.client.get("/exchange/v1/cases", headers=signed())).status_code == 200
    expired = await exchange.client.get(
        "/exchange/v1/cases",
        headers=signed(iat=claims["iat"] - 900, nbf=claims["iat"] - 900, exp=claims["iat"] - 600),
    )
    assert expired.status_code == 401
    assert expired.json()["code"] == "auth.invalid_credentials"
    assert "expired" in expired.json()["detail"]


async def test_every_exchange_read_is_in_the_message_log_under_its_dataset(setup: Setup, exchange: Gateway):
    consumer = await new_consumer(exchange, setup, name="logged", scopes=["trips:read"])
    key = {"X-API-Key": consumer["api_key"]}
    assert (await exchange.client.get("/exchange/v1/trips", headers=key)).status_code == 200
    assert (await exchange.client.get("/exchange/v1/cases", headers=key)).status_code == 403

    async def logged() -> list[Any]:
        return await setup.sql(
            "SELECT dataset, action, status, path, record_count, fields FROM message_log "
            "WHERE consumer = $1 ORDER BY at",
            f"consumer:{consumer['id']}",
        )

    await wait_until(lambda: _two(logged), timeout=5.0)
    rows = await logged()
    assert [(r["dataset"], r["action"], r["status"], r["path"]) for r in rows] == [
        ("trips", "read", 200, "/exchange/v1/trips"),
        ("cases", "read", 403, "/exchange/v1/cases"),
    ]
    # What the read returned: its records and their fields (the refusal returned none).
    assert rows[0]["record_count"] == 1
    assert rows[0]["fields"] == sorted(entry("trips")["example"])
    assert (rows[1]["record_count"], rows[1]["fields"]) == (None, None)
    # And the chain holds: a record that says what it returned verifies like any other.
    verified = await exchange.client.get("/admin/v1/message-log/verify", headers=setup.admin())
    assert verified.status_code == 200, verified.text
    assert verified.json()["ok"] is True


async def _two(rows: Any) -> bool:
    return len(await rows()) == 2
