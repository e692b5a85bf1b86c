"""Personal fields masked as the catalogue classifies them: pure, no I/O.

The owner masks what it renders for a caller without ``pii:read`` too; the exchange masks again from
the catalogue, so a field the catalogue calls personal is masked whatever a service forgot. Every
mask is idempotent: a value masked twice reads as masked once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from citygrid.masking import (
    mask_address,
    mask_email,
    mask_id_number,
    mask_name,
    mask_phone,
    mask_plate,
    mask_position,
    mask_text,
)
from contract.catalogue import PersonalKind


def _point(value: Any) -> Any:
    """A GeoJSON point rounded as a person's position is; anything else left out."""
    if isinstance(value, dict) and value.get("type") == "Point":
        coordinates = value.get("coordinates")
        if isinstance(coordinates, list) and len(coordinates) >= 2:
            try:
                lon, lat = mask_position(float(coordinates[0]), float(coordinates[1]))
            except (TypeError, ValueError):
                return None
            return {**value, "coordinates": [lon, lat]}
    return None


def _string(mask: Callable[[str | None], str | None]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        return mask(value) if isinstance(value, str) else None  # an unexpected shape shows nothing

    return apply


MASKS: dict[PersonalKind, Callable[[Any], Any]] = {
    PersonalKind.NAME: _string(mask_name),
    PersonalKind.PHONE: _string(mask_phone),
    PersonalKind.EMAIL: _string(mask_email),
    PersonalKind.ID_NUMBER: _string(mask_id_number),
    PersonalKind.PLATE: _string(mask_plate),
    PersonalKind.ADDRESS: _string(mask_address),
    PersonalKind.TEXT: _string(mask_text),
    PersonalKind.POSITION: _point,
    PersonalKind.IDENTIFIER: lambda value: None,
}


def mask_record(record: Any, personal: Mapping[str, PersonalKind]) -> Any:
    """``record`` with every personal field (``a``, ``a.b``, ``a[].b``) masked in place."""
    for path, kind in personal.items():
        _mask_path(record, path.replace("[]", ".[]").split("."), MASKS[kind])
    return record


def _mask_path(node: Any, steps: list[str], mask: Callable[[Any], Any]) -> None:
    step, rest = steps[0], steps[1:]
    if step == "[]":
        if isinstance(node, list):
            for element in node:
                _mask_path(element, rest, mask)
        return
    if not isinstance(node, dict) or step not in node:
        return
    if rest:
        _mask_path(node[step], rest, mask)
    else:
        node[step] = mask(node[step])


def normalised(body: Any, listing: bool) -> Any:
    """One envelope for every list: ``{items, next_cursor}`` (a service's bare array becomes one page)."""
    if listing and isinstance(body, list):
        return {"items": body, "next_cursor": None}
    if listing and isinstance(body, dict):
        body.setdefault("next_cursor", None)
    return body


def records_of(body: Any, listing: bool) -> list[Any]:
    if listing:
        items = body.get("items") if isinstance(body, dict) else None
        return items if isinstance(items, list) else []
    return [body]
