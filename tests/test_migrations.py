"""Each service's Alembic history builds exactly the tables its models declare."""

from __future__ import annotations

import asyncio

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
                        MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                    )
                )
        finally:
            await engine.dispose()

    assert asyncio.run(differences()) == []
