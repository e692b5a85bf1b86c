"""Base of every request model (unknown fields refused, whitespace trimmed, no NUL characters), and the
answer of a batch import.

PostgreSQL text cannot hold NUL (U+0000); refusing it at the boundary turns what would be a
database error into a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


def _no_nul(value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain the NUL character")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _no_nul(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)
    return value


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        return _no_nul(value)


class Refusal(BaseModel):
    """One item of a batch that was not taken, and why (a ``code`` as in problem+json)."""

    index: int
    key: str
    code: str
    detail: str


class ImportResult(BaseModel):
    """What a batch import did: every item created, updated or refused with its reason."""

    received: int
    created: int
    updated: int
    refused: list[Refusal]
