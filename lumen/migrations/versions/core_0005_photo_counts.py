"""photo counters kept by triggers, and the lists' keyset indexes

Revision ID: core_0005
Revises: core_0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "core_0005"
down_revision = "core_0004"
branch_labels = None
depends_on = None

OLD_INDEXES = {
    "ix_photos_location_id": ["location_id"],
    "ix_photos_owner_created": ["owner_id", "created_at"],
    "ix_photos_visibility_created": ["visibility", "created_at"],
}
NEW_INDEXES = {
    "ix_photos_visibility_created_id": ["visibility", "created_at", "id"],
    "ix_photos_owner_visibility_created_id": ["owner_id", "visibility", "created_at", "id"],
    "ix_photos_location_visibility_created_id": ["location_id", "visibility", "created_at", "id"],
}

FILL = [
    "INSERT INTO owner_photo_counts (owner_id, visibility, n) "
    "SELECT owner_id, visibility, count(*) FROM photos GROUP BY owner_id, visibility",
    "INSERT INTO photo_totals (visibility, shard, n) "
    "SELECT visibility, 0, count(*) FROM photos GROUP BY visibility",
]

# PostgreSQL: statement-level triggers over the statement's transition tables, so a COPY of a
# million rows (lumen seed --bulk) costs one grouped upsert, not a million. Every change is
# an increment in place (n = n + delta, under the row lock), never a read then a write: no
# update is lost between concurrent writers. Totals go to one shard of eight, picked by the
# transaction's id: concurrent uploads rarely wait on the same row, and all the statements of
# one transaction use the same shard, so two transactions cannot lock shards in opposite
# orders. Owner rows are upserted in key order, for the same reason within a statement.
_PG_SHARD = "mod(txid_current(), 8)::int"
_PG_OWNERS_UPSERT = (
    "INSERT INTO owner_photo_counts AS c (owner_id, visibility, n) "
    "SELECT owner_id, visibility, n FROM delta ORDER BY owner_id, visibility "
    "ON CONFLICT (owner_id, visibility) DO UPDATE SET n = c.n + excluded.n"
)
_PG_TOTALS_UPSERT = (
    "INSERT INTO photo_totals AS t (visibility, shard, n) "
    f"SELECT visibility, {_PG_SHARD}, sum(n) FROM delta GROUP BY visibility ORDER BY visibility "
    "ON CONFLICT (visibility, shard) DO UPDATE SET n = t.n + excluded.n"
)


def _pg_function(name: str, delta: str, owners: str) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS ({delta}) {owners};
    WITH delta AS ({delta}) {_PG_TOTALS_UPSERT};
    RETURN NULL;
END $$"""


