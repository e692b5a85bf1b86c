"""Indexes the retention rounds read by: the stations' lock audit trail, closed incidents and their
steps, outreach activities, each by its age. Built concurrently: the tables take writes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from citygrid.migrate import create_index_concurrently

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("ix_station_locks_at", "station_locks", ["at"])
    create_index_concurrently(
        "ix_incidents_closed", "incidents", ["closed_at"], postgresql_where=sa.text("closed_at IS NOT NULL")
    )
    create_index_concurrently("ix_incident_steps_at", "incident_steps", ["at"])
    create_index_concurrently("ix_outreach_created", "outreach_activities", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_outreach_created", table_name="outreach_activities")
    op.drop_index("ix_incident_steps_at", table_name="incident_steps")
    op.drop_index("ix_incidents_closed", table_name="incidents")
    op.drop_index("ix_station_locks_at", table_name="station_locks")
