"""Writing a gazetteer into the database in bulk, in one transaction that replaces the old data:
a search sees the old data or the new, never a mix and never an empty table.

PostgreSQL: each table is loaded with COPY into a fresh copy without indexes, indexed, then
swapped in by renaming; readers wait only for the swap at the end, not for the load. SQLite:
DELETE and batched INSERTs in the transaction; readers keep the old snapshot (WAL) meanwhile.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from tqdm import tqdm

from lumen_plugins.locations.gazetteer import Gazetteer
from lumen_plugins.locations.tables import cities, names, state, top_cities, typo_keys

log = logging.getLogger(__name__)

BATCH_ROWS = 50_000
# Serialises imports on PostgreSQL (say two servers starting on an empty database at once).
_IMPORT_LOCK = 0x6C6F63
_STAGING = "_next"
LOCK_ORDER = (top_cities, typo_keys, names, cities)


def write(
    engine: Engine, gazetteer: Gazetteer, only_if_empty: bool = False, progress: bool = False
) -> bool:
    """Replace the imported data with ``gazetteer``'s and bump the data version. With
    ``only_if_empty`` nothing is written if cities are already there. Returns whether it wrote."""
    loads = [
        (cities, gazetteer.cities),
        (names, gazetteer.names),
        (top_cities, gazetteer.top_cities),
        (typo_keys, gazetteer.typo_keys),
    ]
    with engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _IMPORT_LOCK})
        if only_if_empty and city_count(connection) > 0:
            return False
        total = sum(len(rows) for _, rows in loads)
        with tqdm(total=total, desc="writing", unit=" rows", disable=not progress) as bar:
            if postgres:
                _replace_by_swap(connection, loads, bar.update)
            else:
                _replace_in_place(connection, loads, bar.update)
        connection.execute(
            state.update()
            .where(state.c.id == 1)
            .values(
                version=state.c.version + 1,
                dataset=gazetteer.dataset,
                min_population=gazetteer.min_population,
                city_count=len(gazetteer.cities),
                name_count=len(gazetteer.names),
                imported_at=datetime.now(UTC),
            )
        )
    return True


def city_count(connection: Connection) -> int:
    return connection.execute(sa.select(state.c.city_count).where(state.c.id == 1)).scalar() or 0


def has_typo_keys(connection: Connection) -> bool:
    """Whether the typo index holds any row (one index read, not a count)."""
    return connection.execute(sa.select(typo_keys.c.key).limit(1)).first() is not None


def data_version(connection: Connection) -> int:
    return connection.execute(sa.select(state.c.version).where(state.c.id == 1)).scalar() or 0


def _batches(rows: Sequence[tuple]):
    for start in range(0, len(rows), BATCH_ROWS):
        yield rows[start : start + BATCH_ROWS]


def _column_list(table: sa.Table) -> str:
    return ", ".join(column.name for column in table.columns)


# --- SQLite ------------------------------------------------------------------------------------


def _replace_in_place(connection: Connection, loads, advance: Callable[[int], object]) -> None:
    cursor = connection.connection.cursor()
    try:
        for table, rows in loads:
            cursor.execute(f"DELETE FROM {table.name}")
            columns = _column_list(table)
            marks = ", ".join("?" for _ in table.columns)
            # The typo keys come in no order: inserted in key order the B-tree is built by
            # appending, which is several times faster than two million inserts at random
            # places, and SQLite sorts a staging table faster than Python sorts the rows.
            staged = table is typo_keys
            target = "temp.locations_staged" if staged else table.name
            if staged:
                cursor.execute(f"CREATE TEMP TABLE locations_staged ({columns})")
            insert = f"INSERT INTO {target} ({columns}) VALUES ({marks})"
            for batch in _batches(rows):
                cursor.executemany(insert, batch)
                advance(len(batch))
            if staged:
                cursor.execute(
                    f"INSERT INTO {table.name} ({columns}) SELECT {columns} "
                    f"FROM temp.locations_staged ORDER BY {columns}"
                )
                cursor.execute("DROP TABLE temp.locations_staged")
            # Fresh statistics, so the planner knows how narrow a prefix range is.
            cursor.execute(f"ANALYZE {table.name}")
    finally:
        cursor.close()


# --- PostgreSQL --------------------------------------------------------------------------------


def _replace_by_swap(connection: Connection, loads, advance: Callable[[int], object]) -> None:
    cursor = connection.connection.cursor()
    try:
        for table, rows in loads:
            staging = table.name + _STAGING
            cursor.execute(f"CREATE TABLE {staging} (LIKE {table.name})")
            # An empty field is NULL in COPY's csv format unless the column is forced not null.
            required = ", ".join(column.name for column in table.columns if not column.nullable)
            copy = (
                f"COPY {staging} ({_column_list(table)}) FROM STDIN "
                f"WITH (FORMAT csv, FORCE_NOT_NULL ({required}))"
            )
            for batch in _batches(rows):
                cursor.copy_expert(copy, _csv(batch))
                advance(len(batch))
            # Built once over the loaded rows: several times faster than maintained per row.
            for statement in _index_statements(table, staging):
                cursor.execute(statement)
            cursor.execute(f"ANALYZE {staging}")
        # A search reads outside any transaction and each of its statements reads one table,
        # so it holds one table's lock at a time, for one statement: it waits for the swap and
        # never holds a lock the swap waits for while waiting itself. LOCK_ORDER keeps the
        # order fixed for any reader that does join two of them.
        swapped = ", ".join(table.name for table in LOCK_ORDER)
        cursor.execute(f"LOCK TABLE {swapped} IN ACCESS EXCLUSIVE MODE")
        for table, _ in loads:
            cursor.execute(f"DROP TABLE {table.name}")
            cursor.execute(f"ALTER TABLE {table.name}{_STAGING} RENAME TO {table.name}")
            for index in _index_names(table):
                cursor.execute(f"ALTER INDEX {index}{_STAGING} RENAME TO {index}")
    finally:
        cursor.close()


def _index_names(table: sa.Table) -> list[str]:
    return [table.primary_key.name, *(index.name for index in table.indexes)]


def _index_statements(table: sa.Table, staging: str) -> list[str]:
    """The primary key and indexes of ``table`` (as declared in tables.py, which the migration
    matches) for its staging copy, under names ending in _next."""
    key = ", ".join(column.name for column in table.primary_key.columns)
    statements = [
        f"ALTER TABLE {staging} ADD CONSTRAINT {table.primary_key.name}{_STAGING} "
        f"PRIMARY KEY ({key})"
    ]
    for index in table.indexes:
        columns = ", ".join(column.name for column in index.columns)
        statements.append(f"CREATE INDEX {index.name}{_STAGING} ON {staging} ({columns})")
    return statements


def _csv(rows: Sequence[tuple]) -> io.StringIO:
    # csv (in C) writes None as an empty field, which COPY reads as NULL in a nullable column,
    # and floats with repr(), which reads back exactly.
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    return buffer
