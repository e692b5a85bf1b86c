"""One OpenAPI document for the whole platform, merged from every service's own.

The merged document is built once and kept (``OpenApiCache``): a hit is served from memory, with an
ETag, and never fans out to the services. It is rebuilt in the background at most once per
``openapi_cache_seconds`` (sooner, ``openapi_retry_seconds``, while a service was missing from it),
one build at a time however many hits arrive meanwhile; they get the previous document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from citygrid.errors import DomainError

log = logging.getLogger("gateway.openapi")


def prefix_document(service: str, document: dict[str, Any]) -> dict[str, Any]:
    """Paths under ``/api/<service>``, schemas renamed ``<service>.<Name>`` so services never collide."""
    text = json.dumps(document).replace('"#/components/schemas/', f'"#/components/schemas/{service}.')
    renamed: dict[str, Any] = json.loads(text)
    # Open311 keeps the path the standard gives it; everything else lives under /api/<service>.
    paths = {
        path if path.startswith("/open311/") else f"/api/{service}{path}": item
        for path, item in renamed.get("paths", {}).items()
    }
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation["tags"] = [service, *operation.get("tags", [])]
                if "operationId" in operation:
                    operation["operationId"] = f"{service}_{operation['operationId']}"
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
                if "open311_" in str(operation.get("operationId", "")):
                    operation["security"].insert(0, {"Open311Key": []})
    schemas = {
        f"{service}.{name}": schema
        for name, schema in renamed.get("components", {}).get("schemas", {}).items()
    }
    return {"paths": paths, "schemas": schemas}


async def merged_openapi(
    gateway_document: dict[str, Any], documents: Mapping[str, Callable[[], Awaitable[Any]]]
) -> dict[str, Any]:
    """``documents`` fetch each service's own document on its own pool: a slow one waits on that only."""
    merged: dict[str, Any] = json.loads(json.dumps(gateway_document))
    merged.setdefault("paths", {})
    components = merged.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "Open311Key": {"type": "apiKey", "in": "query", "name": "api_key"},
    }

    async def fetch(service: str) -> dict[str, Any] | None:
        try:
            return prefix_document(service, await documents[service]())
        except (aiohttp.ClientError, DomainError, TimeoutError, ValueError, AttributeError) as error:
            log.warning("no OpenAPI document from %s: %s", service, error)
            return None

    # All at once: one slow service delays the build by its own timeout, not by everyone's.
    services = sorted(documents)
    parts = await asyncio.gather(*(fetch(service) for service in services))
    unavailable = [service for service, part in zip(services, parts, strict=True) if part is None]
    for part in parts:
        if part is not None:
            merged["paths"].update(part["paths"])
            schemas.update(part["schemas"])
    if unavailable:
        merged["info"]["x-unavailable-services"] = unavailable
    return merged


@dataclass(frozen=True)
class CachedDocument:
    body: bytes
    etag: str
    complete: bool
    built_at: float


class OpenApiCache:
    """The merged document, built by ``build`` at most once per period, one build at a time."""

    def __init__(
        self,
        build: Callable[[], Awaitable[dict[str, Any]]],
        *,
        ttl: float,
        retry: float,
        clock: Callable[[], float] = time.monotonic,
        on_build: Callable[[bool], None] | None = None,
    ) -> None:
        self.build = build
        self.ttl = ttl
        self.retry = retry
        self.clock = clock
        self.on_build = on_build
        self._document: CachedDocument | None = None
        self._building: asyncio.Task[CachedDocument] | None = None

    async def get(self) -> CachedDocument:
        document = self._document
        if document is None:
            # Nothing to serve yet: every caller waits for the same first build.
            return await asyncio.shield(self._start())
        if self.clock() - document.built_at >= (self.ttl if document.complete else self.retry):
            self._start()  # in the background; this caller and the next get what there is
        return document

    def _start(self) -> asyncio.Task[CachedDocument]:
        if self._building is None or self._building.done():
            self._building = asyncio.create_task(self._rebuild(), name="openapi-rebuild")
            self._building.add_done_callback(_log_failure)
        return self._building

    async def _rebuild(self) -> CachedDocument:
        merged = await self.build()
        body = json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode()
        complete = "x-unavailable-services" not in merged.get("info", {})
        document = CachedDocument(
            body=body,
            etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            complete=complete,
            built_at=self.clock(),
        )
        self._document = document
        if self.on_build is not None:
            self.on_build(complete)
        return document

    async def close(self) -> None:
        if self._building is not None and not self._building.done():
            self._building.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._building


def _log_failure(task: asyncio.Task[CachedDocument]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the merged OpenAPI document could not be built", exc_info=task.exception())
