"""Place search 2 against the real databases (SQLite and PostgreSQL) with cities15000: qualified
queries, display names, the typo fallback, proximity, several countries, the nearest city's
distance and its maximum; and a part of the quality benchmark's queries
(benchmarks/places_queries.tsv; the whole set runs on cities500 in benchmarks/places_quality.py).
"""

from __future__ import annotations

import dataclasses

import falcon.testing
import pytest
import sqlalchemy as sa

from benchmarks.places_quality import read_queries, request_params
from lumen.app import Lumen
from lumen.config import ConfigError, load_settings
from lumen.plugins import make_plugin_manager
from lumen_plugins.locations import finder, typos
from lumen_plugins.locations.normalise import fold
from lumen_plugins.locations.query import parse_search
from tests.conftest import Api, jpeg
from tests.plugins.test_locations import gps_exif, query_plan

MUNICH, PORTLAND_OR, PORTLAND_ME = 2867714, 5746545, 4975802


@pytest.fixture
def app(make_app, imported):
    return make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="0")


@pytest.fixture
def client(app):
    return falcon.testing.TestClient(app)


def find(client, q, **params):
    result = client.simulate_get("/api/v1/locations", params={"q": q, **params})
    assert result.status_code == 200, result.text
    return result.json["results"]


# The examples and a spread of every kind, all of cities over 15,000 people.
SUITE = [
    "paris, france",
    "portland, or",
    "london ontario",
    "new york, ny",
    "kent washington",
    "mnuich",
    "barcelna",
    "frankfurt am main",
    "san jose, costa rica",
    "springfield il",
    "portland, ore",
    "paris texas",
    "portland, maine",
    "london, ontario, canada",
    "springfield, us, il",
    "springfield missouri",
    "munchen, deutschland",
    "munich bavaria",
    "cambridge uk",
    "richmond, bc",
    "washington dc",
    "hamilton, nz",
    "salt lake city",
    "rio de janeiro",
    "amstredm",
    "san fransisco",
    "frnakfurt am mian",
    "mnuich germany",
    "москва",
    "東京",
    "kobenhavn",
    "sao pa",
    "berl",
    "new yo",
]
PROXIMITY = [("portland", "lat=44.80&lon=-68.77"), ("london", "lat=43.65&lon=-79.38")]


def suite_rows() -> list[dict]:
    rows = read_queries()
    chosen = [r for r in rows if r["query"] in SUITE and not r["params"]]
    chosen += [r for r in rows if (r["query"], r["params"]) in PROXIMITY]
    assert len(chosen) == len(SUITE) + len(PROXIMITY)
    return chosen


@pytest.mark.parametrize("row", suite_rows(), ids=lambda row: f"{row['query']}|{row['params']}")
def test_the_benchmarks_queries_find_their_city_first(client, row):
    params = request_params(row)
    results = find(client, params.pop("q"), **params)
    assert results and results[0]["id"] == row["geonameid"], [r["label"] for r in results[:3]]


def test_every_city_carries_its_display_names(client):
    first = find(client, "portland, or", limit=1)[0]
    assert (first["country_name"], first["admin1_name"], first["label"]) == (
        "United States",
        "Oregon",
        "Portland, Oregon, United States",
    )
    munich = client.simulate_get(f"/api/v1/locations/{MUNICH}").json
    assert munich["label"] == "Munich, Bayern, Germany"
    # A region named like its city is left out of the label; a city-state has no region.
    assert find(client, "berlin", limit=1)[0]["label"] == "Berlin, Germany"
    singapore = find(client, "singapore", limit=1)[0]
    assert singapore["admin1_name"] is None and singapore["label"] == "Singapore, Singapore"


def test_a_qualifier_narrows_and_one_that_names_nothing_leaves_the_whole_text(client):
    everywhere = find(client, "portland", limit=50)
    assert {r["country_code"] for r in everywhere} > {"US"}
    maine = find(client, "portland, maine", limit=50)
    assert maine[0]["id"] == PORTLAND_ME
    # An exact name in the area comes first, then the other exact ones, then longer names.
    assert find(client, "portland me")[0]["id"] == PORTLAND_ME
    # "am main" names no region: Frankfurt am Main is found by its whole name.
    assert find(client, "frankfurt am main")[0]["name"] == "Frankfurt am Main"
    # A comma part that names nothing: the first part is still searched, ranked last.
    assert find(client, "munich, qqqq")[0]["id"] == MUNICH


def test_the_last_word_of_a_qualifier_may_be_a_prefix(client):
    for typed in ("portland, ore", "portland, oreg", "portland, orego", "portland, oregon"):
        assert find(client, typed)[0]["id"] == PORTLAND_OR, typed


def test_typo_candidates_come_after_every_exact_prefix_match(client):
    results = find(client, "mosco", limit=20)
    prefix = [fold(r["matched_name"]).startswith("mosco") for r in results]
    assert prefix[0] and not prefix[-1]  # both kinds in the answer
    assert prefix == sorted(prefix, reverse=True)


@pytest.mark.parametrize(
    ("q", "found"),
    [("mnuich", True), ("munihc", True), ("mnich", True), ("mnuihc", False), ("mun", True)],
)
def test_one_edit_from_four_letters_two_from_eight(client, q, found):
    """mnuihc is two transpositions from munich: too many for 6 letters."""
    assert (MUNICH in [r["id"] for r in find(client, q, limit=50)]) is found


def test_two_edits_from_eight_letters(client):
    assert find(client, "barsellona")[0]["name"] == "Barcelona"  # substitution + insertion
    assert find(client, "barcelna")[0]["name"] == "Barcelona"


