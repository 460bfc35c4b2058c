"""locations: the typo index (deletion keys of the folded names)

Revision ID: locations_0002
Revises: locations_0001
Create Date: 2026-12-01

The index is filled by `lumen locations import`: a database upgraded with cities already in it
finds typos once the gazetteer is imported again (a downgrade drops only derived rows).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "locations_0002"
down_revision = "locations_0001"
branch_labels = None
depends_on = None

SearchText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "locations_typo_keys",
        sa.Column("key", SearchText, nullable=False),
        sa.Column("name_folded", SearchText, nullable=False),
        sa.PrimaryKeyConstraint("key", "name_folded", name="pk_locations_typo_keys"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("locations_typo_keys")
