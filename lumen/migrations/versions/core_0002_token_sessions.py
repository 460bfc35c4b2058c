"""tokens: last_used_at, and an index on expires_at for the purge of expired tokens

Revision ID: core_0002
Revises: core_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from lumen.migrate import refuse_data_loss
from lumen.models import UTCDateTime

revision = "core_0002"
down_revision = "core_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("last_used_at", UTCDateTime(), nullable=True))
    op.create_index("ix_tokens_expires_at", "tokens", ["expires_at"])


def downgrade() -> None:
    refuse_data_loss(
        "the tokens' last use",
        "SELECT count(*) FROM tokens WHERE last_used_at IS NOT NULL",
    )
    op.drop_index("ix_tokens_expires_at", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")
