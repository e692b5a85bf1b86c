"""The message log says what an exchange read returned: how many records, and which fields.

Added to the partitioned table, so every partition has them; records written before have neither
and are encoded (and verified) as they were written (``gateway.message_log.chain``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("message_log", sa.Column("record_count", sa.Integer(), nullable=True))
    op.add_column("message_log", sa.Column("fields", postgresql.ARRAY(sa.String(64)), nullable=True))


def downgrade() -> None:
    op.drop_column("message_log", "fields")
    op.drop_column("message_log", "record_count")
