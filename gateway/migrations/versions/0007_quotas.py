"""Quotas across replicas: every subject's windows with what the replicas together reserved in them
(``gateway.quotas``), and a consumer's daily quota.

``quota_usage`` rows are updated in place several times a second and never on an indexed column,
so the updates stay HOT on pages kept half empty.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_consumers", sa.Column("daily_quota", sa.Integer(), nullable=True))
    op.create_table(
        "quota_usage",
        # A consumer's subject, or a person's (``person:`` and the identity provider's ``sub``).
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("starts", sa.BigInteger(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("last_grant", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "period", "starts", name="pk_quota_usage"),
        postgresql_with={"fillfactor": "50"},
    )
    op.create_index("ix_quota_usage_starts", "quota_usage", ["starts"])


def downgrade() -> None:
    op.drop_index("ix_quota_usage_starts", table_name="quota_usage")
    op.drop_table("quota_usage")
    op.drop_column("api_consumers", "daily_quota")
