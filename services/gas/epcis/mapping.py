"""EPCIS ObjectEvents ↔ our cylinder scans: which CBV business step is which scan, and the way back.

A scan is one of eight things done to cylinders; in EPCIS it is an ObjectEvent whose ``epcList``
names the cylinders (GRAI in any form, or ``urn:citygrid:cylinder:<code>``) and whose ``bizStep``
says what was done:

==========  ===============================================  ======================================
scan        bizStep                                          action, and what else it needs
==========  ===============================================  ======================================
commission  ``commissioning``                                ADD
fill        ``urn:citygrid:bizstep:filling`` (ours)          OBSERVE or ADD; one cylinder; the net
                                                             mass in kg as the event-level extension
                                                             field ``urn:citygrid:netMassKg``
dispatch    ``shipping``                                     OBSERVE or ADD
deliver     ``receiving`` (at the user)                      OBSERVE or ADD
recover     ``collecting``, or ``receiving`` with            OBSERVE or ADD
            disposition ``returned``
inspect     ``inspecting``                                   OBSERVE or ADD; disposition
                                                             ``conformant`` (passed) or
                                                             ``non_conformant`` (failed)
void        ``decommissioning`` (the code stops naming it)   DELETE or OBSERVE
scrap       ``destroying``                                   DELETE or OBSERVE
==========  ===============================================  ======================================

CBV has no "returning" step: an empty cylinder taken back from a user is ``collecting`` (CBV 2.0:
"picked up and collected for future disposal, recycling or re-use", its example being leased
pallets brought to a collection centre), or ``receiving`` of something ``returned``. EPCIS defines
action DELETE as "the identifiers cease to exist", so it comes with decommissioning and destroying
only; any other step with DELETE is refused.

A CBV value may be written as the bare term (``shipping``), as its full URI
(``https://ref.gs1.org/cbv/BizStep-shipping``) or as a compact IRI (``cbv:BizStep-shipping``).
Compact IRIs are expanded with the prefixes the document's and the event's ``@context`` objects
declare (a string value, or an object with an ``@id``), over the ``cbv`` prefix of GS1's EPCIS
context; so ``cg:filling`` with ``{"cg": "urn:citygrid:bizstep:"}`` is our filling step, and
``cg:netMassKg`` with ``{"cg": "urn:citygrid:"}`` our net mass field. Remote contexts are never
fetched.

Everything else is ``Unmappable``: other event types, other steps, identifiers that are not cylinder
codes (or a GRAI without serial, which names an asset type rather than a cylinder), events that
count cylinders by class (quantityList only), error declarations (they correct an earlier event),
and an inspection without a verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from services.gas.epcis.codes import (
    CITY_CYLINDER_URN_PREFIX,
    UnknownIdentifier,
    grai_epc_uri,
    is_city_code,
    is_grai_code,
    parse_cylinder_identifier,
)
from services.gas.epcis.models import (
    EPCISDocument,
    EpcisEvent,
    EPCISQueryDocument,
    JsonLdContext,
    ObjectEvent,
    is_uri,
)

SCAN_KINDS = ("commission", "fill", "dispatch", "deliver", "recover", "inspect", "scrap", "void")

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
CBV_NAMESPACE = "https://ref.gs1.org/cbv/"
FILLING_BIZ_STEP = "urn:citygrid:bizstep:filling"
NET_MASS_FIELD = "urn:citygrid:netMassKg"
"""Our event-level extension field of a filling: the net mass of gas filled, in kilograms (a number)."""

DEFAULT_PREFIXES: Mapping[str, str] = {"cbv": CBV_NAMESPACE}
"""The prefix GS1's EPCIS 2.0 context declares for CBV terms, known without fetching the context."""

