"""Prefix search over every name of every city, and reading cities by id.

A prefix is one range of the B-tree on the folded names (``name_folded >= :prefix AND
name_folded < :prefix || U+10FFFF``): parameterised, and with no wildcard to escape since
nothing is a pattern. Prefixes matched by more than SHORT_PREFIX_ROWS names ("a" matches tens
of thousands) are "crowded": the import precomputed their answers, read in one query. Any other
prefix is ranked here from the at most SHORT_PREFIX_ROWS names it matches.

No search reads more than MAX_NAME_ROWS names, whatever it is asked: the name statements carry
a LIMIT, so a prefix that is crowded but not known as such (a worker's list is older than the
data, or a caller passes an empty prefix) costs one more index read, not the whole table.

The statements are built once, with bound parameters: building them per search costs more
Python time than PostgreSQL spends running them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lumen import records
from lumen_plugins.locations.gazetteer import (
    LAST_CHAR,
    SHORT_PREFIX_ROWS,
    TOP_CITIES,
    matched_name_key,
)
from lumen_plugins.locations.normalise import fold_name
from lumen_plugins.locations.regions import display
from lumen_plugins.locations.tables import SHOWN_CITY_COLUMNS, cities, names, top_cities

log = logging.getLogger(__name__)

ALL_COUNTRIES = ""  # the scope of crowded prefixes counted over every country
# One more than a prefix that is not crowded can match: reading that many says "crowded".
MAX_NAME_ROWS = SHORT_PREFIX_ROWS + 1

CITY_COLUMNS = (cities.c.id, *(cities.c[name] for name in SHOWN_CITY_COLUMNS))

# The answer's rows carry their cities' columns: one range of the key, no join.
PRECOMPUTED_ANSWER = (
    sa.select(
        top_cities.c.city_id.label("id"),
        *(top_cities.c[name] for name in SHOWN_CITY_COLUMNS),
        top_cities.c.matched_name,
    )
    .where(
        top_cities.c.scope == sa.bindparam("scope"),
        top_cities.c.prefix == sa.bindparam("prefix"),
    )
    .order_by(top_cities.c.position)
    .limit(sa.bindparam("limit"))
)
# A name as ranked (its city, folded and as written, whether main, its city's rank), then the
# copies of its city's columns: labelled as the cities table's, a row read is its city's row too.
NAME_COLUMNS = (
    names.c.city_id.label("id"),
    names.c.name_folded,
    names.c.name.label("matched_name"),
    names.c.is_main,
    names.c.rank,
    names.c.city_name.label("name"),
    *(names.c[name] for name in SHOWN_CITY_COLUMNS if name not in ("name", "rank")),
)
_PREFIX_RANGE = (
    names.c.name_folded >= sa.bindparam("prefix"),
    names.c.name_folded < sa.bindparam("prefix_end"),
)
# In index order, so the LIMIT stops the range scan after MAX_NAME_ROWS entries.
MATCHING_NAMES = (
    sa.select(*NAME_COLUMNS)
    .where(*_PREFIX_RANGE)
    .order_by(names.c.name_folded, names.c.city_id)
    .limit(MAX_NAME_ROWS)
)
MATCHING_NAMES_IN_COUNTRY = (
    sa.select(*NAME_COLUMNS)
    .where(*_PREFIX_RANGE, names.c.country_code == sa.bindparam("country"))
    .order_by(names.c.name_folded)
    .limit(MAX_NAME_ROWS)
)
CITIES_BY_ID = sa.select(*CITY_COLUMNS).where(cities.c.id.in_(sa.bindparam("ids", expanding=True)))
CROWDED_PREFIXES = sa.select(top_cities.c.scope, top_cities.c.prefix).where(
    top_cities.c.position == 0
)


def city_dict(row, matched_name: str | None = None) -> dict:
    """A city as the API shows it, with its country's and region's names and its label."""
    return {
        "id": row.id,
        "name": row.name,
        "country_code": row.country_code,
        "admin1_code": row.admin1_code,
        **display(row.name, row.country_code, row.admin1_code),
        "latitude": row.latitude,
        "longitude": row.longitude,
        "population": row.population,
        "timezone": row.timezone,
        "matched_name": matched_name,
    }


def crowded_prefixes(connection: Connection) -> frozenset[tuple[str, str]]:
    """(scope, prefix) of every precomputed answer: a few thousand for cities500."""
    return frozenset(tuple(row) for row in connection.execute(CROWDED_PREFIXES))


def search(
    connection: Connection,
    folded: str,
    country: str | None,
    limit: int,
    crowded: Collection[tuple[str, str]],
) -> list[dict]:
    """Cities with a name starting with ``folded`` (already folded): those with a name equal
    to it first, then by population, then by name; one per city. ``crowded`` tells which
    prefixes have a precomputed answer; one it wrongly omits is ranked here, correctly but
    from all its matches."""
    scope = country or ALL_COUNTRIES
    known_crowded = (scope, folded) in crowded
    if known_crowded:
        answer = _precomputed(connection, scope, folded, limit)
        if answer:  # none when the data changed since ``crowded`` was read
            return answer
    matches = records(connection, *matching_names(folded, country))
    if len(matches) >= MAX_NAME_ROWS:  # crowded after all
        answer = [] if known_crowded else _precomputed(connection, scope, folded, limit)
        if answer:
            return answer
        # Only while an import is swapping the tables: rank what was read, a bounded answer.
        log.warning("crowded prefix without a precomputed answer", extra={"scope": scope})
    city_of = {row.id: row for row in matches}
    return [
        city_dict(city_of[city_id], matched)
        for city_id, matched in rank_matches(matches, folded)[:limit]
    ]


@dataclass(frozen=True)
class Match:
    city_id: int
    matched_name: str
    exact: bool  # a name equal to the whole prefix
    rank: int  # 1 for the most populous city


def prefix_matches(
    connection: Connection,
    folded: str,
    country: str | None,
    crowded: Collection[tuple[str, str]],
    rows: dict,
) -> list[Match]:
    """What :func:`search` ranks, as matches in its order (at most TOP_CITIES for a crowded
    prefix, else up to MAX_NAME_ROWS); the row of each match's city goes into ``rows``."""
    scope = country or ALL_COUNTRIES
    if (scope, folded) in crowded:
        answer = _precomputed_rows(connection, scope, folded, TOP_CITIES)
        if answer:
            return _precomputed_matches(answer, folded, rows)
    names_read = records(connection, *matching_names(folded, country))
    if len(names_read) >= MAX_NAME_ROWS:
        answer = _precomputed_rows(connection, scope, folded, TOP_CITIES)
        if answer:
            return _precomputed_matches(answer, folded, rows)
    best: dict[int, tuple] = {}
    for row in names_read:
        key = matched_name_key(row.name_folded, row.matched_name, row.is_main, folded)
        if row.id not in best or key < best[row.id][0]:
            best[row.id] = (key, row)
    ordered = sorted(best.values(), key=lambda entry: (entry[0][0], entry[1].rank))
    found = []
    for key, row in ordered:
        rows.setdefault(row.id, row)
        found.append(Match(row.id, row.matched_name, not key[0], row.rank))
    return found


