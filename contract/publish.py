"""Generate the published contract: JSON Schema of every event, AsyncAPI 3, each service's OpenAPI,
and the exchange catalogue (``contract.catalogue``).

``python -m contract.publish`` (``make contract``) writes ``contract/published/``; the files are
checked in and a test compares them with what the code generates, so a change to the contract shows
in review. A change that breaks a published event schema needs a new ``schema_version``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from citygrid.events import CloudEvent, EventData
from contract import catalogue
from contract.case import ALL_CASE_EVENTS
from contract.gas import ALL_GAS_EVENTS
from contract.muck import ALL_MUCK_EVENTS
from contract.vision import ALL_VISION_EVENTS
from contract.waste import ALL_WASTE_EVENTS

PUBLISHED = Path(__file__).resolve().parent / "published"
EVENTS: tuple[type[EventData], ...] = (
    *ALL_CASE_EVENTS,
    *ALL_VISION_EVENTS,
    *ALL_GAS_EVENTS,
    *ALL_MUCK_EVENTS,
    *ALL_WASTE_EVENTS,
)
# Service → the module whose create_app() builds it (imported by name: the contract imports no service).
SERVICE_APPS = {
    "case": "services.case.main",
    "gas": "services.gas.main",
    "muck": "services.muck.main",
    "waste": "services.waste.main",
    "vision": "services.vision.main",
    "gateway": "gateway.main",
}


def _message_name(event: type[EventData]) -> str:
    return event.__name__


def event_schema(event: type[EventData]) -> dict[str, Any]:
    schema = event.model_json_schema(mode="serialization")
    schema["$id"] = f"urn:citygrid:event:{event.event_type()}"
    schema["title"] = event.event_type()
    schema["x-nats-subject"] = event.subject
    return schema


def asyncapi() -> dict[str, Any]:
    envelope = CloudEvent.model_json_schema(mode="serialization")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in EVENTS:
        name = _message_name(event)
        payload = json.loads(json.dumps(envelope))
        payload["properties"]["type"] = {"const": event.event_type()}
        payload["properties"]["source"] = {"const": f"citygrid/{event.domain()}"}
        payload["properties"]["data"] = {"$ref": f"events/{event.event_type()}.schema.json"}
        messages[name] = {
            "name": event.event_type(),
            "title": name,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {"Nats-Msg-Id": {"type": "string", "description": "the CloudEvent id"}},
            },
            "payload": payload,
        }
        channels[event.subject] = {
            "address": event.subject,
            "description": f"JetStream stream {event.domain().upper()}",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"publish{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{event.subject}"},
            "messages": [{"$ref": f"#/channels/{event.subject}/messages/{name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CityGrid events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (structured JSON) on NATS JetStream; one stream per domain.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def service_openapi(module: str) -> dict[str, Any]:
    app = importlib.import_module(module).create_app()
    document: dict[str, Any] = app.openapi()
    return document


def generate() -> dict[Path, str]:
    """Every published file and its content, as the code defines them now."""
    files: dict[Path, str] = {}

    def put(relative: str, document: dict[str, Any]) -> None:
        files[PUBLISHED / relative] = (
            json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )

    for event in EVENTS:
        put(f"events/{event.event_type()}.schema.json", event_schema(event))
    put("asyncapi.json", asyncapi())
    openapis = {service: service_openapi(module) for service, module in SERVICE_APPS.items()}
    for service, document in openapis.items():
        put(f"openapi/{service}.json", document)
    put("catalogue.json", catalogue.document(openapis))
    return files


def main() -> None:
    files = generate()
    for stale in PUBLISHED.rglob("*.json"):
        if stale not in files:
            stale.unlink()
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print(f"wrote {len(files)} files under {PUBLISHED}")


if __name__ == "__main__":
    main()
