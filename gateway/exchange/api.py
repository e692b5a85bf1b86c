"""``/exchange/v1``: the catalogue and every dataset's reads, forwarded to the dataset's owner.

A read needs ``<dataset>:read`` or the owner's read scope. The call reaches the owner with the
principal the caller is, plus the owner's read scope for this one call (the path is the dataset's,
so nothing else of the owner opens), and with ``pii:read`` only when the caller holds it or
``<dataset>:pii``. A district-bound consumer stays bound: the owner filters by its district.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import contract
from citygrid.auth import MissingScope, Principal
from citygrid.errors import DomainError, NotFound
from citygrid.masking import PII_SCOPE
from contract.catalogue import BY_NAME, Dataset, owner_read_scope
from gateway.exchange.masking import mask_record, normalised, records_of
from gateway.routing import is_clean

router = APIRouter(prefix="/exchange/v1", tags=["exchange"])

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


def _entry(name: str) -> dict[str, Any]:
    for item in catalogue_document()["items"]:
        if item["name"] == name:
            return dict(item)
    raise UnknownDataset(f"no dataset named {name!r}: GET /exchange/v1/datasets lists them")


async def _caller(request: Request) -> tuple[Principal, dict[str, str]]:
    state = request.app.state.gateway
    client = state.admit(request)
    principal, allowance = await state.authenticate(request, client)
    request.state.principal = principal
    return principal, await state.count(principal.subject, allowance)


@router.get("/datasets", summary="The catalogue: every dataset, its fields, scopes and events")
async def list_datasets(request: Request) -> JSONResponse:
    _, quota_headers = await _caller(request)
    return JSONResponse(catalogue_document(), headers=quota_headers)


@router.get("/datasets/{name}", summary="One dataset of the catalogue")
async def get_dataset(name: str, request: Request) -> JSONResponse:
    _, quota_headers = await _caller(request)
    return JSONResponse(_entry(name), headers=quota_headers)


@router.get("/{name}", summary="A page of a dataset ({items, next_cursor}; limit, cursor and filters)")
async def list_records(name: str, request: Request) -> Response:
    dataset = _dataset(name)
    if dataset.parent is not None or dataset.list_path is None:
        raise NoSuchRead(f"{name} is read one record at a time: /exchange/v1/{name}/{{id}}")
    return await _read(request, dataset, dataset.list_path, b"", listing=True)


@router.get("/{name}/{key}", summary="One record of a dataset")
async def get_record(name: str, key: str, request: Request) -> Response:
    dataset = _dataset(name)
    if dataset.item_path is None:
        raise NoSuchRead(f"{name} has no reads of one record")
    return await _read(request, dataset, dataset.item_path, _raw_key(request, 4), listing=False)


@router.get("/{name}/{key}/{child}", summary="A page of a dataset read under one record of another")
async def list_children(name: str, key: str, child: str, request: Request) -> Response:
    dataset = BY_NAME.get(child)
    if dataset is None or dataset.parent != name or dataset.list_path is None:
        raise UnknownDataset(f"no dataset {child!r} under {name!r}: GET /exchange/v1/datasets lists them")
    return await _read(request, dataset, dataset.list_path, _raw_key(request, 4), listing=True)


def _dataset(name: str) -> Dataset:
    dataset = BY_NAME.get(name)
    if dataset is None:
        raise UnknownDataset(f"no dataset named {name!r}: GET /exchange/v1/datasets lists them")
    return dataset


def _raw_key(request: Request, index: int) -> bytes:
    """The record's key as the client percent-encoded it (segment ``index`` of the raw path)."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    segments = raw_path.split(b"/")
    key = segments[index] if len(segments) > index else b""
    decoded = request.path_params.get("key", "")
    if not key or len(key) > MAX_KEY_BYTES or not is_clean(decoded) or decoded in (".", ".."):
        raise InvalidKey("a record's key is one path segment of at most 200 bytes")
    return key


async def _read(
    request: Request, dataset: Dataset, service_path: str, key: bytes, *, listing: bool
) -> Response:
    principal, quota_headers = await _caller(request)
    state = request.app.state.gateway
    started = time.perf_counter()
    status = 500
    try:
        owner_scope = owner_read_scope(dataset)
        if not (principal.has_scope(dataset.read_scope) or principal.has_scope(owner_scope)):
            raise MissingScope(
                f"reading {dataset.name} needs the scope '{dataset.read_scope}'",
                required_scope=dataset.read_scope,
            )
        reveal = principal.has_scope(PII_SCOPE) or principal.has_scope(dataset.pii_scope)
        scopes = {scope for scope in principal.scopes if scope != PII_SCOPE} | {owner_scope}
        forwarded = principal.model_copy(
            update={"scopes": frozenset(scopes | ({PII_SCOPE} if reveal else set()))}
        )
        target = service_path.lstrip("/").encode().replace(b"{id}", key)

        def rewrite(body: bytes) -> bytes:
            shown = normalised(json.loads(body), listing)
            if not reveal:
                for record in records_of(shown, listing):
                    mask_record(record, dataset.personal)
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
        status = response.status_code
        return response
    except DomainError as error:
        status = error.status
        raise
    finally:
        state.record_call(
            request,
            service=dataset.owner,
            path=service_path.lstrip("/"),
            principal=principal,
            status=status,
            started=started,
            dataset=dataset.name,
        )
