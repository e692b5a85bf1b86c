"""Each service's Alembic history builds exactly the tables its models declare."""

from __future__ import annotations

import asyncio
import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import KitBase
from citygrid.settings import to_asyncpg_url
from gateway.models import Base as GatewayBase
from services.case.models import Base as CaseBase
from services.gas.models import Base as GasBase
from services.muck.models import Base as MuckBase
from services.vision.models import Base as VisionBase

SERVICES = {
    "services.case": CaseBase.metadata,
    "services.vision": VisionBase.metadata,
    "services.gas": GasBase.metadata,
    "services.muck": MuckBase.metadata,
    "gateway": GatewayBase.metadata,
}


PARTITION_NAME = re.compile(r"_\d{6}(\d{2})?$")  # <parent>_YYYYMM or <parent>_YYYYMMDD


def _not_of_a_partition(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Partitions are made by the services at run time (citygrid.partitions), each with the indexes
    its parent declares: such a table, and its indexes, are not the models' to declare."""
    if not reflected or compare_to is not None:
        return True
    if type_ == "table":
        return PARTITION_NAME.search(str(name)) is None
    table = getattr(obj, "table", None)
    return type_ != "index" or table is None or PARTITION_NAME.search(table.name) is None


@pytest.mark.parametrize("package", sorted(SERVICES))
def test_migrations_match_the_models(infrastructure, package):
    url = infrastructure.database(package)
    metadata: list[MetaData] = [SERVICES[package], KitBase.metadata]

    async def differences() -> list[object]:
        engine = create_async_engine(to_asyncpg_url(url))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(
                            sync, opts={"compare_type": True, "include_object": _not_of_a_partition}
                        ),
                        metadata,
                    )
                )
        finally:
            await engine.dispose()

    assert asyncio.run(differences()) == []
