"""locations: names carry their cities' columns

Revision ID: locations_0004
Revises: locations_0003
Create Date: 2026-12-03

A search then reads the cities it found with their names, in one statement. The copies are
filled from the cities already imported; a downgrade drops only copies.
"""

import sqlalchemy as sa
from alembic import op

revision = "locations_0004"
down_revision = "locations_0003"
branch_labels = None
depends_on = None

# (column, the cities table's column it copies, type, nullable), as in locations_cities.
COPIES = (
    ("city_name", "name", sa.Text(), False),
    ("admin1_code", "admin1_code", sa.String(20), True),
    ("latitude", "latitude", sa.Float(), False),
    ("longitude", "longitude", sa.Float(), False),
    ("population", "population", sa.BigInteger(), False),
    ("timezone", "timezone", sa.String(40), True),
)


def upgrade() -> None:
    with op.batch_alter_table("locations_names") as batch:
        for name, _, type_, _ in COPIES:
            batch.add_column(sa.Column(name, type_, nullable=True))
    assignments = ", ".join(f"{name} = c.{source}" for name, source, _, _ in COPIES)
    # UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
    op.execute(
        f"UPDATE locations_names SET {assignments} FROM locations_cities AS c "
        "WHERE c.id = locations_names.city_id"
    )
    # A name's city is always imported with it; a name without one could not be shown.
    op.execute("DELETE FROM locations_names WHERE city_name IS NULL")
    with op.batch_alter_table("locations_names") as batch:
        for name, _, type_, nullable in COPIES:
            if not nullable:
                batch.alter_column(name, existing_type=type_, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("locations_names") as batch:
        for name, _, _, _ in reversed(COPIES):
            batch.drop_column(name)