_STEP_KINDS = {
    "commissioning": "commission",
    FILLING_BIZ_STEP: "fill",
    "shipping": "dispatch",
    "receiving": "deliver",
    "collecting": "recover",
    "inspecting": "inspect",
    "decommissioning": "void",
    "destroying": "scrap",
}
_KIND_STEPS = {
    "commission": "commissioning",
    "fill": FILLING_BIZ_STEP,
    "dispatch": "shipping",
    "deliver": "receiving",
    "recover": "collecting",
    "inspect": "inspecting",
    "void": "decommissioning",
    "scrap": "destroying",
}
_KIND_DISPOSITIONS = {
    "commission": "active",
    "dispatch": "in_transit",
    "void": "inactive",
    "scrap": "destroyed",
}
_DELETING_KINDS = frozenset({"void", "scrap"})
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


@dataclass(frozen=True)
class MappedScan:
    """One scan of cylinders, as an EPCIS ObjectEvent tells it (neutral: no domain types)."""

    kind: str  # one of SCAN_KINDS
    cylinder_codes: tuple[str, ...]
    at: datetime  # eventTime, aware, in the event's own time zone offset
    read_point: str | None
    biz_location: str | None
    passed: bool | None = None  # inspect: disposition conformant → True, non_conformant → False
    net_mass_kg: float | None = None  # fill: the NET_MASS_FIELD extension
    event_id: str | None = None


class Unmappable(ValueError):
    """An event that is no cylinder scan of ours, with the reason (and its index in a document)."""

    def __init__(self, reason: str, *, event_index: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_index = event_index


# --- JSON-LD prefixes and CBV terms -----------------------------------------------------------------


def context_prefixes(context: JsonLdContext | None) -> dict[str, str]:
    """The prefixes an ``@context`` declares inline (later definitions win, as in JSON-LD)."""
    entries = context if isinstance(context, list) else [context]
    prefixes: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue  # a remote context: never fetched
        for term, definition in entry.items():
            if term.startswith("@"):
                continue
            if isinstance(definition, dict):
                definition = definition.get("@id")
            if isinstance(definition, str):
                prefixes[term] = definition
    return prefixes


def expand(value: str, prefixes: Mapping[str, str]) -> str:
    """A compact IRI (``prefix:suffix``) expanded with ``prefixes``; anything else unchanged."""
    prefix, colon, suffix = value.partition(":")
    if colon and prefix in prefixes and not suffix.startswith("//"):
        return prefixes[prefix] + suffix
    return value


def cbv_term(value: str, vocabulary: str, prefixes: Mapping[str, str] = DEFAULT_PREFIXES) -> str:
    """The bare CBV term of a value of ``vocabulary`` (``BizStep``, ``Disp``, …) in any spelling;
    a value outside CBV comes back expanded but otherwise as it is."""
    expanded = expand(value, prefixes)
    for stem in (f"{CBV_NAMESPACE}{vocabulary}-", f"urn:epcglobal:cbv:{vocabulary.lower()}:"):
        if expanded.startswith(stem):
            return expanded[len(stem) :]
    return expanded


# --- EPCIS → scans ----------------------------------------------------------------------------------


def _time_zone(offset: str) -> timezone:
    match = _OFFSET.fullmatch(offset)
    if match is None:  # the model has checked the pattern already
        raise Unmappable(f"eventTimeZoneOffset {offset!r} is not ±HH:MM")
    sign = -1 if match[1] == "-" else 1
    return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))


def _cylinder_codes(event: ObjectEvent) -> tuple[str, ...]:
    if not event.epc_list:
        if event.quantity_list:
            raise Unmappable(
                "the event counts objects by class (quantityList only); a scan names each cylinder"
            )
        raise Unmappable("the event names no cylinder (empty or no epcList)")
    codes: list[str] = []
    for index, identifier in enumerate(event.epc_list):
        try:
            code = parse_cylinder_identifier(identifier)
        except UnknownIdentifier as error:
            raise Unmappable(f"epcList[{index}] is not a cylinder code: {error}") from None
        if len(code) == 14 and not identifier.lower().startswith(CITY_CYLINDER_URN_PREFIX):
            raise Unmappable(
                f"epcList[{index}] {identifier!r} is a GRAI without serial: an asset type, not one cylinder"
            )
        if code not in codes:  # the same cylinder in two identifier syntaxes is one cylinder
            codes.append(code)
    return tuple(codes)


