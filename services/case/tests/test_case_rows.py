"""A case read on the driver (``CaseRow``) carries exactly the table's columns, with their types."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from contract.case import CaseSource, CaseStatus
from services.case.models import Case
from services.case.service import CaseRow


def test_a_case_row_has_every_column_of_the_table_and_nothing_else() -> None:
    fields = [field.name for field in dataclasses.fields(CaseRow)]
    assert fields == [column.name for column in Case.__table__.columns]


def test_a_driver_row_becomes_a_case_row_with_its_enums() -> None:
    now = datetime.now(UTC)
    row: dict[str, Any] = {field.name: None for field in dataclasses.fields(CaseRow)}
    row |= {
        "id": uuid.uuid4(),
        "status": "registered",
        "source": "hotline",
        "version": 3,
        "created_at": now,
        "history": [],  # a column of the read beside the case's: not the case's
    }

    case = CaseRow.of(row)

    assert (case.status, case.source, case.version) == (CaseStatus.REGISTERED, CaseSource.HOTLINE, 3)
    assert case.created_at == now
