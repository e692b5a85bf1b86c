"""Each service's Alembic history builds exactly the tables its models declare."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import date, datetime, timedelta

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from citygrid.db import KitBase
from citygrid.devstack.servers import create_databases, database_url
from citygrid.migrate import upgrade
from citygrid.settings import to_asyncpg_url, to_libpq_url
from gateway.models import Base as GatewayBase
from services.case.models import Base as CaseBase
from services.gas.models import Base as GasBase
from services.muck.models import Base as MuckBase
from services.muck.partitions import PARTITIONS
from services.vision.models import Base as VisionBase
from services.waste.models import Base as WasteBase

SERVICES = {
    "services.case": CaseBase.metadata,
    "services.vision": VisionBase.metadata,
    "services.gas": GasBase.metadata,
    "services.muck": MuckBase.metadata,
    "services.waste": WasteBase.metadata,
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


def test_the_positions_index_of_the_muck_rules_is_built_on_the_partitions_a_running_service_made(
    infrastructure,
):
    """0002 on a database whose ``positions`` already has partitions and rows: each partition's
    index is built and attached, and the parent's index is valid."""

    name = f"test_muck_upgrade_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_databases(infrastructure.server_url, [name]))
    url = database_url(infrastructure.server_url, name)
    upgrade("services.muck", url, "0001")

    async def partitioned_with_rows() -> None:
        engine = create_async_engine(to_asyncpg_url(url))
        try:
            await PARTITIONS.ensure(async_sessionmaker(engine), date.today())
        finally:
            await engine.dispose()
        connection = await asyncpg.connect(to_libpq_url(url))
        try:
            await connection.execute(
                "INSERT INTO positions (plate, at, lon, lat, speed_kmh, direction, alarm, status, source, "
                "blind_area, received_at) VALUES ('粤A00001D', $1, 113.3, 23.1, 0, 0, 0, 0, 'http', false, now())",
                datetime.now().astimezone() - timedelta(hours=1),
            )
        finally:
            await connection.close()

    async def indexes() -> tuple[bool, int, int, int]:
        connection = await asyncpg.connect(to_libpq_url(url))
        try:
            valid = await connection.fetchval(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'ix_positions_txid'"
            )
            attached = await connection.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ix_positions_txid'::regclass"
            )
            partitions = await connection.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'positions'::regclass"
            )
            # Summarized as pages fill (0004), on the partitions made before and after alike.
            summarizing = await connection.fetchval(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'ix_positions_txid'::regclass AND 'autosummarize=on' = ANY(c.reloptions)"
            )
            return bool(valid), int(attached), int(partitions), int(summarizing)
        finally:
            await connection.close()

    asyncio.run(partitioned_with_rows())
    upgrade("services.muck", url)
    valid, attached, partitions, summarizing = asyncio.run(indexes())
    assert partitions > 1
    assert (valid, attached, summarizing) == (True, partitions, partitions)
    upgrade("services.muck", url)  # again: nothing to do, nothing fails
