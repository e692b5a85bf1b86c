"""``/exchange/v1``: the catalogue and every dataset's reads, forwarded to the dataset's owner.

A read needs ``<dataset>:read`` or the owner's read scope. The call reaches the owner with the
principal the caller is, plus the owner's read scope for this one call (the path is the dataset's,
so nothing else of the owner opens), and with ``pii:read`` only when the caller holds it or
``<dataset>:pii``. A district-bound consumer stays bound: the owner filters by its district.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import contract
from citygrid.auth import MissingScope, Principal
from citygrid.errors import DomainError, NotFound
from citygrid.masking import PII_SCOPE
from citygrid.problems import problem_responses
from contract.catalogue import BY_NAME, Dataset, owner_read_scope
from gateway.exchange.masking import mask_record, normalised, records_of
from gateway.message_log.capture import field_names
from gateway.quotas.policies import Allowance

router = APIRouter(prefix="/exchange/v1", tags=["exchange"])

# What every exchange read may answer besides its record or page.
READ_PROBLEMS = problem_responses(400, 401, 403, 404, 422, 429, 502, 503, 504)
CATALOGUE_PROBLEMS = problem_responses(401, 404, 422, 429)
# The one envelope of every list; a record's fields are the dataset's (GET /exchange/v1/datasets/<name>).
PAGE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "Give it back as cursor.",
        },
    },
}
RECORD_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "The dataset's record (its catalogue entry).",
}


def _answering(schema: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


CATALOGUE_FILE: Final = Path(contract.__file__).resolve().parent / "published" / "catalogue.json"
MAX_KEY_BYTES: Final = 200


class UnknownDataset(NotFound):
    code = "exchange.unknown_dataset"


class NoSuchRead(NotFound):
    code = "exchange.no_such_read"


class InvalidKey(DomainError):
    code = "exchange.invalid_key"
    title = "Invalid key"


@functools.cache
def catalogue_document() -> dict[str, Any]:
    """The published catalogue (``make contract`` writes it), read once."""
    document: dict[str, Any] = json.loads(CATALOGUE_FILE.read_text())
    return document


@functools.cache
def _entries() -> dict[str, dict[str, Any]]:
    """The catalogue's datasets by name, indexed once (every read looks up its key rule)."""
    return {item["name"]: item for item in catalogue_document()["items"]}


def _entry(name: str) -> dict[str, Any]:
    entry = _entries().get(name)
    if entry is None:
        raise UnknownDataset(f"no dataset named {name!r}: GET /exchange/v1/datasets lists them")
    return entry


async def _caller(request: Request) -> tuple[Any, Principal, Allowance]:
    """Who calls, before anything about the dataset is said (an unknown name is not an oracle)."""
    state = request.app.state.gateway
    client = state.admit(request)
    principal, allowance = await state.authenticate(request, client)
    request.state.principal = principal
    return state, principal, allowance


@router.get(
    "/datasets",
    summary="The catalogue: every dataset, its fields, scopes and events",
    responses=_answering(PAGE_SCHEMA, "Every dataset, one page") | problem_responses(401, 429),
)
async def list_datasets(request: Request) -> JSONResponse:
    state, principal, allowance = await _caller(request)
    return await _catalogue(request, state, principal, allowance, None)


@router.get("/datasets/{name}", summary="One dataset of the catalogue", responses=CATALOGUE_PROBLEMS)
async def get_dataset(name: str, request: Request) -> JSONResponse:
    state, principal, allowance = await _caller(request)
    return await _catalogue(request, state, principal, allowance, name)


async def _catalogue(
    request: Request, state: Any, principal: Principal, allowance: Allowance, name: str | None
) -> JSONResponse:
    started = time.perf_counter()
    try:
        quota_headers = await state.count(principal.subject, allowance)
        answer = JSONResponse(catalogue_document() if name is None else _entry(name), headers=quota_headers)
    except Exception as error:
        _record(
            request,
            state,
            principal,
            "catalogue",
            error.status if isinstance(error, DomainError) else 500,
            started,
        )
        raise
    _record(request, state, principal, "catalogue", answer.status_code, started)
    return answer


@router.get(
    "/{name}",
    summary="A page of a dataset ({items, next_cursor}; limit, cursor and filters)",
    responses=_answering(PAGE_SCHEMA, "A page of the dataset") | READ_PROBLEMS,
)
async def list_records(name: str, request: Request) -> Response:
    state, principal, allowance = await _caller(request)

    def resolve() -> tuple[Dataset, str, str | None, bool]:
        dataset = _dataset(name)
        if dataset.parent is not None:
            raise NoSuchRead(
                f"{name} is read under one of its {dataset.parent}: GET /exchange/v1/datasets/{name}"
            )
        if dataset.list_path is None:
            raise NoSuchRead(f"{name} is read one record at a time: /exchange/v1/{name}/{{id}}")
        return dataset, dataset.list_path, None, True

    return await _read(request, state, principal, allowance, name, resolve)


