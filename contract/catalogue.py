"""The exchange catalogue: every dataset other departments read through ``/exchange/v1``.

One declaration per dataset: the service that owns it, the service paths the exchange forwards to,
which of its fields are personal (and of which kind, which decides how they are masked), whether
the rest is public or internal, and the event types it publishes. The fields themselves, their
types and an example come from the owner's published OpenAPI document (``contract.publish`` writes
the whole catalogue to ``contract/published/catalogue.json``, which the gateway serves).

Scopes: ``<dataset>:read`` reads the dataset, and so does the owner's own read scope
(``gas:read`` reads every gas dataset); ``pii:read`` shows every dataset's personal fields, and
``<dataset>:pii`` that dataset's only. A district-bound consumer reads its district only: the
owner enforces it on every dataset that has a district.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class Classification(StrEnum):
    PUBLIC = "public"  # may be published as open data
    INTERNAL = "internal"  # for city departments, not the public
    PERSONAL = "personal"  # about a person: masked without pii:read


class PersonalKind(StrEnum):
    """How a personal field is masked (``citygrid.masking``; docs/personal-data.md)."""

    NAME = "name"
    PHONE = "phone"
    EMAIL = "email"
    ID_NUMBER = "id_number"
    PLATE = "plate"
    ADDRESS = "address"
    TEXT = "text"
    POSITION = "position"
    IDENTIFIER = "identifier"  # the id of a person's record (a household's): withheld


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    owner: str  # the service
    item_path: str | None = None  # the owner's path of one record, ``{id}`` for its key
    list_path: str | None = None  # the owner's path of the list; ``{id}`` is the parent's key
    parent: str | None = None  # read under one record of that dataset: /exchange/v1/<parent>/<id>/<name>
    # Field path → kind: ``a`` a field, ``a.b`` a field of an object, ``a[].b`` of each element of a list.
    personal: dict[str, PersonalKind] = field(default_factory=dict)
    public: bool = False  # the fields that are not personal are public (else internal)
    events: tuple[str, ...] = ()

    @property
    def read_scope(self) -> str:
        return f"{self.name}:read"

    @property
    def pii_scope(self) -> str:
        return f"{self.name}:pii"


P = PersonalKind
CASE_EVENTS: Final = tuple(
    f"case.case.{kind}"
    for kind in (
        "reported",
        "registered",
        "dispatched",
        "accepted",
        "handled",
        "returned",
        "reworked",
        "closed",
        "cancelled",
        "rejected",
        "merged",
        "overdue",
        "suspended",
        "resumed",
        "extension_requested",
        "extension_approved",
        "extension_denied",
    )
)

DATASETS: Final[tuple[Dataset, ...]] = (
    # --- case: digital city management -------------------------------------------------------------
    Dataset(
        "cases",
        "City-management cases (数字城管案件), report to close",
        "case",
        item_path="/v1/cases/{id}",
        list_path="/v1/cases",
        personal={
            "reporter.name": P.NAME,
            "reporter.phone": P.PHONE,
            "reporter.email": P.EMAIL,
            "address": P.ADDRESS,
            "description": P.TEXT,
            "history[].note": P.TEXT,
        },
        events=CASE_EVENTS,
    ),
    Dataset(
        "categories",
        "Case categories and their handling deadlines",
        "case",
        item_path="/v1/categories/{id}",
        list_path="/v1/categories",
        public=True,
    ),
    Dataset(
        "grid_cells",
        "Grid cells (网格) of the city's districts, streets and communities",
        "case",
        item_path="/v1/grid/cells/{id}",
        list_path="/v1/grid/cells",
        public=True,
    ),
    Dataset(
        "units",
        "Responsible units that handle cases",
        "case",
        item_path="/v1/units/{id}",
        list_path="/v1/units",
    ),
    # --- vision: video AI ---------------------------------------------------------------------------
    Dataset(
        "cameras", "Cameras and their health", "vision", item_path="/v1/cameras/{id}", list_path="/v1/cameras"
    ),
    Dataset(
        "alarms",
        "Video AI alarms, reviewed and dispatched",
        "vision",
        item_path="/v1/alarms/{id}",
        list_path="/v1/alarms",
        personal={"review_note": P.TEXT},
        events=("vision.alarm.confirmed", "vision.recheck.completed"),
    ),
    # --- gas: LPG cylinders -------------------------------------------------------------------------
    Dataset(
        "cylinders",
        "LPG cylinders by their one code (一瓶一码)",
        "gas",
        item_path="/v1/cylinders/{id}",
        personal={"holder_id": P.IDENTIFIER, "last_location": P.POSITION},
    ),
    Dataset(
        "scans",
        "A cylinder's scans: fills, deliveries, returns, inspections",
        "gas",
        list_path="/v1/cylinders/{id}/scans",
        parent="cylinders",
        personal={"user_id": P.IDENTIFIER, "location": P.POSITION},
    ),
    Dataset(
        "incidents",
        "Gas leak incidents and their response",
        "gas",
        item_path="/v1/incidents/{id}",
        list_path="/v1/incidents",
        personal={
            "reporter_name": P.NAME,
            "reporter_phone": P.PHONE,
            "place": P.ADDRESS,
            "description": P.TEXT,
            "steps[].note": P.TEXT,
            "location": P.POSITION,
        },
        events=("gas.incident.reported", "gas.incident.advanced", "gas.incident.closed"),
    ),
    Dataset(
        "enterprises",
        "Gas enterprises: fill stations and suppliers",
        "gas",
        item_path="/v1/enterprises/{id}",
        list_path="/v1/enterprises",
        events=("gas.violation.detected",),
    ),
    Dataset(
        "gas_users",
        "Households and businesses supplied with LPG",
        "gas",
        item_path="/v1/users/{id}",
        personal={"name": P.NAME, "phone": P.PHONE, "address": P.ADDRESS, "location": P.POSITION},
    ),
    # --- muck: construction-waste transport -----------------------------------------------------------
    Dataset(
        "trucks",
        "Muck trucks (渣土车) and their permits",
        "muck",
        item_path="/v1/trucks/{id}",
        list_path="/v1/trucks",
    ),
    Dataset(
        "drivers",
        "Muck-truck drivers",
        "muck",
        list_path="/v1/drivers",
        personal={"name": P.NAME, "phone": P.PHONE, "id_number": P.ID_NUMBER, "licence_number": P.ID_NUMBER},
    ),
    Dataset("positions", "Every muck truck's latest position", "muck", list_path="/v1/positions/latest"),
    Dataset(
        "manifests",
        "Electronic manifests (电子联单): site to disposal",
        "muck",
        item_path="/v1/manifests/{id}",
        list_path="/v1/manifests",
        events=(
            "muck.manifest.issued",
            "muck.manifest.loaded",
            "muck.manifest.delivered",
            "muck.manifest.closed",
            "muck.manifest.cancelled",
            "muck.manifest.abnormal",
        ),
    ),
    Dataset(
        "sites",
        "Construction sites and disposal sites",
        "muck",
        item_path="/v1/sites/{id}",
        list_path="/v1/sites",
    ),
    Dataset(
        "transport_violations",
        "Muck transport violations: off route, off hours, uncovered, unmanifested",
        "muck",
        item_path="/v1/violations/{id}",
        list_path="/v1/violations",
        events=("muck.violation.detected",),
    ),
    # --- waste: sorting and the collection chain -------------------------------------------------------
    Dataset(
        "drop_off_points",
        "Drop-off points (投放点) with bin-side AI",
        "waste",
        item_path="/v1/points/{id}",
        list_path="/v1/points",
        personal={"contact_name": P.NAME, "contact_phone": P.PHONE},
    ),
    Dataset(
        "collection_points",
        "Collection points (收集点) on the vehicles' rounds",
        "waste",
        item_path="/v1/collection-points/{id}",
        list_path="/v1/collection-points",
    ),
    Dataset(
        "waste_vehicles",
        "Sanitation vehicles",
        "waste",
        item_path="/v1/vehicles/{id}",
        list_path="/v1/vehicles",
        personal={"driver_name": P.NAME, "driver_phone": P.PHONE},
    ),
    Dataset(
        "facilities",
        "Transfer stations and treatment facilities",
        "waste",
        item_path="/v1/facilities/{id}",
        list_path="/v1/facilities",
    ),
    Dataset(
        "trips",
        "Collection trips: point to vehicle to facility",
        "waste",
        item_path="/v1/trips/{id}",
        list_path="/v1/trips",
    ),
    Dataset(
        "sorting_violations",
        "Bin-side sorting violations",
        "waste",
        item_path="/v1/violations/{id}",
        list_path="/v1/violations",
        events=("waste.violation.detected",),
    ),
    Dataset(
        "chain_violations",
        "Collection-chain violations: mixed loads, unregistered unloading",
        "waste",
        item_path="/v1/chain-violations/{id}",
        list_path="/v1/chain-violations",
    ),
)

BY_NAME: Final[dict[str, Dataset]] = {dataset.name: dataset for dataset in DATASETS}
# The dataset each event type belongs to: a webhook subscription to it needs that dataset's scopes.
EVENT_DATASET: Final[dict[str, Dataset]] = {
    event: dataset for dataset in DATASETS for event in dataset.events
}

# The personal fields of each event type's ``data`` (paths as in ``Dataset.personal``): a webhook's
# payload has them masked unless its consumer holds ``pii:read`` or the dataset's ``<dataset>:pii``.
# A test holds every event type of the catalogue, and every such field of its schema, to this map.
_PROBLEM_PERSONAL: Final = {"address": P.ADDRESS, "description": P.TEXT}
EVENT_PERSONAL: Final[dict[str, dict[str, PersonalKind]]] = {
    **{event: {"note": P.TEXT} for event in CASE_EVENTS},
    "vision.alarm.confirmed": _PROBLEM_PERSONAL,
    "vision.recheck.completed": {"note": P.TEXT},
    "gas.violation.detected": _PROBLEM_PERSONAL,
    "gas.incident.reported": _PROBLEM_PERSONAL,
    "gas.incident.advanced": {},
    "gas.incident.closed": {},
    "muck.violation.detected": _PROBLEM_PERSONAL,
    "muck.manifest.issued": {},
    "muck.manifest.loaded": {},
    "muck.manifest.delivered": {},
    "muck.manifest.closed": {"resolution_note": P.TEXT},
    "muck.manifest.cancelled": {},
    "muck.manifest.abnormal": {},
    "waste.violation.detected": _PROBLEM_PERSONAL,
}


# --- the published document --------------------------------------------------------------------------

EXCHANGE_PREFIX: Final = "/exchange/v1"
# What an example shows for a personal field of each kind (made up; masked without pii:read).
EXAMPLE_PERSONAL: Final[dict[PersonalKind, object]] = {
    PersonalKind.NAME: "王建国",
    PersonalKind.PHONE: "13800138000",
    PersonalKind.EMAIL: "wang.jianguo@example.cn",
    PersonalKind.ID_NUMBER: "440106199001011234",
    PersonalKind.PLATE: "粤A12345",
    PersonalKind.ADDRESS: "广州市天河区天河路385号2座1501室",
    PersonalKind.TEXT: "联系人王建国，电话13800138000，楼下垃圾桶满溢",
    PersonalKind.POSITION: {"type": "Point", "coordinates": [113.324521, 23.132187]},
    PersonalKind.IDENTIFIER: "5b1f0a52-3c1e-4f6a-9d2e-7a4b8c9d0e1f",
}


def owner_read_scope(dataset: Dataset) -> str:
    from contract.scopes import SERVICES

    return f"{SERVICES[dataset.owner].dataset}:read"


def exchange_paths(dataset: Dataset) -> dict[str, str]:
    paths: dict[str, str] = {}
    if dataset.parent is not None:
        paths["list"] = f"{EXCHANGE_PREFIX}/{dataset.parent}/{{id}}/{dataset.name}"
    elif dataset.list_path is not None:
        paths["list"] = f"{EXCHANGE_PREFIX}/{dataset.name}"
    if dataset.item_path is not None:
        paths["item"] = f"{EXCHANGE_PREFIX}/{dataset.name}/{{id}}"
    return paths


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema.get("$ref"), str):
        schema = components[str(schema["$ref"]).rsplit("/", 1)[-1]]
    variants = schema.get("anyOf")
    if isinstance(variants, list):
        concrete = [v for v in variants if isinstance(v, dict) and v.get("type") != "null"]
        if len(concrete) == 1:
            return _resolve(concrete[0], components) | {"nullable": True}
    return schema


def item_schema(dataset: Dataset, openapi: dict[str, Any]) -> dict[str, Any]:
    """The schema of one record, from the owner's OpenAPI: the item path's answer, or the list's items."""
    paths = openapi["paths"]
    components = openapi.get("components", {})
    components = components.get("schemas", {})
    path = dataset.item_path or dataset.list_path
    assert path is not None, dataset.name
    service_path = service_path_of(path, paths)
    answer = paths[service_path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    schema = _resolve(answer, components)
    if dataset.item_path is None:
        if schema.get("type") != "array":
            properties = schema.get("properties")
            assert isinstance(properties, dict), dataset.name
            schema = _resolve(properties["items"], components)
        schema = _resolve(schema["items"], components)
    return schema


def service_path_of(path: str, paths: dict[str, Any]) -> str:
    """The owner's path as its OpenAPI document names it: ``{id}`` under the owner's own parameter
    name (``case_id``, ``code``, ``plate`` …)."""
    if "{id}" not in path:
        return path
    head, _, tail = path.partition("{id}")
    for candidate in paths:
        if candidate.startswith(head + "{") and candidate.endswith(tail) and candidate.count("{") == 1:
            return candidate
    raise KeyError(f"{path} is not in the owner's OpenAPI document")


UUID_PATTERN: Final = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def key_of(dataset: Dataset, openapi: dict[str, Any]) -> dict[str, Any] | None:
    """What a record's key may be: the owner's own pattern for it, and the names of the owner's other
    routes at that place (``/v1/cylinders/export`` beside ``/v1/cylinders/{code}``), which a key may
    never be, or the exchange would open those routes with the dataset's scope."""
    path = dataset.item_path if dataset.parent is None else dataset.list_path
    if path is None or "{id}" not in path:
        return None
    paths = openapi["paths"]
    service_path = service_path_of(path, paths)
    head = service_path[: service_path.index("{")]
    parameter = next(p for p in paths[service_path]["get"].get("parameters", []) if p.get("in") == "path")
    schema = _resolve(parameter.get("schema", {}), openapi.get("components", {}).get("schemas", {}))
    pattern = schema.get("pattern") or (UUID_PATTERN if schema.get("format") == "uuid" else None)
    reserved = sorted(
        {
            candidate[len(head) :].split("/", 1)[0]
            for candidate in paths
            if candidate.startswith(head) and not candidate[len(head) :].startswith("{")
        }
    )
    return {"pattern": pattern, "max_length": schema.get("maxLength", 200), "reserved": reserved}


def fields_of(dataset: Dataset, schema: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    """Every field of a record (an object's fields one level down: ``reporter.name``), classified."""
    rows: list[dict[str, Any]] = []
    default = Classification.PUBLIC if dataset.public else Classification.INTERNAL
    properties = schema.get("properties", {})
    assert isinstance(properties, dict)
    for name, raw in sorted(properties.items()):
        prop = _resolve(raw, components)
        nested = prop.get("properties")
        element = _resolve(prop["items"], components) if isinstance(prop.get("items"), dict) else {}
        if isinstance(element.get("properties"), dict) and name not in dataset.personal:
            rows.extend(
                _field(f"{name}[].{child}", _resolve(value, components), dataset, default)
                for child, value in sorted(element["properties"].items())
            )
        elif isinstance(nested, dict) and name not in dataset.personal:
            rows.extend(
                _field(f"{name}.{child}", _resolve(value, components), dataset, default)
                for child, value in sorted(nested.items())
            )
        else:
            rows.append(_field(name, prop, dataset, default))
    return rows


def _field(path: str, schema: dict[str, Any], dataset: Dataset, default: Classification) -> dict[str, Any]:
    kind = dataset.personal.get(path)
    row: dict[str, Any] = {
        "name": path,
        "type": schema.get("type", "object" if "properties" in schema else "any"),
        "classification": (Classification.PERSONAL if kind else default).value,
    }
    if kind is not None:
        row["personal_kind"] = kind.value
    if "format" in schema:
        row["format"] = schema["format"]
    if schema.get("nullable"):
        row["nullable"] = True
    return row


def example_of(
    schema: dict[str, Any],
    components: dict[str, Any],
    personal: dict[str, PersonalKind],
    at: str = "",
) -> object:
    """A made-up record that fits the schema; personal fields carry a person's (invented) data."""
    kind = personal.get(at)
    if kind is not None:
        return EXAMPLE_PERSONAL[kind]
    schema = _resolve(schema, components)
    if "enum" in schema and isinstance(schema["enum"], list):
        return schema["enum"][0]
    properties = schema.get("properties")
    if isinstance(properties, dict):
        return {
            name: example_of(value, components, personal, f"{at}.{name}" if at else name)
            for name, value in sorted(properties.items())
        }
    kind_of = schema.get("type")
    fmt = schema.get("format")
    if kind_of == "array":
        element = schema.get("items")
        if isinstance(element, dict) and "properties" in _resolve(element, components):
            return [example_of(element, components, personal, f"{at}[]")]
        return []
    if kind_of == "integer":
        return int(schema.get("minimum", 1))
    if kind_of == "number":
        return float(schema.get("minimum", 1.5))
    if kind_of == "boolean":
        return False
    if fmt == "date-time":
        return "2026-12-04T09:30:00+08:00"
    if fmt == "date":
        return "2026-12-04"
    if fmt == "uuid":
        return "0f6c3c1e-8f1a-4d8e-9a53-2b7d4c1f9e21"
    if kind_of == "string":
        return "…"
    return None


def _paged(dataset: Dataset, openapi: dict[str, Any]) -> bool | None:
    """Whether the owner's list pages by cursor (``limit``, ``cursor``); None: no list."""
    if dataset.list_path is None:
        return None
    paths = openapi["paths"]
    parameters = paths[service_path_of(dataset.list_path, paths)]["get"].get("parameters", [])
    return any(p.get("in") == "query" and p.get("name") == "cursor" for p in parameters)


def document(openapis: dict[str, Any]) -> dict[str, Any]:
    """The catalogue as ``GET /exchange/v1/datasets`` serves it, from the owners' OpenAPI documents."""
    items = []
    for dataset in DATASETS:
        openapi = openapis[dataset.owner]
        components = openapi.get("components", {}).get("schemas", {})
        schema = item_schema(dataset, openapi)
        fields = fields_of(dataset, schema, components)
        items.append(
            {
                "name": dataset.name,
                "title": dataset.title,
                "owner": dataset.owner,
                "paths": exchange_paths(dataset),
                "scopes": {
                    "read": sorted({dataset.read_scope, owner_read_scope(dataset)}),
                    "personal": ["pii:read", dataset.pii_scope],
                },
                "district_bound": any(f["name"] == "district_code" for f in fields),
                "key": key_of(dataset, openapi),
                "paged": _paged(dataset, openapi),
                "fields": fields,
                "events": list(dataset.events),
                "example": example_of(schema, components, dataset.personal),
            }
        )
    return {"items": items, "next_cursor": None}
