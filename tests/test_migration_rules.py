"""Migrations do not lock hot tables (docs/database.md): the rules, linted on every migration added
from now on, and the kit's helpers and time limits shown on real PostgreSQL.

The lint reads each migration's source (``ast``), so it needs no database: an index built on a table
the migration did not create must be built ``CONCURRENTLY`` (in an autocommit block, or with
``citygrid.migrate.create_index_concurrently``); no raw ``CREATE INDEX`` without ``CONCURRENTLY``;
no ``UPDATE``/``DELETE`` in the migration transaction (``backfill_in_batches``); no constraint added
to an existing table in one locking step.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from citygrid.devstack.servers import create_databases, database_url
from citygrid.migrate import upgrade
from citygrid.settings import MigrationSettings, to_libpq_url
from citygrid.testing import wait_until

ROOT = Path(__file__).resolve().parents[1]
MIGRATION_FILES = sorted(
    path
    for folder in ("services", "gateway")
    for path in (ROOT / folder).glob("**/migrations/versions/*.py")
    if path.name != "__init__.py"
)
KIT_MIGRATIONS = ROOT / "citygrid" / "migrate.py"

# Written before these rules existed (foundation review M13). Their plain index builds ran on new or
# small tables, or in the migration transaction (0008 of the case service: four of them and a full
# UPDATE of cases). They have run everywhere and are never edited again; do NOT add a file here: a
# new migration follows the rules.
HISTORICAL_MIGRATIONS = frozenset(
    {
        "services/case/migrations/versions/0001_cases.py",
        "services/case/migrations/versions/0002_workflow.py",
        "services/case/migrations/versions/0003_categories_calendar_clocks.py",
        "services/case/migrations/versions/0004_grid_duplicates.py",
        "services/case/migrations/versions/0005_units_dispatch_rules.py",
        "services/case/migrations/versions/0006_evidence_check_ins_extensions.py",
        "services/case/migrations/versions/0007_case_origin_evidence.py",
        "services/case/migrations/versions/0008_evaluation.py",
        "services/case/migrations/versions/0009_open311.py",
        "services/case/migrations/versions/0010_kit_v2.py",
        "services/vision/migrations/versions/0001_vision.py",
        "services/vision/migrations/versions/0002_kit_v2.py",
        "gateway/migrations/versions/0001_consumers.py",
        "gateway/migrations/versions/0002_consumer_unit.py",
        "gateway/migrations/versions/0003_kit_v2.py",
    }
)
# The kit's table versions 1 and 2 (citygrid/migrate.py), called by the historical migrations above.
HISTORICAL_KIT_FUNCTIONS = frozenset(
    {
        "create_kit_tables",
        "upgrade_outbox_v2",
        "downgrade_outbox_v2",
        "upgrade_kit_v2",
        "downgrade_kit_v2",
        "drop_kit_tables",
        "create_inbox_tables_v2",
        "drop_inbox_tables_v2",
    }
)

# op.<call>: the position of the table argument (0-based) and its keyword.
TABLE_ARGUMENT = {
    "create_index": (1, "table_name"),
    "create_unique_constraint": (1, "table_name"),
    "create_primary_key": (1, "table_name"),
    "create_check_constraint": (1, "table_name"),
    "create_foreign_key": (1, "source_table"),
}
CONSTRAINTS = {
    "create_unique_constraint": "build a unique index with create_index_concurrently(..., unique=True), "
    "then ALTER TABLE … ADD CONSTRAINT … UNIQUE USING INDEX",
    "create_primary_key": "build a unique index with create_index_concurrently(..., unique=True), "
    "then ALTER TABLE … ADD CONSTRAINT … PRIMARY KEY USING INDEX",
    "create_check_constraint": "ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT in a revision of its own",
    "create_foreign_key": "ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then VALIDATE CONSTRAINT in a revision of its own",
}
# An index ON ONLY a partitioned table builds nothing (its partitions' are built CONCURRENTLY).
PLAIN_INDEX = re.compile(
    r"\bCREATE\s+(UNIQUE\s+)?INDEX\b(?!\s+CONCURRENTLY)(?![^;]*\bON\s+ONLY\b)", re.IGNORECASE
)
WHOLE_TABLE_WRITE = re.compile(r"^\s*(UPDATE|DELETE\s+FROM)\b", re.IGNORECASE)


def _op_call(node: ast.AST) -> str | None:
    """``create_index`` for a call ``op.create_index(…)``, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "op"
    ):
        return node.func.attr
    return None