@router.get(
    "/{name}/{key}",
    summary="One record of a dataset",
    responses=_answering(RECORD_SCHEMA, "The record") | READ_PROBLEMS,
)
async def get_record(name: str, key: str, request: Request) -> Response:
    state, principal, allowance = await _caller(request)

    def resolve() -> tuple[Dataset, str, str | None, bool]:
        dataset = _dataset(name)
        if dataset.item_path is None:
            raise NoSuchRead(
                f"{name} is listed, not read one record at a time: GET /exchange/v1/datasets/{name}"
            )
        return dataset, dataset.item_path, key, False

    return await _read(request, state, principal, allowance, name, resolve)


@router.get(
    "/{name}/{key}/{child}",
    summary="A page of a dataset read under one record of another",
    responses=_answering(PAGE_SCHEMA, "A page of the dataset") | READ_PROBLEMS,
)
async def list_children(name: str, key: str, child: str, request: Request) -> Response:
    state, principal, allowance = await _caller(request)

    def resolve() -> tuple[Dataset, str, str | None, bool]:
        dataset = BY_NAME.get(child)
        if dataset is None or dataset.parent != name or dataset.list_path is None:
            raise UnknownDataset(f"no dataset {child!r} under {name!r}: GET /exchange/v1/datasets lists them")
        return dataset, dataset.list_path, key, True

    return await _read(request, state, principal, allowance, child, resolve)


def _dataset(name: str) -> Dataset:
    dataset = BY_NAME.get(name)
    if dataset is None:
        raise UnknownDataset(f"no dataset named {name!r}: GET /exchange/v1/datasets lists them")
    return dataset


def _checked_key(dataset: Dataset, key: str) -> bytes:
    """The key as the owner receives it: one segment, percent-encoded again from what was checked,
    fitting the owner's pattern and never the name of another of its routes (``export``, ``live``)."""
    rule = _entry(dataset.name)["key"] or {}
    pattern = rule.get("pattern")
    if (
        not key
        or len(key) > int(rule.get("max_length") or MAX_KEY_BYTES)
        or key in (".", "..")
        or not key.isprintable()
        or key in rule.get("reserved", ())
        or (pattern is not None and re.search(pattern, key) is None)
    ):
        raise InvalidKey(f"{key[:50]!r} is not a key of {dataset.name}")
    return quote(key, safe="").encode()


async def _read(
    request: Request,
    state: Any,
    principal: Principal,
    allowance: Allowance,
    name: str,
    resolve: Callable[[], tuple[Dataset, str, str | None, bool]],
) -> Response:
    started = time.perf_counter()
    owner, service_path = "", ""
    answered: dict[str, Any] = {}  # what the answer held, for the message log
    try:
        dataset, service_path, key, listing = resolve()
        owner = dataset.owner
        owner_scope = owner_read_scope(dataset)
        if not (principal.has_scope(dataset.read_scope) or principal.has_scope(owner_scope)):
            raise MissingScope(
                f"reading {dataset.name} needs the scope '{dataset.read_scope}'",
                required_scope=dataset.read_scope,
            )
        target = service_path.lstrip("/").encode()
        if key is not None:
            target = target.replace(b"{id}", _checked_key(dataset, key))
        quota_headers = await state.count(principal.subject, allowance)
        reveal = principal.has_scope(PII_SCOPE) or principal.has_scope(dataset.pii_scope)
        scopes = {scope for scope in principal.scopes if scope != PII_SCOPE} | {owner_scope}
        forwarded = principal.model_copy(
            update={"scopes": frozenset(scopes | ({PII_SCOPE} if reveal else set()))}
        )

        def rewrite(body: bytes) -> bytes:
            shown = normalised(json.loads(body), listing)
            records = records_of(shown, listing)
            if not reveal:
                for record in records:
                    mask_record(record, dataset.personal)
            answered["count"] = len(records)
            answered["fields"] = field_names({name for r in records if isinstance(r, dict) for name in r})
            return json.dumps(shown, ensure_ascii=False, separators=(",", ":")).encode()

        response: Response = await state.forward(
            request,
            dataset.owner,
            path=target.decode("latin-1"),
            principal=forwarded,
            forwarded_prefix="/exchange/v1",
            target=target,
            rewrite=rewrite,
            response_headers=quota_headers,
        )
    except Exception as error:
        status = error.status if isinstance(error, DomainError) else 500
        _record(request, state, principal, name, status, started, owner, service_path)
        raise
    _record(
        request,
        state,
        principal,
        name,
        response.status_code,
        started,
        owner,
        service_path,
        record_count=answered.get("count"),
        fields=answered.get("fields", ()),
    )
    return response


def _record(
    request: Request,
    state: Any,
    principal: Principal,
    dataset: str,
    status: int,
    started: float,
    owner: str = "gateway",
    service_path: str = "",
    *,
    record_count: int | None = None,
    fields: tuple[str, ...] = (),
) -> None:
    state.record_call(
        request,
        service=owner or "gateway",
        path=service_path.lstrip("/"),
        principal=principal,
        status=status,
        started=started,
        dataset=dataset,
        record_count=record_count,
        fields=fields,
    )
