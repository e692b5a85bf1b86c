"""The kit's idempotency keys, version 2: the headers a replay repeats (ETag, Location, the
content type), so a client that retried goes on with If-Match. A nullable column without a default:
no table rewrite, however many keys are stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from citygrid.idempotency import downgrade_idempotency_v2, upgrade_idempotency_v2

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_idempotency_v2()


def downgrade() -> None:
    downgrade_idempotency_v2()
