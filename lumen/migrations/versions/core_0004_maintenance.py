"""maintenance: the maintenance-mode flag every worker of every host reads

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from lumen.models import UTCDateTime

revision = "core_0004"
down_revision = "core_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("retry_after", sa.Integer(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance"),
    )


def downgrade() -> None:
    # Nothing to keep: the flag is switched on again with `lumen maintenance on`.
    op.drop_table("maintenance")
