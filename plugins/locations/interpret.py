"""The ways to read a query as a city part followed by region and country qualifiers:
``paris, france``, ``portland or``, ``london ontario canada``, ``san jose, costa rica``.

Every reading is searched and the answers merged (search.py): the whole text as one city name
(``frankfurt am main``, ``rio de janeiro``), and each split of it into a city part and one to
three qualifier groups that all name an area (a country, or a region of one) and agree with
each other (``ontario, canada`` is a region of Canada; ``ontario, france`` names nothing).
A comma always ends a group; without commas every split is tried. The last group may be a
prefix ("portland, ore"), as the query is typed a letter at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from lumen_plugins.locations.regions import Area, Qualifiers

MAX_QUALIFIER_WORDS = 6
MAX_GROUPS = 3


@dataclass(frozen=True)
class Reading:
    city: str  # the folded city part, searched as a prefix
    areas: frozenset[Area] | None  # where the city must lie; None: anywhere
    partial: bool = False  # the qualifiers were dropped: ranked after every full reading


def _combine(left: frozenset[Area], right: frozenset[Area]) -> frozenset[Area]:
    """The areas named by both: a region lies in its country; two regions only if equal."""
    found = set()
    for country, region in left:
        for other_country, other_region in right:
            if country != other_country:
                continue
            if region is None or other_region is None or region == other_region:
                found.add((country, region or other_region))
    return frozenset(found)


def readings(folded: str, qualifiers: Qualifiers) -> list[Reading]:
    """The readings of a folded query: the whole text first, then the qualified ones, then
    (when it has commas) its first part alone, as a partial reading."""
    parts = [part.split() for part in folded.split(",")]
    parts = [words for words in parts if words]
    if not parts:
        return []
    words = [word for part in parts for word in part]
    # Positions where a comma separates words: a qualifier group cannot span one.
    commas, position = set(), 0
    for part in parts[:-1]:
        position += len(part)
        commas.add(position)
    found = [Reading(" ".join(words), None)]
    for split in range(1, len(parts[0]) + (len(parts) > 1)):
        rest = len(words) - split
        if not 1 <= rest <= MAX_QUALIFIER_WORDS:
            continue
        areas = _qualified(words, split, commas, qualifiers)
        for area_set in areas:
            found.append(Reading(" ".join(words[:split]), area_set))
    if len(parts) > 1:
        found.append(Reading(" ".join(parts[0]), None, partial=True))
    unique: dict[Reading, None] = {}
    for reading in found:
        unique.setdefault(reading)
    return list(unique)


def _qualified(
    words: list[str], split: int, commas: set[int], qualifiers: Qualifiers
) -> list[frozenset[Area]]:
    """For each way to cut words[split:] into groups that all name areas which agree, the
    areas they name together."""
    end = len(words)
    required = sorted(c for c in commas if split < c < end)
    optional = [c for c in range(split + 1, end) if c not in commas]
    found = []
    for count in range(0, MAX_GROUPS - len(required)):
        for extra in combinations(optional, count):
            cuts = [split, *sorted([*required, *extra]), end]
            areas: frozenset[Area] | None = None
            for start, stop in zip(cuts, cuts[1:], strict=False):
                text = " ".join(words[start:stop])
                named = qualifiers.lookup(text, prefix=stop == end)
                areas = named if areas is None else _combine(areas, named)
                if not areas:
                    break
            if areas:
                found.append(areas)
    return found
