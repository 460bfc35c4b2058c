"""locations: precomputed answers carry their cities' columns

Revision ID: locations_0003
Revises: locations_0002
Create Date: 2026-12-03

A precomputed answer is then one range of its table's key, with no join to the cities. The
copies are filled from the cities already imported; a downgrade drops only copies.
"""

import sqlalchemy as sa
from alembic import op

revision = "locations_0003"
down_revision = "locations_0002"
branch_labels = None
depends_on = None

# (column, type, nullable), as in locations_cities.
COPIES = (
    ("name", sa.Text(), False),
    ("country_code", sa.String(2), False),
    ("admin1_code", sa.String(20), True),
    ("latitude", sa.Float(), False),
    ("longitude", sa.Float(), False),
    ("population", sa.BigInteger(), False),
    ("timezone", sa.String(40), True),
    ("rank", sa.Integer(), False),
)


def upgrade() -> None:
    with op.batch_alter_table("locations_top_cities") as batch:
        for name, type_, _ in COPIES:
            batch.add_column(sa.Column(name, type_, nullable=True))
    assignments = ", ".join(f"{name} = c.{name}" for name, _, _ in COPIES)
    # UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
    op.execute(
        f"UPDATE locations_top_cities SET {assignments} FROM locations_cities AS c "
        "WHERE c.id = locations_top_cities.city_id"
    )
    # An answer's city is always imported with it; a row without one could not be shown.
    op.execute("DELETE FROM locations_top_cities WHERE name IS NULL")
    with op.batch_alter_table("locations_top_cities") as batch:
        for name, type_, nullable in COPIES:
            if not nullable:
                batch.alter_column(name, existing_type=type_, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("locations_top_cities") as batch:
        for name, _, _ in reversed(COPIES):
            batch.drop_column(name)
