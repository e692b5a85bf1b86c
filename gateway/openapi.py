"""One OpenAPI document for the whole platform, merged from every service's own."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

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
    gateway_document: dict[str, Any], client: httpx.AsyncClient, upstreams: dict[str, str]
) -> dict[str, Any]:
    merged: dict[str, Any] = json.loads(json.dumps(gateway_document))
    merged.setdefault("paths", {})
    components = merged.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "Open311Key": {"type": "apiKey", "in": "query", "name": "api_key"},
    }
    unavailable: list[str] = []
    for service, base_url in sorted(upstreams.items()):
        try:
            response = await client.get(f"{base_url.rstrip('/')}/openapi.json", timeout=5.0)
            response.raise_for_status()
            part = prefix_document(service, response.json())
        except (httpx.HTTPError, ValueError) as error:
            log.warning("no OpenAPI document from %s: %s", service, error)
            unavailable.append(service)
            continue
        merged["paths"].update(part["paths"])
        schemas.update(part["schemas"])
    if unavailable:
        merged["info"]["x-unavailable-services"] = unavailable
    return merged
