"""Evaluation: when each case was registered, the deadline each step ended, and the indexes of a
period's figures.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

EVALUATION_MARKS_SQL = (
    "action IN ('rework', 'extension_approved') OR (action = 'handle' AND at > deadline_at)"
)


def upgrade() -> None:
    op.add_column("cases", sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("case_history", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    # Cases registered before this revision: the time of their last registration step.
    op.execute(
        "UPDATE cases SET registered_at = h.at FROM ("
        " SELECT case_id, max(at) AS at FROM case_history WHERE action = 'register' GROUP BY case_id"
        ") AS h WHERE h.case_id = cases.id"
    )
    op.create_index("ix_cases_registered", "cases", ["registered_at"])
    op.create_index("ix_cases_dispatched", "cases", ["dispatched_at"])
    op.create_index("ix_cases_closed", "cases", ["closed_at"])
    op.create_index(
        "ix_case_history_evaluation_marks",
        "case_history",
        ["at"],
        postgresql_include=["case_id", "action"],
        postgresql_where=sa.text(EVALUATION_MARKS_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_case_history_evaluation_marks", table_name="case_history")
    for name in ("ix_cases_closed", "ix_cases_dispatched", "ix_cases_registered"):
        op.drop_index(name, table_name="cases")
    op.drop_column("case_history", "deadline_at")
    op.drop_column("cases", "registered_at")
