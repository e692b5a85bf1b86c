"""Cylinder identifiers in EPCIS: the GS1 GRAI (AI 8003) in its forms, and our own city codes.

A GRAI (Global Returnable Asset Identifier) is 14 digits (a filler ``0``, the GS1 company prefix,
the asset type, a mod-10 check digit) and an optional serial of up to 16 characters from GS1's
AI 82 character set. It travels in three forms, all of which ``parse_grai`` reads:

- the EPC pure identity URI ``urn:epc:id:grai:<CompanyPrefix>.<AssetType>.<Serial>`` (EPC Tag
  Data Standard; the filler and the check digit are left out, the dot says where the company
  prefix ends);
- a GS1 Digital Link URI ``https://<any host>[/<path>]/8003/<14 digits><serial>``, on
  ``id.gs1.org`` or a brand's own domain, maybe followed by more path or a query;
- the bare element string ``8003<14 digits><serial>`` or ``(8003)<14 digits><serial>``.

Our canonical cylinder code is the 14 digits followed by the serial. A cylinder the city coded
itself (``CylinderCode`` of the contract, not a GS1 key) travels as ``urn:citygrid:cylinder:<code>``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from pydantic import TypeAdapter, ValidationError

from contract.gas import CylinderCode

CITY_CYLINDER_URN_PREFIX = "urn:citygrid:cylinder:"
GRAI_EPC_URI_PREFIX = "urn:epc:id:grai:"

AI82_CHARACTERS = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
"""GS1 General Specifications, figure 7.11-1: the characters of an AI 82 value such as a GRAI serial."""

GRAI_SERIAL_MAX_LENGTH = 16

# The characters of an EPC URI component the Tag Data Standard writes as %HH; the rest are literal.
_EPC_URI_ESCAPES = {'"': "%22", "%": "%25", "&": "%26", "/": "%2F", "<": "%3C", ">": "%3E", "?": "%3F"}
_EPC_URI_UNESCAPES = {escape: char for char, escape in _EPC_URI_ESCAPES.items()}
_EPC_URI_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")

_DIGITS = re.compile(r"[0-9]+")
_GRAI_EPC_BODY = re.compile(r"(?P<prefix>[0-9]{6,12})\.(?P<asset>[0-9]{0,6})\.(?P<serial>.+)")
_DIGITAL_LINK = re.compile(
    r"https?://[^/?#]+(?:/[^?#]*?)?/8003/(?P<value>[^/?#]+)(?:[/?#].*)?", re.IGNORECASE
)
_ELEMENT_STRING = re.compile(r"(?:\(8003\)|8003)(?P<value>.+)")

_CITY_CODE = TypeAdapter(CylinderCode)


class UnknownIdentifier(ValueError):
    """The value is not a cylinder identifier in any form we read (or its check digit is wrong)."""


def gs1_check_digit(digits: str) -> str:
    """GS1 mod-10 check digit of a digit string: weights 3, 1, 3, … from the rightmost digit."""
    if not _DIGITS.fullmatch(digits):
        raise UnknownIdentifier(f"{digits!r} is not a string of digits")
    total = sum(
        int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(digits))
    )
    return str(-total % 10)


def grai_check_digit(first13: str) -> str:
    """The 14th digit of a GRAI whose first 13 digits (filler, company prefix, asset type) are given."""
    if len(first13) != 13 or not _DIGITS.fullmatch(first13):
        raise UnknownIdentifier(f"{first13!r} is not the 13 leading digits of a GRAI")
    return gs1_check_digit(first13)


def _checked_grai(value: str, source: str) -> str:
    """``value`` = 14 digits + serial (unescaped), verified; returns it as our canonical code."""
    digits, serial = value[:14], value[14:]
    if len(digits) != 14 or not _DIGITS.fullmatch(digits):
        raise UnknownIdentifier(f"{source!r}: a GRAI starts with 14 digits")
    if digits[0] != "0":
        raise UnknownIdentifier(f"{source!r}: the first digit of a GRAI is the filler 0, not {digits[0]}")
    expected = grai_check_digit(digits[:13])
    if digits[13] != expected:
        raise UnknownIdentifier(f"{source!r}: wrong GRAI check digit {digits[13]} (expected {expected})")
    if len(serial) > GRAI_SERIAL_MAX_LENGTH:
        raise UnknownIdentifier(f"{source!r}: a GRAI serial has at most {GRAI_SERIAL_MAX_LENGTH} characters")
    outside = sorted(set(serial) - AI82_CHARACTERS)
    if outside:
        raise UnknownIdentifier(
            f"{source!r}: the GRAI serial holds characters outside GS1's AI 82 set: {outside}"
        )
    return digits + serial


def _unescape_epc_component(component: str, source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = _EPC_URI_UNESCAPES.get(match.group(0).upper())
        if char is None:
            raise UnknownIdentifier(f"{source!r}: {match.group(0)} is not an escape of the EPC URI syntax")
        return char

    raw = _EPC_URI_ESCAPE.sub("", component)
    literal_forbidden = sorted(set(raw) & set(_EPC_URI_ESCAPES))
    if literal_forbidden:
        raise UnknownIdentifier(f"{source!r}: {literal_forbidden} must be %-escaped in an EPC URI")
    return _EPC_URI_ESCAPE.sub(replace, component)


def parse_grai(identifier: str) -> str:
    """The canonical cylinder code (14 digits + serial) of a GRAI in any of its three forms.

    Raises ``UnknownIdentifier`` for anything that is not a GRAI, or one with a wrong check digit.
    """
    if identifier.lower().startswith(GRAI_EPC_URI_PREFIX):
        body = _GRAI_EPC_BODY.fullmatch(identifier[len(GRAI_EPC_URI_PREFIX) :])
        if body is None or len(body["prefix"]) + len(body["asset"]) != 12:
            raise UnknownIdentifier(
                f"{identifier!r}: a GRAI EPC URI is urn:epc:id:grai:<company prefix>.<asset type>.<serial>, "
                "with 12 digits in prefix and asset type together"
            )
        first13 = "0" + body["prefix"] + body["asset"]
        serial = _unescape_epc_component(body["serial"], identifier)
        return _checked_grai(first13 + grai_check_digit(first13) + serial, identifier)
    link = _DIGITAL_LINK.fullmatch(identifier)
    if link is not None:
        return _checked_grai(unquote(link["value"]), identifier)
    element = _ELEMENT_STRING.fullmatch(identifier)
    if element is not None:
        return _checked_grai(element["value"], identifier)
    raise UnknownIdentifier(
        f"{identifier!r} is not a GRAI (EPC URI, GS1 Digital Link or AI 8003 element string)"
    )


def _looks_like_grai(identifier: str) -> bool:
    return (
        identifier.lower().startswith(GRAI_EPC_URI_PREFIX)
        or _DIGITAL_LINK.fullmatch(identifier) is not None
        or _ELEMENT_STRING.fullmatch(identifier) is not None
    )


def is_grai_code(code: str) -> bool:
    """Whether a canonical cylinder code reads as a GRAI (filler 0, right check digit, AI 82 serial)."""
    try:
        _checked_grai(code, code)
    except UnknownIdentifier:
        return False
    return True


def grai_epc_uri(code: str, company_prefix_length: int) -> str:
    """The EPC pure identity URI of a canonical GRAI code with a serial; the company prefix length
    (6 to 12 digits) is not in the code itself and comes from the GS1 member organisation."""
    if not 6 <= company_prefix_length <= 12:
        raise ValueError(f"a GS1 company prefix has 6 to 12 digits, not {company_prefix_length}")
    canonical = _checked_grai(code, code)
    serial = canonical[14:]
    if not serial:
        raise UnknownIdentifier(f"{code!r}: a GRAI without serial names an asset type and has no EPC URI")
    prefix = canonical[1 : 1 + company_prefix_length]
    asset = canonical[1 + company_prefix_length : 13]
    escaped = "".join(_EPC_URI_ESCAPES.get(char, char) for char in serial)
    return f"{GRAI_EPC_URI_PREFIX}{prefix}.{asset}.{escaped}"


def is_city_code(value: str) -> bool:
    """Whether ``value`` is one of our own cylinder codes (the contract's ``CylinderCode``), which
    never look like a URI."""
    if value.lower().startswith(("urn:", "http")):
        return False
    try:
        _CITY_CODE.validate_python(value)
    except ValidationError:
        return False
    return True


def parse_cylinder_identifier(identifier: str) -> str:
    """The canonical cylinder code of an EPCIS identifier: a GRAI in any form, or
    ``urn:citygrid:cylinder:<city code>``. Raises ``UnknownIdentifier`` for anything else."""
    if identifier.lower().startswith(CITY_CYLINDER_URN_PREFIX):
        code = identifier[len(CITY_CYLINDER_URN_PREFIX) :]
        if not is_city_code(code):
            raise UnknownIdentifier(f"{identifier!r}: {code!r} is not a city cylinder code")
        return code
    if not _looks_like_grai(identifier):
        raise UnknownIdentifier(f"{identifier!r} is neither a GRAI nor {CITY_CYLINDER_URN_PREFIX}<code>")
    code = parse_grai(identifier)
    if not is_city_code(code):
        raise UnknownIdentifier(
            f"{identifier!r}: the GRAI serial holds characters a cylinder code cannot carry"
        )
    return code