def _literal(node: ast.AST | None) -> str | None:
    """A string literal's text; an f-string's literal parts (what can be checked of it)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value
            for part in node.values
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
        )
    return None


def _argument(call: ast.Call, position: int, keyword: str) -> ast.AST | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _is_autocommit_block(item: ast.withitem) -> bool:
    expression = item.context_expr
    return (
        isinstance(expression, ast.Call)
        and isinstance(expression.func, ast.Attribute)
        and expression.func.attr == "autocommit_block"
    )


def _concurrently(call: ast.Call) -> bool:
    return any(
        k.arg == "postgresql_concurrently" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def lint(
    source: str, *, skip_functions: frozenset[str] = frozenset(), per_function: bool = False
) -> list[str]:
    """What in a migration (or the kit's migrate.py) could lock a hot table; ``[]`` when nothing.

    A table counts as new when the migration creates it (``per_function``: the same function, for
    the kit's table versions, which are called from different migrations). Downgrades are not
    linted (they run by hand, in an incident, where a lock is the lesser evil).
    """
    tree = ast.parse(source)
    functions = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name not in skip_functions
        and not node.name.startswith(("downgrade", "drop_"))
    ]

    def tables_created(scope: list[ast.FunctionDef | ast.AsyncFunctionDef]) -> set[str | None]:
        return {
            _literal(node.args[0])
            for function in scope
            for node in ast.walk(function)
            if _op_call(node) == "create_table" and isinstance(node, ast.Call) and node.args
        }

    in_module = tables_created(functions)
    problems: list[str] = []

    def visit(node: ast.AST, in_autocommit: bool, where: str, created: set[str | None]) -> None:
        if isinstance(node, ast.With | ast.AsyncWith) and any(_is_autocommit_block(i) for i in node.items):
            in_autocommit = True
        name = _op_call(node)
        if isinstance(node, ast.Call) and name is not None:
            line = f"{where}:{node.lineno}"
            if name in TABLE_ARGUMENT:
                table = _literal(_argument(node, *TABLE_ARGUMENT[name]))
                existing = table is None or table not in created
                if name == "create_index" and existing and not (_concurrently(node) and in_autocommit):
                    problems.append(
                        f"{line}: op.create_index on {table or 'a table'} that already exists must be built "
                        "CONCURRENTLY in an autocommit block: use citygrid.migrate.create_index_concurrently"
                    )
                elif name in CONSTRAINTS and existing:
                    problems.append(f"{line}: op.{name} on existing table {table}: {CONSTRAINTS[name]}")
            if name == "execute":
                sql = _literal(node.args[0] if node.args else None) or ""
                if PLAIN_INDEX.search(sql):
                    problems.append(
                        f"{line}: CREATE INDEX without CONCURRENTLY: use create_index_concurrently"
                    )
                if WHOLE_TABLE_WRITE.search(sql):
                    problems.append(
                        f"{line}: an UPDATE/DELETE in the migration transaction locks every row it touches "
                        "until the end: use citygrid.migrate.backfill_in_batches in a revision of its own"
                    )
        for child in ast.iter_child_nodes(node):
            visit(child, in_autocommit, where, created)

    for function in functions:
        visit(function, False, function.name, tables_created([function]) if per_function else in_module)
    return problems


# -- the rules, on the repository ---------------------------------------------------------------


def test_the_allow_list_names_only_files_that_exist():
    names = {str(path.relative_to(ROOT)) for path in MIGRATION_FILES}
    assert sorted(HISTORICAL_MIGRATIONS - names) == []
    source = KIT_MIGRATIONS.read_text()
    defined = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
    assert sorted(HISTORICAL_KIT_FUNCTIONS - defined) == []


@pytest.mark.parametrize(
    "path",
    [path for path in MIGRATION_FILES if str(path.relative_to(ROOT)) not in HISTORICAL_MIGRATIONS],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_a_migration_added_from_now_on_does_not_lock_hot_tables(path):
    assert lint(path.read_text()) == []


def test_the_kits_own_table_versions_from_now_on_do_not_lock_hot_tables():
    source = KIT_MIGRATIONS.read_text()
    assert lint(source, skip_functions=HISTORICAL_KIT_FUNCTIONS, per_function=True) == []
    # The historical ones would not pass today (which is why they are listed).
    assert lint(source, per_function=True) != []


# -- the lint itself: it catches what it must and lets the rest through --------------------------


def migration(body: str) -> str:
    return "from alembic import op\nimport sqlalchemy as sa\n\n\ndef upgrade() -> None:\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


@pytest.mark.parametrize(
    "body",
    [
        'op.create_index("ix_cases_unit", "cases", ["unit"])',
        'op.create_index("ix_cases_unit", table_name="cases", columns=["unit"])',
        # Concurrently, but inside the migration transaction (PostgreSQL refuses it anyway).
        'op.create_index("ix_cases_unit", "cases", ["unit"], postgresql_concurrently=True)',
        # In an autocommit block, but not concurrently: still a SHARE lock for the whole build.
        'with op.get_context().autocommit_block():\n    op.create_index("ix_cases_unit", "cases", ["unit"])',
        'op.execute("CREATE INDEX ix_cases_unit ON cases (unit)")',
        'op.execute("create unique index ix_x on cases (number)")',
        "op.execute(\"UPDATE cases SET unit = 'x' WHERE unit IS NULL\")",
        'op.execute("DELETE FROM case_history WHERE at < now()")',
        'op.create_unique_constraint("uq_cases_number", "cases", ["number"])',
        'op.create_foreign_key("fk_x", "cases", "units", ["unit"], ["code"])',
        'op.create_check_constraint("ck_x", "cases", "lat > 0")',
    ],
)
def test_the_lint_refuses_what_locks_a_table_that_exists(body):
    assert len(lint(migration(body))) == 1


@pytest.mark.parametrize(
    "body",
    [
        'create_index_concurrently("ix_cases_unit", "cases", ["unit"])',
        'with op.get_context().autocommit_block():\n    op.create_index("ix_cases_unit", "cases", ["unit"], postgresql_concurrently=True)',
        'op.execute("CREATE INDEX CONCURRENTLY ix_cases_unit ON cases (unit)")',
        'backfill_in_batches("cases", set_="unit = \'x\'", where="unit IS NULL")',
        # A table created in the same migration is empty: nothing to lock out.
        'op.create_table("fresh", sa.Column("id", sa.Integer(), primary_key=True), sa.Column("v", sa.Integer()))\n'
        'op.create_index("ix_fresh_v", "fresh", ["v"])\n'
        'op.create_unique_constraint("uq_fresh_v", "fresh", ["v"])',
        'op.add_column("cases", sa.Column("note", sa.Text(), nullable=True))',
    ],
)
def test_the_lint_lets_through_what_does_not(body):
    assert lint(migration(body)) == []


def test_the_lint_leaves_downgrades_alone():
    source = (
        migration("pass\n")
        + '\n\ndef downgrade() -> None:\n    op.create_index("ix_cases_unit", "cases", ["unit"])\n'
    )
    assert lint(source) == []


# -- the helpers and the limits, on PostgreSQL --------------------------------------------------

ENV = "from sqlalchemy import MetaData\n\nfrom citygrid.migrate import run_env\n\nrun_env(MetaData())\n"


def revision(number: int, body: str) -> str:
    previous = repr(f"{number - 1:04d}") if number > 1 else "None"
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        "from citygrid.migrate import backfill_in_batches, create_index_concurrently\n\n"
        f"revision = {f'{number:04d}'!r}\ndown_revision = {previous}\nbranch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\n"
    )


class Scratch:
    """A migration package of the test's own, and a database of its own to run it on."""

    def __init__(self, root: Path, server_url: str) -> None:
        self.package = f"scratch_migrations_{uuid.uuid4().hex[:12]}"
        self.versions = root / self.package / "migrations" / "versions"
        self.versions.mkdir(parents=True)
        (root / self.package / "__init__.py").write_text("")
        (root / self.package / "migrations" / "env.py").write_text(ENV)
        self.database = self.package
        self.url = database_url(server_url, self.database)
        self.server_url = server_url
        self.count = 0

    def add(self, body: str) -> None:
        self.count += 1
        (self.versions / f"{self.count:04d}_step.py").write_text(revision(self.count, body))

    async def upgrade(self, settings: MigrationSettings | None = None) -> None:
        await asyncio.to_thread(upgrade, self.package, self.url, "head", settings)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(to_libpq_url(self.url))

    async def stamped(self) -> str | None:
        connection = await self.connect()
        try:
            if not await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                return None
            stamp: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
            return stamp
        finally:
            await connection.close()


@pytest.fixture
async def scratch(infrastructure, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Scratch(tmp_path, infrastructure.server_url)
    await create_databases(infrastructure.server_url, [made.database])
    connection = await made.connect()
    try:
        await connection.execute("CREATE TABLE hot (id bigint PRIMARY KEY, a int NOT NULL, b int)")
        await connection.execute("INSERT INTO hot (id, a) SELECT n, n % 7 FROM generate_series(1, 2500) AS n")
    finally:
        await connection.close()
    yield made
    sys.modules.pop(made.package, None)


async def test_a_migration_runs_under_the_migration_limits(scratch):
    scratch.add(
        "op.execute(\"CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_limit, "
        "current_setting('statement_timeout') AS statement_limit\")"
    )
    await scratch.upgrade()  # the defaults: CITYGRID_MIGRATION_* unset
    connection = await scratch.connect()
    try:
        assert tuple(await connection.fetchrow("SELECT lock_limit, statement_limit FROM seen")) == (
            "5s",
            "1min",
        )
    finally:
        await connection.close()


async def test_a_migration_that_cannot_get_its_lock_gives_up_instead_of_queueing_everyone(scratch):
    """A reader holds the table; ALTER TABLE needs it alone. Without lock_timeout the migration would
    wait in the lock queue, and every request after it would wait behind it."""
    scratch.add('op.add_column("hot", sa.Column("c", sa.Integer(), nullable=True))')
    reader = await scratch.connect()
    try:
        await reader.execute("BEGIN")
        await reader.fetchval("SELECT count(*) FROM hot")  # ACCESS SHARE until the transaction ends
        with pytest.raises(DBAPIError) as raised:
            await scratch.upgrade(MigrationSettings(migration_lock_timeout_seconds=0.2))
    finally:
        await reader.close()
    assert raised.value.orig.sqlstate == "55P03"  # type: ignore[union-attr]  # lock_not_available
    assert await scratch.stamped() is None
    connection = await scratch.connect()
    try:
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE column_name = 'c'"
            )
            == 0
        )
    finally:
        await connection.close()


async def test_a_statement_of_a_migration_past_its_limit_is_cancelled(scratch):
    scratch.add('op.execute("SELECT pg_sleep(30)")')
    with pytest.raises(DBAPIError) as raised:
        await scratch.upgrade(MigrationSettings(migration_statement_timeout_seconds=0.2))
    assert raised.value.orig.sqlstate == "57014"  # type: ignore[union-attr]  # query_canceled
    assert await scratch.stamped() is None


async def test_an_index_built_concurrently_lets_writers_write_while_it_waits(scratch):
    scratch.add('create_index_concurrently("ix_hot_a", "hot", ["a"])')
    writer = await scratch.connect()  # a transaction in flight: the build waits for it to end
    observer = await scratch.connect()
    try:
        await writer.execute("BEGIN")
        await writer.execute("INSERT INTO hot (id, a) VALUES (10001, 1)")
        migrating = asyncio.create_task(
            scratch.upgrade(MigrationSettings(migration_lock_timeout_seconds=0.2))
        )

        async def build_waiting() -> bool:
            return bool(
                await observer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'CREATE INDEX CONCURRENTLY%' "
                    "AND wait_event_type = 'Lock'"
                )
            )

        await wait_until(build_waiting, timeout=30.0)
        # Meanwhile another writer writes, under a short lock limit of its own: nothing blocks it
        # (a plain CREATE INDEX would hold SHARE on the table, and this insert would time out).
        await observer.execute("SET lock_timeout = '1s'")
        await observer.execute("INSERT INTO hot (id, a) VALUES (10002, 2)")
        # Waiting longer than the run's 0.2 s lock limit did not fail the build: it has the long one.
        await writer.execute("COMMIT")
        await migrating
        valid = await observer.fetchval(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_hot_a'"
        )
        assert valid is True
    finally:
        await writer.close()
        await observer.close()
    assert await scratch.stamped() == "0001"