def _net_mass_kg(event: ObjectEvent, prefixes: Mapping[str, str]) -> float:
    for name, value in event.extensions.items():
        if expand(name, prefixes) != NET_MASS_FIELD:
            continue
        kilograms = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                kilograms = float(value)
            except OverflowError:  # a JSON integer beyond any float
                kilograms = math.inf
        if not math.isfinite(kilograms) or kilograms <= 0:
            raise Unmappable(f"{name} is the net mass in kilograms, a positive number, not {value!r}")
        return kilograms
    raise Unmappable(f"a filling event carries the net mass in kilograms as {NET_MASS_FIELD}")


def _check_action(event: ObjectEvent, step: str, kind: str) -> None:
    if kind == "commission" and event.action != "ADD":
        raise Unmappable(f"commissioning is action ADD (the code is issued), not {event.action}")
    if kind in _DELETING_KINDS and event.action == "ADD":
        raise Unmappable(f"{step} with action ADD would issue the code it retires")
    if kind not in _DELETING_KINDS and event.action == "DELETE":
        raise Unmappable(
            f"action DELETE says the identifiers cease to exist: only decommissioning and destroying delete, not {step}"
        )


def map_event(event: EpcisEvent, *, prefixes: Mapping[str, str] | None = None) -> MappedScan:
    """The scan an ObjectEvent tells; ``prefixes`` are the document's (``context_prefixes``).

    Raises ``Unmappable`` with the reason for any event that is no cylinder scan of ours.
    """
    if not isinstance(event, ObjectEvent):
        raise Unmappable(f"{event.type} is not a cylinder scan: only ObjectEvents are mapped")
    known = {**DEFAULT_PREFIXES, **(prefixes or {}), **context_prefixes(event.context)}
    if event.error_declaration is not None:
        raise Unmappable("an error declaration corrects an earlier event; it is not a new scan")
    if event.biz_step is None:
        raise Unmappable("the event has no bizStep, so it does not say what was done")
    step = cbv_term(event.biz_step, "BizStep", known)
    disposition = None if event.disposition is None else cbv_term(event.disposition, "Disp", known)
    kind = _STEP_KINDS.get(step)
    if kind is None:
        raise Unmappable(f"bizStep {event.biz_step!r} is no step of a cylinder's life we record")
    if kind == "deliver" and disposition == "returned":
        kind = "recover"
    _check_action(event, step, kind)
    codes = _cylinder_codes(event)
    passed = None
    if kind == "inspect":
        if disposition not in {"conformant", "non_conformant"}:
            raise Unmappable(
                "an inspecting event gives its verdict as disposition conformant or non_conformant"
            )
        passed = disposition == "conformant"
    net_mass_kg = None
    if kind == "fill":
        if len(codes) != 1:
            raise Unmappable(
                f"a filling event names one cylinder (its net mass is one cylinder's), not {len(codes)}"
            )
        net_mass_kg = _net_mass_kg(event, known)
    return MappedScan(
        kind=kind,
        cylinder_codes=codes,
        at=event.event_time.astimezone(_time_zone(event.event_time_zone_offset)),
        read_point=None if event.read_point is None else event.read_point.id,
        biz_location=None if event.biz_location is None else event.biz_location.id,
        passed=passed,
        net_mass_kg=net_mass_kg,
        event_id=event.event_id,
    )


def map_document(document: EPCISDocument | EPCISQueryDocument) -> list[MappedScan]:
    """Every event of a document as a scan, or ``Unmappable`` for the first event that is none
    (with its index): a document is taken whole or not at all."""
    prefixes = context_prefixes(document.context)
    scans = []
    for index, event in enumerate(document.events):
        try:
            scans.append(map_event(event, prefixes=prefixes))
        except Unmappable as error:
            raise Unmappable(f"event {index}: {error.reason}", event_index=index) from None
    return scans


