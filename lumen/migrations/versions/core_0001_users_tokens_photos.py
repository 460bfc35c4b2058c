"""users, tokens and photos

Revision ID: core_0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from lumen.migrate import refuse_data_loss
from lumen.models import UTCDateTime

revision = "core_0001"
down_revision = None
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "photos",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("thumb_sha256", sa.String(64), nullable=False),
        sa.Column("thumb_content_type", sa.String(32), nullable=False),
        sa.Column("thumb_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", UTCDateTime(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_photos_owner_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_photos"),
        sa.UniqueConstraint("owner_id", "sha256", name="uq_photos_owner_id_sha256"),
    )
    op.create_index("ix_photos_location_id", "photos", ["location_id"])
    op.create_index("ix_photos_sha256", "photos", ["sha256"])
    op.create_index("ix_photos_thumb_sha256", "photos", ["thumb_sha256"])
    op.create_index("ix_photos_owner_created", "photos", ["owner_id", "created_at"])
    op.create_index("ix_photos_visibility_created", "photos", ["visibility", "created_at"])


def downgrade() -> None:
    refuse_data_loss(
        "every user, token and photo",
        "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM photos)",
    )
    op.drop_table("photos")
    op.drop_table("tokens")
    op.drop_table("users")