def test_proximity_puts_the_nearer_city_first(client):
    assert find(client, "portland")[0]["id"] == PORTLAND_OR
    near_maine = find(client, "portland", lat="43.9", lon="-69.9")
    assert near_maine[0]["id"] == PORTLAND_ME
    assert find(client, "portland", lat="45.6", lon="-122.9")[0]["id"] == PORTLAND_OR


def test_country_accepts_several_codes(client):
    results = find(client, "bru", country="fr,be", limit=50)
    assert {r["country_code"] for r in results} == {"FR", "BE"}
    assert find(client, "bru", country="BE, FR", limit=50) == results
    assert find(client, "paris", country="be") != find(client, "paris")
    # A country qualifier outside the parameter's countries names nothing.
    assert all(r["country_code"] == "BE" for r in find(client, "paris, france", country="be"))


def test_the_search_is_bounded(app):
    """Whatever the query, a search runs a bounded number of statements, and the typo
    fallback reads a bounded number of index rows."""
    statements = []

    def count(*args):
        statements.append(args[2])

    engine = app.lumen.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        locations = app.lumen.state["locations"]
        for q in (
            "aaaaaaaa bbbbbbbb cccccccc, dddddddd eeeeeeee",
            "san san san san san san san, us, ca",
            "qwertyuiopasdfgh",
        ):
            statements.clear()
            locations.search(parse_search({"q": q, "limit": "50"}))
            assert len(statements) <= 40, (q, len(statements))
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert "LIMIT" in str(finder.TYPO_NAMES.compile()).upper()


def test_the_typo_lookup_uses_its_index(backend, imported):
    with backend[2].connect() as conn:
        plan = query_plan(conn, finder.TYPO_NAMES, {"keys": sorted(typos.keys("mnuich", 1))})
        count = conn.execute(sa.text("SELECT count(*) FROM locations_typo_keys")).scalar()
    assert count == len(imported.typo_keys) > 0
    if backend[0] == "postgresql":
        assert "pk_locations_typo_keys" in plan and "Seq Scan" not in plan, plan
    else:
        assert "SEARCH locations_typo_keys USING PRIMARY KEY" in plan, plan


# --- nearest -----------------------------------------------------------------------------------


def test_nearest_has_a_distance_and_nothing_lies_beyond_the_maximum(client):
    zurich = client.simulate_get(
        "/api/v1/locations/nearest", params={"lat": 47.3769, "lon": 8.5417}
    )
    assert zurich.status_code == 200
    assert 0 <= zurich.json["distance_km"] < 5
    assert zurich.json["label"].endswith("Switzerland")
    at_sea = client.simulate_get("/api/v1/locations/nearest", params={"lat": 40, "lon": -40})
    assert at_sea.status_code == 404
    assert at_sea.json["description"] == (
        "lat, lon: no city within 50 km (LOCATIONS_NEAREST_MAX_KM)"
    )


def test_the_maximum_is_a_setting(make_app, imported):
    far = make_app(LUMEN_PLUGINS="locations", LOCATIONS_NEAREST_MAX_KM="5000")
    client = falcon.testing.TestClient(far)
    at_sea = client.simulate_get("/api/v1/locations/nearest", params={"lat": 40, "lon": -40})
    assert at_sea.status_code == 200
    assert 50 < at_sea.json["distance_km"] <= 5000


def test_a_photo_taken_at_sea_gets_no_location_and_one_in_town_its_label(client):
    api = Api(client)
    user = api.user()
    at_sea = api.upload(user, image=jpeg(exif=gps_exif(40.0, -40.0)))
    assert at_sea["location"] is None
    zurich = api.upload(user, image=jpeg(exif=gps_exif(47.3769, 8.5417)))
    assert zurich["location"]["label"] == "Zürich, Switzerland"
    assert "distance_km" not in zurich["location"]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_a_bad_maximum_stops_start_up_naming_the_variable(value):
    settings = load_settings({"DATABASE_URL": "sqlite://", "LOCATIONS_NEAREST_MAX_KM": value})
    lumen = Lumen(settings, make_plugin_manager(["locations"]))
    with pytest.raises(ConfigError, match="LOCATIONS_NEAREST_MAX_KM") as raised:
        lumen.start()
    assert "\n" not in str(raised.value)


def test_cities_without_a_typo_index_are_searched_with_a_warning(tmp_path, caplog):
    """A database whose cities were imported before locations_0002: search works, the typo
    fallback finds nothing, and a warning says what to run."""
    from lumen_plugins.locations import gazetteer, importer
    from tests.plugins.test_locations import migrated_sqlite

    lumen = migrated_sqlite(tmp_path, LOCATIONS_AUTO_IMPORT="false")
    try:
        built = gazetteer.build(gazetteer.read_dataset("cities15000"), "cities15000", 3_000_000)
        importer.write(lumen.engine, dataclasses.replace(built, typo_keys=[]))
        locations = lumen.state["locations"]
        locations.watch.check_now()
        assert "run `lumen locations import` for typo tolerance" in caplog.text
        assert locations.search(parse_search({"q": "berlin"}))[0]["name"] == "Berlin"
        assert locations.search(parse_search({"q": "berln"})) == []
        importer.write(lumen.engine, built)
        locations.watch.check_now()
        assert locations.search(parse_search({"q": "berln"}))[0]["name"] == "Berlin"
    finally:
        lumen.shutdown()


def test_the_lru_is_keyed_by_the_folded_query(make_app, imported):
    app = make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="10")
    client = falcon.testing.TestClient(app)
    assert find(client, "Zürich") == find(client, "zurich") == find(client, "ZURICH")
    info = app.lumen.state["locations"].cache_info()
    assert (info.hits, info.misses) == (2, 1)
    find(client, "zurich", lat="47.4", lon="8.5")  # another key
    assert app.lumen.state["locations"].cache_info().misses == 2
