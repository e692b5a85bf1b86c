"""Base of every request model (unknown fields refused, whitespace trimmed, no NUL characters), and the
answer of a batch import.

PostgreSQL text cannot hold NUL (U+0000); refusing it at the boundary turns what would be a
database error into a 422 naming the field.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def _no_nul(value: Any, name: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{name}: text may not contain the NUL character")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _no_nul(item, name)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, name)
            _no_nul(item, name)


def may_hold_text(annotation: Any) -> bool:
    """Whether a field of this type can carry free text once parsed: ``str`` and ``Any``, alone or in
    a union, a list or a dict. An enum, a literal, a number, a time or a nested model cannot (a
    nested request model checks its own fields)."""
    if annotation is str or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return False
    if isinstance(annotation, type):
        return issubclass(annotation, str) and not issubclass(annotation, Enum)
    return any(may_hold_text(argument) for argument in get_args(annotation))


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # The fields that can hold text, found once per model class (not a validator call per field
    # of every item of a batch).
    _text_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._text_fields = tuple(
            name for name, field in cls.model_fields.items() if may_hold_text(field.annotation)
        )

    @model_validator(mode="after")
    def _refuse_nul(self) -> Self:
        for name in self._text_fields:
            _no_nul(getattr(self, name), name)
        return self


class Refusal(BaseModel):
    """One item of a batch that was not taken, and why (a ``code`` as in problem+json)."""

    index: int
    key: str
    code: str
    detail: str


class IntakeResult(BaseModel):
    """What a batch of reports did: how many were received and stored, each refused with its reason."""

    received: int
    stored: int
    refused: list[Refusal]


class ImportResult(BaseModel):
    """What a batch import did: every item created, updated or refused with its reason."""

    received: int
    created: int
    updated: int
    refused: list[Refusal]
