"""A register's batch imports by key, the same in every service: rows created or updated in one
statement, each refusal with its reason in the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, case, func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.schemas import ImportResult, Refusal


async def upsert_by_key(
    session: AsyncSession,
    model: type[Any],
    key: str,
    rows: Sequence[dict[str, Any]],
    also_set: dict[str, Any] | None = None,
) -> int:
    """Insert or update ``model``'s rows by ``key`` (its table has ``version`` and ``updated_at``);
    returns how many were created. ``also_set``: more columns set on an update, as expressions.

    A row sent again unchanged is left alone: its version and ``updated_at`` move only when a value
    differs, so a nightly re-import of a whole register changes nothing that reads them.
    """
    if not rows:
        return 0
    table = cast(Table, model.__table__)
    values = insert(table).values(list(rows))
    changed = [name for name in rows[0] if name != key]
    upsert = values.on_conflict_do_update(
        index_elements=[key],
        set_={
            **{name: values.excluded[name] for name in changed},
            **(also_set or {}),
            "version": table.c.version + 1,
            "updated_at": func.now(),
        },
        where=or_(*(table.c[name].is_distinct_from(values.excluded[name]) for name in changed)),
    ).returning(table.c.version)
    return sum(1 for version in (await session.scalars(upsert)).all() if version == 1)


def import_result(received: int, rows: int, created: int, refused: list[Refusal]) -> ImportResult:
    """``rows`` taken of ``received`` (created or, unchanged or not, updated), the rest refused."""
    return ImportResult(received=received, created=created, updated=rows - created, refused=refused)


def terminal_change_voids_code(model: type[Any]) -> dict[str, Any]:
    """``also_set`` for a register whose vehicles carry a JT/T 808 terminal: another
    ``terminal_phone`` voids the code the old unit registered with, so the new one registers."""
    table = cast(Table, model.__table__)
    new_terminal = table.c.terminal_phone.is_distinct_from(insert(table).excluded.terminal_phone)
    return {
        "auth_code_sha256": case((new_terminal, None), else_=table.c.auth_code_sha256),
        "registered_at": case((new_terminal, None), else_=table.c.registered_at),
    }
