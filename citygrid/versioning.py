"""Optimistic concurrency over HTTP: ``ETag: "<version>"`` out, ``If-Match`` required on changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from citygrid.errors import DomainError, PreconditionRequired


class IfMatchRequired(PreconditionRequired):
    code = "http.if_match_required"


class InvalidIfMatch(DomainError):
    code = "http.invalid_if_match"
    status = 400
    title = "Invalid If-Match"


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int:
    """The version a client last saw, from ``If-Match: "3"`` (weak ``W/"3"`` accepted)."""
    if if_match is None:
        raise IfMatchRequired('send If-Match with the ETag you last read, e.g. If-Match: "1"')
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidIfMatch(f"If-Match must be an ETag this API issued, not {if_match[:40]!r}")
    return int(value)


IfMatch = Annotated[str | None, Header(alias="If-Match", description='The ETag last read, e.g. "1".')]
