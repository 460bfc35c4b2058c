"""The plugin's tables (SQLAlchemy Core): cities, their searchable names, the precomputed
answers for short prefixes, the typo index, and one row recording the imported data's version."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

# Folded names are compared byte by byte (UTF-8 byte order is code point order), so a prefix is
# one contiguous B-tree range: SQLite's default BINARY collation does this; PostgreSQL needs "C",
# as a linguistic collation orders "a b" and "ab" by letters first.
SearchText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _city_columns(name: str = "name") -> list[sa.Column]:
    """What a search shows of a city: the cities table's columns, copied into the precomputed
    answers and the names (where the city's name is ``name``, beside the name's own)."""
    return [
        sa.Column(name, sa.Text, nullable=False),
        sa.Column("country_code", sa.String(2), nullable=False),
        sa.Column("admin1_code", sa.String(20)),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
        sa.Column("population", sa.BigInteger, nullable=False),
        sa.Column("timezone", sa.String(40)),
        # 1 for the most populous city: population desc, then name, then id, computed at import.
        sa.Column("rank", sa.Integer, nullable=False),
    ]


# The names of those columns: a row of the cities table is (id, *SHOWN_CITY_COLUMNS, cell).
SHOWN_CITY_COLUMNS = tuple(column.name for column in _city_columns())

cities = sa.Table(
    "locations_cities",
    metadata,
    sa.Column("id", sa.Integer, autoincrement=False),  # the GeoNames id
    *_city_columns(),
    # The grid cell the city lies in (see nearest.py).
    sa.Column("cell", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_locations_cities"),
    sa.Index("ix_locations_cities_cell", "cell"),
)

names = sa.Table(
    "locations_names",
    metadata,
    sa.Column("name_folded", SearchText, nullable=False),
    sa.Column("city_id", sa.Integer, nullable=False),
    # As written, shown as matched_name; compared like Python strings when choosing which.
    sa.Column("name", SearchText, nullable=False),
    sa.Column("is_main", sa.Boolean, nullable=False),
    # Copies of the city's columns, so a search filters, ranks and shows the cities it found
    # from the names it read, in one statement. An import writes both tables at once, so the
    # copies never differ.
    sa.Column("country_code", sa.String(2), nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    *(c for c in _city_columns(name="city_name") if c.name not in ("country_code", "rank")),
    # Leading with the folded name, the key doubles as the prefix index.
    sa.PrimaryKeyConstraint("name_folded", "city_id", name="pk_locations_names"),
    sa.Index("ix_locations_names_country_folded", "country_code", "name_folded"),
)

# The best 50 cities for each prefix matched by more than SHORT_PREFIX_ROWS names (in all
# countries, scope "", or in one country): short prefixes like "a" match tens of thousands.
# Each row carries a copy of its city's columns, so an answer is one range of the key: joined
# with the cities table, the 50 index lookups of an answer made PostgreSQL's work on it nearly
# three times as much. An import writes both tables at once, so the copies never differ.
top_cities = sa.Table(
    "locations_top_cities",
    metadata,
    sa.Column("scope", sa.String(2), nullable=False),
    sa.Column("prefix", SearchText, nullable=False),
    sa.Column("position", sa.SmallInteger, nullable=False),  # 0 for the best
    sa.Column("city_id", sa.Integer, nullable=False),
    sa.Column("matched_name", sa.Text, nullable=False),
    *_city_columns(),
    sa.PrimaryKeyConstraint("scope", "prefix", "position", name="pk_locations_top_cities"),
)

# The typo index (typos.py): every deletion key of each indexed name, key first.
typo_keys = sa.Table(
    "locations_typo_keys",
    metadata,
    sa.Column("key", SearchText, nullable=False),
    sa.Column("name_folded", SearchText, nullable=False),
    sa.PrimaryKeyConstraint("key", "name_folded", name="pk_locations_typo_keys"),
    # SQLite: the rows are the key's B-tree, not a table beside an index of it (half the work).
    sqlite_with_rowid=False,
)

state = sa.Table(
    "locations_state",
    metadata,
    sa.Column("id", sa.Integer, autoincrement=False),  # always 1
    # Bumped by every import: workers compare it to drop their cached answers.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("dataset", sa.String(20)),
    sa.Column("min_population", sa.Integer),
    sa.Column("city_count", sa.Integer, nullable=False),
    sa.Column("name_count", sa.Integer, nullable=False),
    sa.Column("imported_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("id", name="pk_locations_state"),
)
