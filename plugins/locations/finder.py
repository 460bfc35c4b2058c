"""A search as the API answers it: every reading of the query (interpret.py) searched as a
prefix, the candidates of qualified readings kept only where their areas say, the typo
fallback when fewer than ``limit`` cities were found (and no qualified reading found its city
part as a name), proximity, and the final order.

The order, best first:
1. readings of the whole query before partial ones (a comma part that named nothing dropped);
2. a name equal to the city part before a longer one; among equal names, a qualified reading
   (``springfield il``) before an unqualified one;
3. by population, or, with ``lat``/``lon``, by population weighed against distance;
4. every typo candidate after all of these: fewest edits first, then as in 3.

Work is bounded whatever the query: at most MAX_READINGS readings are searched, each reading
at most MAX_SCOPES countries, and the typo fallback reads at most a fixed number of index rows.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lumen import records
from lumen_plugins.locations import search, typos
from lumen_plugins.locations.interpret import Reading, readings
from lumen_plugins.locations.nearest import distance_km
from lumen_plugins.locations.query import SearchQuery
from lumen_plugins.locations.regions import Area, qualifiers
from lumen_plugins.locations.tables import names, typo_keys

MAX_READINGS = 8
MAX_SCOPES = 4  # countries searched one by one for a reading; more and it is searched whole
MAX_TYPO_READINGS = 3
# Proximity: each tenfold of distance (beyond DISTANCE_SCALE_KM) weighs like this many
# tenfolds of population. 1.5 puts Portland, Maine (66,000 people) before Portland, Oregon
# (650,000) from anywhere in New England, and London, Ontario before London from Toronto.
DISTANCE_WEIGHT = 1.5
DISTANCE_SCALE_KM = 100.0
# An exact name counts as exact only for a city at least this fraction of the largest one the
# prefix matches otherwise: "madr" is an alternate name of Mather, Pennsylvania (700 people),
# and "barc" a village in Normandy, but whoever types them is on the way to Madrid, Barcelona.
EXACT_MIN_SHARE = 1 / 1000

TYPO_NAMES = (
    sa.select(typo_keys.c.name_folded)
    .where(typo_keys.c.key.in_(sa.bindparam("keys", expanding=True)))
    .distinct()
    .limit(typos.MAX_CANDIDATE_NAMES)
)
# The names close to the typed one, each with its city's columns: one read of the names.
CITIES_NAMED = (
    sa.select(*search.NAME_COLUMNS)
    .where(names.c.name_folded.in_(sa.bindparam("names", expanding=True)))
    .order_by(names.c.rank, names.c.city_id)
    .limit(4 * typos.MAX_MATCHED_NAMES)
)


@dataclass
class _Found:
    key: tuple
    matched_name: str


def find(connection: Connection, query: SearchQuery, crowded: Collection) -> list[dict]:
    """The answer to a validated search."""
    allowed = frozenset(query.countries) or None
    plans = []
    for reading in readings(query.folded, qualifiers())[:MAX_READINGS]:
        areas = _restrict(reading.areas, allowed)
        if areas is None or areas:
            plans.append((reading, areas))
    rows: dict = {}
    found: dict[int, _Found] = {}
    wanted = query.limit
    # Partial readings only when the full ones found too few: most queries never read them.
    for partial in (False, True):
        for reading, areas in plans:
            if reading.partial == partial:
                _prefix_candidates(connection, reading, areas, allowed, crowded, query, rows, found)
        if len(found) >= wanted:
            break
    # The typo fallback, when too few cities were found, unless a qualified reading found its
    # city part as a name in its area: who typed "london ky" and found London, Kentucky did
    # not mistype it (this saves the fallback's statements on most qualified queries).
    if len(found) < wanted and not any(entry.key[1] == 0 for entry in found.values()):
        # One lookup per distinct city part, for every reading that has it.
        by_city: dict[str, list] = {}
        for reading, areas in plans:
            if typos.allowed_edits(reading.city):
                by_city.setdefault(reading.city, []).append((reading, areas))
        for city, readings_of_city in list(by_city.items())[:MAX_TYPO_READINGS]:
            _typo_candidates(connection, city, readings_of_city, allowed, query, rows, found)
    best = sorted(found.items(), key=lambda item: item[1].key)[:wanted]
    # Every city found came with its row, read in the same statement as its name.
    return [search.city_dict(rows[city_id], entry.matched_name) for city_id, entry in best]


def _restrict(
    areas: frozenset[Area] | None, allowed: frozenset[str] | None
) -> frozenset[Area] | None:
    """A reading's areas within the ``country`` parameter's countries."""
    if allowed is None or areas is None:
        return areas
    return frozenset(area for area in areas if area[0] in allowed)


def _scopes(areas: frozenset[Area] | None, allowed: frozenset[str] | None) -> list[str | None]:
    """The countries to search one by one, or [None] for the whole index."""
    countries = {area[0] for area in areas} if areas is not None else allowed
    if not countries or len(countries) > MAX_SCOPES:
        return [None]
    return sorted(countries)


def _inside(row, areas: frozenset[Area] | None, allowed: frozenset[str] | None) -> bool:
    if allowed is not None and row.country_code not in allowed:
        return False
    if areas is None:
        return True
    return (row.country_code, None) in areas or (row.country_code, row.admin1_code) in areas


def _score(row, query: SearchQuery) -> float:
    """Smaller is better: the rank (population order), or with a point the population weighed
    against the distance."""
    if query.near is None:
        return float(row.rank)
    km = distance_km(*query.near, row.latitude, row.longitude)
    weight = math.log10(row.population + 10) - DISTANCE_WEIGHT * math.log10(
        1 + km / DISTANCE_SCALE_KM
    )
    return -weight


def _keep(found: dict, city_id: int, key: tuple, matched_name: str) -> None:
    if city_id not in found or key < found[city_id].key:
        found[city_id] = _Found(key, matched_name)


def _prefix_candidates(connection, reading: Reading, areas, allowed, crowded, query, rows, found):
    scopes = _scopes(areas, allowed)
    matches: list[search.Match] = []
    for country in scopes:
        # Each match's city row comes with it (into ``rows``): to filter by region or
        # country, to weigh distance and to show.
        matches += search.prefix_matches(connection, reading.city, country, crowded, rows)
    if areas is not None or (allowed is not None and scopes == [None]):
        matches = [m for m in matches if _inside(rows[m.city_id], areas, allowed)]
    largest = max((rows[m.city_id].population for m in matches if not m.exact), default=0)
    tier = 1 if reading.partial else 0
    qualified = areas is not None
    for match in matches:
        row = rows[match.city_id]
        exact = match.exact and row.population >= largest * EXACT_MIN_SHARE
        # Qualifiers confirm an exact name (Springfield in Illinois); a prefix match stays in
        # population order, or "saint lou" would rank towns in Louisiana before St. Louis.
        group = (0 if qualified else 1) if exact else 2
        score = _score(row, query) if query.near is not None else float(match.rank)
        _keep(found, match.city_id, (tier, group, score), match.matched_name)


def _typo_candidates(connection, text: str, plans: list, allowed, query, rows, found):
    edits = typos.allowed_edits(text)
    keys = sorted(typos.keys(text, edits))
    candidates = connection.execute(TYPO_NAMES, {"keys": keys}).scalars().all()
    close: list[tuple[int, str]] = []
    for name in candidates:
        distance = typos.distance(text, name, edits)
        if distance is not None:
            close.append((distance, name))
    close.sort()
    close = close[: typos.MAX_MATCHED_NAMES]
    if not close:
        return
    distance_of = {name: distance for distance, name in close}
    for row in records(connection, CITIES_NAMED, {"names": list(distance_of)}):
        for reading, areas in plans:
            if not _inside(row, areas, allowed):
                continue
            rows.setdefault(row.id, row)
            key = (2 + reading.partial, distance_of[row.name_folded], _score(row, query))
            _keep(found, row.id, key, row.matched_name)
