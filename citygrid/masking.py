"""Masking of personal data (phones, names, ID numbers, addresses) for callers without ``pii:read``."""

from __future__ import annotations

PII_SCOPE = "pii:read"


def mask_phone(phone: str | None) -> str | None:
    """Mobile numbers keep the first three and last four digits (138****5678); shorter ones the last four."""
    if phone is None:
        return None
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    if len(phone) >= 8:
        return "*" * (len(phone) - 4) + phone[-4:]
    return "*" * len(phone)


def mask_name(name: str | None) -> str | None:
    """Keep the first character of names of two or more: 张**; a one-character name is hidden."""
    if not name:
        return name
    if len(name) == 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)


def mask_email(email: str | None) -> str | None:
    """Keep the first character of the mailbox and the domain: l***@example.com."""
    if not email:
        return email
    local, at, domain = email.rpartition("@")
    if not at:
        return "*" * len(email)
    return (local[:1] + "***" if local else "") + "@" + domain


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
