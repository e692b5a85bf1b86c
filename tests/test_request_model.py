"""The kit's request models refuse NUL in any field that can hold text, and only look at those."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
import pytest
from pydantic import Field

from citygrid.schemas import RequestModel


class Kind(StrEnum):
    BIN = "bin"


class Line(RequestModel):
    note: str


class Report(RequestModel):
    title: Annotated[str, Field(max_length=50)] | None = None
    tags: list[str] = []
    extra: dict[str, Any] = {}
    kind: Kind = Kind.BIN
    shape: Literal["point"] = "point"
    count: int = 0
    lines: list[Line] = []


def test_the_fields_that_can_hold_text_are_found_once_per_model() -> None:
    assert Report._text_fields == ("title", "tags", "extra")
    assert Line._text_fields == ("note",)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "bin\x00full"}, "title"),
        ({"tags": ["ok", "n\x00"]}, "tags"),
        ({"extra": {"k\x00": 1}}, "extra"),
        ({"extra": {"k": ["deep\x00"]}}, "extra"),
        ({"lines": [{"note": "q\x00"}]}, "note"),
    ],
)
def test_a_nul_anywhere_in_text_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Report.model_validate(body)
    assert f"{field}: text may not contain the NUL character" in str(refused.value)


def test_text_without_nul_is_taken_and_trimmed() -> None:
    report = Report.model_validate({"title": "  overflowing bin ", "tags": ["a"], "lines": [{"note": "n"}]})
    assert (report.title, report.tags, report.lines[0].note) == ("overflowing bin", ["a"], "n")