# --- scans → EPCIS ----------------------------------------------------------------------------------


def _offset_text(at: datetime) -> str:
    offset = at.utcoffset()
    if offset is None:
        raise ValueError("a scan's time is aware (it carries its UTC offset)")
    minutes, remainder = divmod(offset, timedelta(minutes=1))
    if remainder or not -14 * 60 <= minutes <= 14 * 60:
        raise ValueError(f"EPCIS offsets are whole minutes from -14:00 to +14:00, not {offset}")
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _identifier(code: str, company_prefix_length: int) -> str:
    if not is_city_code(code):
        raise ValueError(f"{code!r} is not a cylinder code")
    if is_grai_code(code) and len(code) > 14:
        return grai_epc_uri(code, company_prefix_length)
    return CITY_CYLINDER_URN_PREFIX + code


def _uri_or_refuse(value: str, what: str) -> str:
    if not is_uri(value):
        raise ValueError(f"{what} {value!r} is not an absolute URI")
    return value


def scan_to_object_event(scan: MappedScan, *, company_prefix_length: int = 7) -> dict[str, Any]:
    """The ObjectEvent (as JSON) that ``map_event`` reads back as ``scan``; it validates against
    GS1's schema inside an ``EPCISDocument``. A GRAI code with serial becomes its EPC URI (the
    company prefix length is not in the code); any other code ``urn:citygrid:cylinder:<code>``."""
    if scan.kind not in SCAN_KINDS:
        raise ValueError(f"{scan.kind!r} is not a scan kind ({', '.join(SCAN_KINDS)})")
    if not scan.cylinder_codes or len(set(scan.cylinder_codes)) != len(scan.cylinder_codes):
        raise ValueError("a scan names one or more cylinders, each once")
    if (scan.kind == "inspect") != (scan.passed is not None):
        raise ValueError("an inspection, and only an inspection, has a verdict (passed)")
    if (scan.kind == "fill") != (scan.net_mass_kg is not None):
        raise ValueError("a fill, and only a fill, has a net mass")
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": scan.at.isoformat(),
        "eventTimeZoneOffset": _offset_text(scan.at),
        "epcList": [_identifier(code, company_prefix_length) for code in scan.cylinder_codes],
        "action": "DELETE"
        if scan.kind in _DELETING_KINDS
        else "ADD"
        if scan.kind == "commission"
        else "OBSERVE",
        "bizStep": _KIND_STEPS[scan.kind],
    }
    if scan.event_id is not None:
        event["eventID"] = _uri_or_refuse(scan.event_id, "eventID")
    disposition = _KIND_DISPOSITIONS.get(scan.kind)
    if scan.kind == "inspect":
        disposition = "conformant" if scan.passed else "non_conformant"
    if disposition is not None:
        event["disposition"] = disposition
    if scan.read_point is not None:
        event["readPoint"] = {"id": _uri_or_refuse(scan.read_point, "readPoint")}
    if scan.biz_location is not None:
        event["bizLocation"] = {"id": _uri_or_refuse(scan.biz_location, "bizLocation")}
    if scan.net_mass_kg is not None:
        if len(scan.cylinder_codes) != 1 or not math.isfinite(scan.net_mass_kg) or scan.net_mass_kg <= 0:
            raise ValueError("a fill names one cylinder and a positive net mass")
        event[NET_MASS_FIELD] = scan.net_mass_kg
    return event


def epcis_document(events: list[dict[str, Any]], *, created_at: datetime) -> dict[str, Any]:
    """An EPCISDocument (as JSON) carrying ``events``, with GS1's EPCIS 2.0 context."""
    if created_at.utcoffset() is None:
        raise ValueError("a document's creation date is aware")
    return {
        "@context": [EPCIS_CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created_at.isoformat(),
        "epcisBody": {"eventList": events},
    }
