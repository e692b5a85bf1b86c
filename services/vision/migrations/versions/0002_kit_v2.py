"""The kit's tables, version 2: the outbox keeps each event's aggregate, retry time and quarantine;
the inbox gains its retention index and the table of aggregate versions consumers have applied.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from citygrid.migrate import downgrade_kit_v2, upgrade_kit_v2

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_kit_v2()


def downgrade() -> None:
    downgrade_kit_v2()
