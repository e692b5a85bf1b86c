"""Masking of personal data (phones, names, ID numbers, addresses) for callers without ``pii:read``."""

from __future__ import annotations

PII_SCOPE = "pii:read"


def mask_phone(phone: str | None) -> str | None:
    """Keep the first three and last four digits: 138****5678."""
    if phone is None:
        return None
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_name(name: str | None) -> str | None:
    """Keep the first character: 张**."""
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_id_number(number: str | None) -> str | None:
    """Keep the six-digit region prefix and the last four: 440106********1234."""
    if number is None:
        return None
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_address(address: str | None, keep: int = 6) -> str | None:
    if address is None:
        return None
    return address[:keep] + ("***" if len(address) > keep else "")