_PG_GROUPED = (
    "SELECT owner_id, visibility, sum(n) AS n FROM ({rows}) AS r "
    "GROUP BY owner_id, visibility HAVING sum(n) <> 0"
)
_PG_NEW = "SELECT owner_id, visibility, 1 AS n FROM lumen_new"
_PG_OLD = "SELECT owner_id, visibility, -1 AS n FROM lumen_old"
TRIGGERS = {
    "postgresql": [
        _pg_function(
            "lumen_photo_counts_insert", _PG_GROUPED.format(rows=_PG_NEW), _PG_OWNERS_UPSERT
        ),
        # A photo deleted with its owner (ON DELETE CASCADE) may find the owner's counter row
        # gone already: an UPDATE, never an insert, for the owner's rows.
        _pg_function(
            "lumen_photo_counts_delete",
            _PG_GROUPED.format(rows=_PG_OLD),
            "UPDATE owner_photo_counts AS c SET n = c.n + delta.n FROM delta "
            "WHERE c.owner_id = delta.owner_id AND c.visibility = delta.visibility",
        ),
        _pg_function(
            "lumen_photo_counts_update",
            _PG_GROUPED.format(rows=f"{_PG_OLD} UNION ALL {_PG_NEW}"),
            _PG_OWNERS_UPSERT,
        ),
        "CREATE TRIGGER lumen_photo_counts_insert AFTER INSERT ON photos "
        "REFERENCING NEW TABLE AS lumen_new "
        "FOR EACH STATEMENT EXECUTE FUNCTION lumen_photo_counts_insert()",
        "CREATE TRIGGER lumen_photo_counts_delete AFTER DELETE ON photos "
        "REFERENCING OLD TABLE AS lumen_old "
        "FOR EACH STATEMENT EXECUTE FUNCTION lumen_photo_counts_delete()",
        "CREATE TRIGGER lumen_photo_counts_update AFTER UPDATE ON photos "
        "REFERENCING OLD TABLE AS lumen_old NEW TABLE AS lumen_new "
        "FOR EACH STATEMENT EXECUTE FUNCTION lumen_photo_counts_update()",
    ],
    # SQLite: row triggers (it has no others); one writer at a time, so one shard.
    "sqlite": [
        """CREATE TRIGGER lumen_photo_counts_insert AFTER INSERT ON photos BEGIN
    INSERT INTO owner_photo_counts (owner_id, visibility, n)
        VALUES (NEW.owner_id, NEW.visibility, 1)
        ON CONFLICT (owner_id, visibility) DO UPDATE SET n = n + 1;
    INSERT INTO photo_totals (visibility, shard, n) VALUES (NEW.visibility, 0, 1)
        ON CONFLICT (visibility, shard) DO UPDATE SET n = n + 1;
END""",
        """CREATE TRIGGER lumen_photo_counts_delete AFTER DELETE ON photos BEGIN
    UPDATE owner_photo_counts SET n = n - 1
        WHERE owner_id = OLD.owner_id AND visibility = OLD.visibility;
    INSERT INTO photo_totals (visibility, shard, n) VALUES (OLD.visibility, 0, -1)
        ON CONFLICT (visibility, shard) DO UPDATE SET n = n - 1;
END""",
        """CREATE TRIGGER lumen_photo_counts_update AFTER UPDATE OF owner_id, visibility ON photos
WHEN OLD.owner_id IS NOT NEW.owner_id OR OLD.visibility IS NOT NEW.visibility BEGIN
    UPDATE owner_photo_counts SET n = n - 1
        WHERE owner_id = OLD.owner_id AND visibility = OLD.visibility;
    INSERT INTO owner_photo_counts (owner_id, visibility, n)
        VALUES (NEW.owner_id, NEW.visibility, 1)
        ON CONFLICT (owner_id, visibility) DO UPDATE SET n = n + 1;
    INSERT INTO photo_totals (visibility, shard, n) VALUES (OLD.visibility, 0, -1)
        ON CONFLICT (visibility, shard) DO UPDATE SET n = n - 1;
    INSERT INTO photo_totals (visibility, shard, n) VALUES (NEW.visibility, 0, 1)
        ON CONFLICT (visibility, shard) DO UPDATE SET n = n + 1;
END""",
    ],
}
_NAMES = ("lumen_photo_counts_insert", "lumen_photo_counts_delete", "lumen_photo_counts_update")
DROP_TRIGGERS = {
    "postgresql": [f"DROP TRIGGER {name} ON photos" for name in _NAMES]
    + [f"DROP FUNCTION {name}()" for name in _NAMES],
    "sqlite": [f"DROP TRIGGER {name}" for name in _NAMES],
}


def upgrade() -> None:
    op.create_table(
        "photo_totals",
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("visibility", "shard", name="pk_photo_totals"),
    )
    op.create_table(
        "owner_photo_counts",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name="fk_owner_photo_counts_owner_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("owner_id", "visibility", name="pk_owner_photo_counts"),
    )
    for name, columns in NEW_INDEXES.items():
        op.create_index(name, "photos", columns)
    for name in OLD_INDEXES:
        op.drop_index(name, table_name="photos")
    bind = op.get_bind()
    # Triggers first, then the fill, in this one transaction (CREATE TRIGGER holds off
    # writers on PostgreSQL until the commit): no write is counted twice or lost.
    for statement in TRIGGERS[bind.dialect.name]:
        bind.exec_driver_sql(statement)
    for statement in FILL:
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    # The counters are derived from the photos: an upgrade computes them again.
    bind = op.get_bind()
    for statement in DROP_TRIGGERS[bind.dialect.name]:
        bind.exec_driver_sql(statement)
    for name, columns in OLD_INDEXES.items():
        op.create_index(name, "photos", columns)
    for name in NEW_INDEXES:
        op.drop_index(name, table_name="photos")
    op.drop_table("owner_photo_counts")
    op.drop_table("photo_totals")
