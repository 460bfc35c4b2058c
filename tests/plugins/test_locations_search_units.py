"""The pieces of place search 2 without a database: country and region names, the readings of
a qualified query, the typo keys and distance."""

from __future__ import annotations

import pytest

from lumen_plugins.locations import regions, typos
from lumen_plugins.locations.interpret import Reading, readings

pytestmark = pytest.mark.unit

OREGON, MAINE, ONTARIO, BAVARIA = ("US", "OR"), ("US", "ME"), ("CA", "08"), ("DE", "02")


@pytest.mark.parametrize(
    ("text", "area"),
    [
        ("oregon", OREGON),
        ("or", OREGON),
        ("ontario", ONTARIO),
        ("on", ONTARIO),
        ("bayern", BAVARIA),
        ("bavaria", BAVARIA),
        ("by", BAVARIA),
        ("deutschland", ("DE", None)),
        ("germany", ("DE", None)),
        ("deu", ("DE", None)),
        ("usa", ("US", None)),
        ("united states", ("US", None)),
        ("uk", ("GB", None)),
        ("england", ("GB", "ENG")),
        ("costa rica", ("CR", None)),
        ("nsw", ("AU", "02")),
        ("schweiz", ("CH", None)),
    ],
)
def test_qualifiers_name_countries_and_regions(text, area):
    assert area in regions.qualifiers().lookup(text)


def test_a_qualifier_prefix_needs_three_letters():
    index = regions.qualifiers()
    assert OREGON in index.lookup("ore", prefix=True)
    assert OREGON not in index.lookup("ore")
    assert OREGON not in index.lookup("o", prefix=True) and not index.lookup("zzzz", prefix=True)


def test_display_names():
    assert regions.display("Portland", "US", "OR") == {
        "country_name": "United States",
        "admin1_name": "Oregon",
        "label": "Portland, Oregon, United States",
    }
    assert regions.display("Berlin", "DE", "16")["label"] == "Berlin, Germany"
    assert regions.display("Nowhere", "DE", "99")["admin1_name"] is None
    # ISO 3166-2's inverted names shown the way round people write them.
    assert regions.display("Madrid", "ES", "29")["admin1_name"] == "Madrid"
    assert regions.display("Namur", "BE", "WAL")["admin1_name"] == "Région wallonne"


def test_readings_of_qualified_queries():
    index = regions.qualifiers()
    found = readings("portland, or", index)
    assert found[0] == Reading("portland or", None)  # the whole text first
    assert any(r.city == "portland" and r.areas and OREGON in r.areas for r in found)
    assert found[-1] == Reading("portland", None, partial=True)
    # Region and country in either order, and a region that is not in the country drops out.
    for text in ("portland oregon usa", "portland, usa, oregon"):
        assert any(r.city == "portland" and r.areas == {OREGON} for r in readings(text, index))
    assert not any(r.areas for r in readings("portland, oregon, france", index))
    # Several words on both sides.
    costa_rica = readings("san jose costa rica", index)
    assert any(r.city == "san jose" and ("CR", None) in r.areas for r in costa_rica if r.areas)
    # Nothing to qualify with: only the whole text.
    assert readings("rio de janeiro", index) == [Reading("rio de janeiro", None)]
    # "main" begins Maine: a reading, whose city part "frankfurt am" finds nothing there.
    assert Reading("frankfurt am", frozenset({MAINE})) in readings("frankfurt am main", index)


def test_typo_keys_meet_within_the_allowed_edits():
    for query, name, edits in [
        ("mnuich", "munich", 1),  # transposition
        ("barcelna", "barcelona", 1),  # deletion
        ("munnich", "munich", 1),  # insertion
        ("munick", "munich", 1),  # substitution
        ("barsellona", "barcelona", 2),
        ("amstredm", "amsterdam", 2),
    ]:
        assert typos.keys(query, edits) & typos.keys(name, edits), (query, name)
        assert typos.distance(query, name, edits) is not None
    assert typos.distance("mnuihc", "munich", 1) is None


def test_allowed_edits_and_the_cost_of_a_prefix():
    assert [
        typos.allowed_edits(t) for t in ("abc", "abcd", "abcdefg", "abcdefgh", "abc defgh")
    ] == [
        0,
        1,
        1,
        2,
        2,
    ]
    assert typos.distance("barcelona", "barcelona", 1) == 0
    assert typos.distance("barcelna", "barcelona", 1) == 2  # one edit, whole name
    assert typos.distance("barcelo", "barceloneta", 1) == 1  # a prefix
    assert typos.distance("bracelo", "barceloneta", 1) == 3  # one edit from a prefix


def test_index_rows_cover_main_names_always_and_alternates_of_big_cities():
    small = typos.index_rows([("munich", True), ("muenchen", False)], 5_000)
    assert {name for _, name in small} == {"munich"}
    assert len(small) == len(typos.keys("munich", 1))
    big = typos.index_rows([("munich", True), ("muenchen", False)], 1_500_000)
    assert {name for _, name in big} == {"munich", "muenchen"}
    assert ("mnch", "munich") in big  # two deletions for the main name of a big city


def test_a_single_letter_is_never_a_qualifier():
    # Venezuela's region code A (Distrito Capital) read "San A", typed on the way to "San
    # Antonio", as "San" in Caracas's region, and ranked Caracas first.
    index = regions.qualifiers()
    assert readings("san a", index) == [Reading("san a", None)]
    assert not any(len(key) == 1 for key in index.areas)
    assert ("VE", "25") in index.lookup("distrito capital")