async def test_a_concurrent_build_keeps_a_valid_index_and_rebuilds_one_a_failed_build_left(scratch):
    connection = await scratch.connect()
    try:
        # A unique build over duplicate values fails half-way and leaves an INVALID index behind.
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_hot_b ON hot (a)")
        await connection.execute("CREATE INDEX ix_hot_kept ON hot (a)")
        kept = await connection.fetchval("SELECT 'ix_hot_kept'::regclass::oid")
        scratch.add(
            'create_index_concurrently("ix_hot_b", "hot", ["a"])\n'
            'create_index_concurrently("ix_hot_kept", "hot", ["a"])'
        )
        await scratch.upgrade()
        states = {
            row["relname"]: row["indisvalid"]
            for row in await connection.fetch(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname IN ('ix_hot_b', 'ix_hot_kept')"
            )
        }
        assert states == {"ix_hot_b": True, "ix_hot_kept": True}
        assert await connection.fetchval("SELECT 'ix_hot_kept'::regclass::oid") == kept  # not rebuilt
    finally:
        await connection.close()


async def test_a_backfill_updates_in_batches_each_its_own_transaction(scratch):
    scratch.add(
        'backfill_in_batches("hot", set_="b = a * :factor", where="b IS NULL", batch_size=1000, parameters={"factor": 2})'
    )
    await scratch.upgrade()
    connection = await scratch.connect()
    try:
        assert await connection.fetchval("SELECT count(*) FROM hot WHERE b IS DISTINCT FROM a * 2") == 0
        # 2,500 rows in batches of 1,000: three transactions wrote them (each row's xmin is its writer).
        assert await connection.fetchval("SELECT count(DISTINCT xmin::text) FROM hot") == 3
    finally:
        await connection.close()
    assert await scratch.stamped() == "0001"
