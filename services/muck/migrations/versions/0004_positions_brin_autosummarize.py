"""The positions' BRIN index on ``txid`` summarizes pages as they fill.

The rules read the newest positions; an index summarized only when VACUUM runs (after a fifth of a
partition is new) leaves every page since to be scanned on each read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from alembic import op

from citygrid.migrate import create_partitioned_index_concurrently

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_positions_txid", table_name="positions")
    create_partitioned_index_concurrently(
        "ix_positions_txid", "positions", ["txid"], using="brin", storage={"autosummarize": "on"}
    )


def downgrade() -> None:
    op.drop_index("ix_positions_txid", table_name="positions")
    create_partitioned_index_concurrently("ix_positions_txid", "positions", ["txid"], using="brin")