def _precomputed_matches(answer: list, folded: str, rows: dict) -> list[Match]:
    found = []
    for row in answer:
        rows[row.id] = row
        exact = fold_name(row.matched_name) == folded
        found.append(Match(row.id, row.matched_name, exact, row.rank))
    return found


def _precomputed_rows(connection: Connection, scope: str, folded: str, limit: int) -> list:
    return records(
        connection, PRECOMPUTED_ANSWER, {"scope": scope, "prefix": folded, "limit": limit}
    )


def city_rows(connection: Connection, city_ids: Iterable[int]) -> dict:
    """The cities table's rows of ``city_ids``, by id."""
    wanted = list(city_ids)
    if not wanted:
        return {}
    return {row.id: row for row in records(connection, CITIES_BY_ID, {"ids": wanted})}


def _precomputed(connection: Connection, scope: str, folded: str, limit: int) -> list[dict]:
    rows = _precomputed_rows(connection, scope, folded, limit)
    return [city_dict(row, row.matched_name) for row in rows]


def matching_names(folded: str, country: str | None) -> tuple[sa.Select, dict]:
    """The statement and parameters reading the names that start with ``folded``, at most
    MAX_NAME_ROWS of them: one range of the folded-name index (of the country's part of it
    with ``country``)."""
    params = {"prefix": folded, "prefix_end": folded + LAST_CHAR}
    if country:
        return MATCHING_NAMES_IN_COUNTRY, {**params, "country": country}
    return MATCHING_NAMES, params


def rank_matches(rows: Iterable, folded: str) -> list[list]:
    """[city_id, matched_name] per city, best first: a name equal to the query first, then
    by rank (population, then name). A row begins (city_id, name_folded, name, is_main, rank),
    as NAME_COLUMNS do."""
    best: dict[int, tuple] = {}
    for row in rows:
        city_id, name_folded, name, is_main, rank = row[:5]
        key = matched_name_key(name_folded, name, is_main, folded)
        if city_id not in best or key < best[city_id][0]:
            best[city_id] = (key, rank, name)
    ordered = sorted(best.items(), key=lambda item: (item[1][0][0], item[1][1]))
    return [[city_id, name] for city_id, (_key, _rank, name) in ordered]


def cities_by_id(connection: Connection, city_ids: Iterable[int]) -> dict[int, dict]:
    return {city_id: city_dict(row) for city_id, row in city_rows(connection, city_ids).items()}
