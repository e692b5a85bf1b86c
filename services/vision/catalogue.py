"""The algorithm catalogue as this city runs it: the shipped classes, an admin's edits, camera overrides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.errors import NotFound
from services.vision.domain.catalogue import ALGORITHMS, CATALOGUE_VERSION, Gates, Group, Severity
from services.vision.models import AlgorithmRow, CameraOverride


class UnknownAlgorithm(NotFound):
    code = "vision.unknown_algorithm"
    title = "Unknown algorithm"


@dataclass(frozen=True)
class ActiveAlgorithm:
    code: str
    group: Group
    name_zh: str
    name_en: str
    category_code: str
    gates: Gates
    active: bool


def gates_of(document: dict[str, Any]) -> Gates:
    return Gates(
        min_confidence=float(document["min_confidence"]),
        min_persistence_seconds=float(document["min_persistence_seconds"]),
        dedup_window_seconds=float(document["dedup_window_seconds"]),
        cooldown_seconds=float(document["cooldown_seconds"]),
        severity=Severity(document["severity"]),
        auto_dispatch=bool(document["auto_dispatch"]),
    )


def active_of(row: AlgorithmRow) -> ActiveAlgorithm:
    return ActiveAlgorithm(
        row.code,
        Group(row.group),
        row.name_zh,
        row.name_en,
        row.category_code,
        gates_of(row.gates),
        row.active,
    )


async def sync_shipped_catalogue(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Add the shipped classes this database lacks; an admin's edits are never overwritten."""
    rows = [
        {
            "code": a.code,
            "group": a.group.value,
            "name_zh": a.name_zh,
            "name_en": a.name_en,
            "category_code": a.category_code,
            "gates": a.gates.as_dict(),
            "active": True,
            "catalogue_version": CATALOGUE_VERSION,
        }
        for a in ALGORITHMS
    ]
    async with sessions() as session, session.begin():
        result = await session.execute(insert(AlgorithmRow).values(rows).on_conflict_do_nothing())
    return int(getattr(result, "rowcount", 0) or 0)


async def load_algorithms(session: AsyncSession) -> dict[str, ActiveAlgorithm]:
    rows = await session.scalars(select(AlgorithmRow).order_by(AlgorithmRow.code))
    return {row.code: active_of(row) for row in rows}


class CatalogueCache:
    """This replica's copy of the catalogue, so intake reads no catalogue per batch.

    Loaded at startup and again every ``CITYGRID_CATALOGUE_REFRESH_SECONDS`` by a job
    (``refresh``); the replica that changes a class drops its copy at once (``invalidate``). An
    admin's change is therefore in force in every replica within the refresh period.
    """

    def __init__(self) -> None:
        self._algorithms: dict[str, ActiveAlgorithm] | None = None
        # Bumped by ``invalidate``: a read that began before it must not store what it read.
        self._generation = 0

    async def get(self, session: AsyncSession) -> dict[str, ActiveAlgorithm]:
        """The cached catalogue; read with ``session`` only when there is none yet."""
        if self._algorithms is not None:
            return self._algorithms
        return await self._load(session)

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        async with sessions() as session:
            await self._load(session)
        return 0  # never a "full batch": the job waits its period

    def invalidate(self) -> None:
        self._generation += 1
        self._algorithms = None

    async def _load(self, session: AsyncSession) -> dict[str, ActiveAlgorithm]:
        generation = self._generation
        algorithms = await load_algorithms(session)
        if generation == self._generation:
            self._algorithms = algorithms
        return algorithms


async def get_algorithm(session: AsyncSession, code: str) -> AlgorithmRow:
    row = await session.get(AlgorithmRow, code)
    if row is None:
        raise UnknownAlgorithm(f"no algorithm {code}; see GET /v1/algorithms", algorithm_code=code)
    return row


async def load_overrides(
    session: AsyncSession, camera_ids: Iterable[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    rows = await session.scalars(select(CameraOverride).where(CameraOverride.camera_id.in_(list(camera_ids))))
    return {(row.camera_id, row.algorithm_code): row.gates for row in rows}
