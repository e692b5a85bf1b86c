"""Open311 GeoReport v2 documents as bytes: the same payload rendered as JSON or as the spec's XML.

XML is the format the spec requires; JSON mirrors it. A list becomes repeated child elements named
by the singular of the list's own name (``services`` → ``<service>``), booleans are ``true`` and
``false``, and a missing value is an empty element, as the spec's examples show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any
from xml.etree import ElementTree

from citygrid.errors import NotFound


class Format(StrEnum):
    JSON = "json"
    XML = "xml"


CONTENT_TYPES: dict[Format, str] = {
    Format.XML: "text/xml; charset=utf-8",
    Format.JSON: "application/json; charset=utf-8",
}
# What discovery lists as the endpoint's formats (media types without parameters).
MEDIA_TYPES: tuple[str, ...] = ("text/xml", "application/json")

# The element each repeated item gets, by the name of its list.
SINGULAR: dict[str, str] = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}

# Characters XML 1.0 cannot carry at all; a description typed on a phone can hold them.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class UnknownFormat(NotFound):
    code = "open311.unknown_format"
    title = "Unknown format"


def format_of(extension: str) -> Format:
    try:
        return Format(extension.lower())
    except ValueError:
        raise UnknownFormat(f"no format '{extension}': use .xml or .json") from None


def format_of_path(path: str) -> Format:
    """The format a path asks for, XML (the spec's required one) when it names none we know."""
    _, dot, extension = path.rpartition(".")
    if dot and extension.lower() in (Format.JSON.value, Format.XML.value):
        return Format(extension.lower())
    return Format.XML


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _fill(element: ElementTree.Element, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ElementTree.SubElement(element, str(key)), str(key), item)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        child_name = SINGULAR.get(name, "item")
        for item in value:
            _fill(ElementTree.SubElement(element, child_name), child_name, item)
    else:
        element.text = _text(value)


def to_xml(root: str, payload: Any) -> bytes:
    """``payload`` under a ``<root>`` element, with the XML declaration the spec asks for."""
    element = ElementTree.Element(root)
    _fill(element, root, payload)
    return _XML_DECLARATION + ElementTree.tostring(element, encoding="unicode").encode()


def render(fmt: Format, root: str, payload: Any) -> bytes:
    """JSON is the payload itself (a list or an object); XML wraps it in ``<root>``."""
    if fmt is Format.JSON:
        return json.dumps(payload, ensure_ascii=False).encode()
    return to_xml(root, payload)


def error_payload(status: int, descriptions: Sequence[str], problem: str) -> list[dict[str, Any]]:
    """The spec's errors: ``code`` is the HTTP status; ``problem`` is CityGrid's stable code."""
    return [{"code": status, "description": description, "problem": problem} for description in descriptions]
