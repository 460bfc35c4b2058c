"""photos: public_sha256 and public_size_bytes, the copy without location metadata

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from lumen.migrate import refuse_data_loss

revision = "core_0003"
down_revision = "core_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("public_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("public_size_bytes", sa.BigInteger(), nullable=True))
    op.create_index("ix_photos_public_sha256", "photos", ["public_sha256"])


def downgrade() -> None:
    refuse_data_loss(
        "the photos' copies without location metadata",
        "SELECT count(*) FROM photos WHERE public_sha256 IS NOT NULL",
    )
    op.drop_index("ix_photos_public_sha256", table_name="photos")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("public_size_bytes")
        batch.drop_column("public_sha256")
