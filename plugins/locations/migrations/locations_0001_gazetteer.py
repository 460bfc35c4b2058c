"""locations: cities, their names, precomputed short-prefix answers, data version

Revision ID: locations_0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "locations_0001"
down_revision = None
branch_labels = ("locations",)
depends_on = None

# Byte-order comparison on PostgreSQL, so that a prefix is one B-tree range (see tables.py).
SearchText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "locations_cities",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("country_code", sa.String(2), nullable=False),
        sa.Column("admin1_code", sa.String(20), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("population", sa.BigInteger(), nullable=False),
        sa.Column("timezone", sa.String(40), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("cell", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_locations_cities"),
    )
    op.create_index("ix_locations_cities_cell", "locations_cities", ["cell"])
    op.create_table(
        "locations_names",
        sa.Column("name_folded", SearchText, nullable=False),
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("name", SearchText, nullable=False),
        sa.Column("is_main", sa.Boolean(), nullable=False),
        sa.Column("country_code", sa.String(2), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name_folded", "city_id", name="pk_locations_names"),
    )
    op.create_index(
        "ix_locations_names_country_folded", "locations_names", ["country_code", "name_folded"]
    )
    op.create_table(
        "locations_top_cities",
        sa.Column("scope", sa.String(2), nullable=False),
        sa.Column("prefix", SearchText, nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("matched_name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "prefix", "position", name="pk_locations_top_cities"),
    )
    state = op.create_table(
        "locations_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(20), nullable=True),
        sa.Column("min_population", sa.Integer(), nullable=True),
        sa.Column("city_count", sa.Integer(), nullable=False),
        sa.Column("name_count", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_locations_state"),
    )
    op.bulk_insert(state, [{"id": 1, "version": 0, "city_count": 0, "name_count": 0}])


def downgrade() -> None:
    op.drop_table("locations_state")
    op.drop_table("locations_top_cities")
    op.drop_table("locations_names")
    op.drop_table("locations_cities")
