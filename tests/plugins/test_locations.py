"""The locations plugin against the real databases (SQLite and PostgreSQL) with real GeoNames
data: cities15000 (about 34,000 cities, Berlin, Zürich, Munich, São Paulo, York and New York
among them) is imported once per test session and backend. The full cities500 import and the
search latency are measured by benchmarks/locations_bench.py, not here."""

from __future__ import annotations

import threading
import time
import urllib.request
from json import loads

import falcon.testing
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import ExifTags, Image
from sqlalchemy.exc import SQLAlchemyError

from lumen import migrate
from lumen.app import Lumen
from lumen.cli import Context, cli
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from lumen_plugins.locations import gazetteer, importer, nearest, search, tables
from lumen_plugins.locations.normalise import fold
from lumen_plugins.locations.query import (
    COUNTRY_RULE,
    Q_CHARACTERS_RULE,
    Q_LENGTH_RULE,
    Q_SEARCHABLE_RULE,
)
from tests.conftest import Api, jpeg

ALL = search.ALL_COUNTRIES
BERLIN, MUNICH, ZURICH, SAO_PAULO, YORK_GB, NEW_YORK = (
    2950159,
    2867714,
    2657896,
    3448439,
    2633352,
    5128581,
)


# cities15000 and imported: tests/plugins/conftest.py


@pytest.fixture
def app(make_app, imported):
    return make_app(LUMEN_PLUGINS="locations")


@pytest.fixture
def client(app):
    return falcon.testing.TestClient(app)


def find(client, q, **params):
    result = client.simulate_get("/api/v1/locations", params={"q": q, **params})
    assert result.status_code == 200, result.text
    return result.json["results"]


def counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(tables.cities)).scalar(),
            conn.execute(sa.select(sa.func.count()).select_from(tables.names)).scalar(),
        )


# --- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "first", "matched"),
    [
        ("berl", BERLIN, "Berlin"),
        ("BERLIN", BERLIN, "Berlin"),
        ("zurich", ZURICH, "Zürich"),
        ("Zürich", ZURICH, "Zürich"),
        ("munchen", MUNICH, "München"),
        ("münch", MUNICH, "München"),
        ("MÜNCHEN", MUNICH, "München"),
        ("munich", MUNICH, "Munich"),
        ("sao paulo", SAO_PAULO, "São Paulo"),
        ("São Paulo", SAO_PAULO, "São Paulo"),
        ("sao  pau", SAO_PAULO, "São Paulo"),
        ("york", YORK_GB, "York"),
        ("new york", NEW_YORK, "New York"),
    ],
)
def test_search_finds_the_city_first(client, q, first, matched):
    results = find(client, q)
    assert results[0]["id"] == first
    assert results[0]["matched_name"] == matched


def test_a_city_has_the_contracts_shape(client):
    berlin = find(client, "berlin", limit=1)[0]
    assert berlin == {
        "id": BERLIN,
        "name": "Berlin",
        "country_code": "DE",
        "country_name": "Germany",
        "admin1_code": "16",
        "admin1_name": "Berlin",
        "label": "Berlin, Germany",
        "latitude": pytest.approx(52.52437),
        "longitude": pytest.approx(13.41053),
        "population": berlin["population"],
        "timezone": "Europe/Berlin",
        "matched_name": "Berlin",
    }
    assert berlin["population"] > 3_000_000


def test_an_exact_name_comes_before_longer_ones(client):
    results = find(client, "york", limit=50)
    exact = [r for r in results if fold(r["matched_name"]) == "york"]
    longer = [r for r in results if fold(r["matched_name"]).startswith("york") and r not in exact]
    assert exact and longer
    assert results[: len(exact)] == exact  # every exact match first
    # Then the longer names; the typo candidates (fewer than 50 names start with "york") last.
    assert results[len(exact) : len(exact) + len(longer)] == longer
    assert exact[0]["id"] == YORK_GB
    # Within each group, by population.
    for group in (exact, longer):
        populations = [r["population"] for r in group]
        assert populations == sorted(populations, reverse=True)


def test_one_row_per_city(client):
    # Munich has Munich, München, Munchen, Minga, ... among its names.
    for q in ("m", "mu", "mun", "munc"):
        ids = [r["id"] for r in find(client, q, limit=50)]
        assert len(ids) == len(set(ids))
    assert [r["id"] for r in find(client, "mun", limit=50)].count(MUNICH) == 1


@pytest.mark.parametrize("q", ["giessen", "gießen", "GIESSEN", "GIEẞEN"])
def test_sharp_s_folds_to_ss(client, q):
    first = find(client, q)[0]
    assert (first["name"], first["matched_name"]) == ("Gießen", "Gießen")


def test_weissenfels_by_a_prefix_across_the_sharp_s(client):
    assert "Weißenfels" in [r["name"] for r in find(client, "weiss")] + [
        r["name"] for r in find(client, "weissenf")
    ]
    assert find(client, "weißenf")[0]["name"] == "Weißenfels"


@pytest.mark.parametrize(
    ("q", "name"),
    [("xi'an", "Xi’an"), ("Xi’an", "Xi’an"), ("l’aquila", "L'Aquila"), ("L'Aquila", "L'Aquila")],
)
def test_typographic_and_plain_apostrophes_match_each_other(client, q, name):
    assert find(client, q)[0]["name"] == name


def test_country_filter(client):
    results = find(client, "york", country="us", limit=50)
    assert results and {r["country_code"] for r in results} == {"US"}
    assert YORK_GB not in [r["id"] for r in results]
    assert find(client, "berl", country="CH") != find(client, "berl")


def test_limit(client):
    assert len(find(client, "s", limit=50)) == 50
    assert len(find(client, "s", limit=1)) == 1
    assert len(find(client, "s")) == 10
    assert find(client, "s", limit=3) == find(client, "s", limit=50)[:3]


def test_no_match_is_an_empty_list(client):
    assert find(client, "qqqxzzz") == []


def test_precomputed_answers_equal_ranking_every_match(backend, imported):
    """Crowded prefixes are answered from the import's precomputed answers; ranking all their
    matches per request must give the same cities in the same order."""
    crowded = {(scope, prefix) for scope, prefix, *_ in imported.top_cities}
    samples = sorted(p for p in crowded if p[0] == "")[:60:3] + [
        ("US", "s"),
        ("DE", "b"),
        ("", "san"),
        ("", "a"),
    ]
    with backend[2].connect() as conn:
        assert search.crowded_prefixes(conn) == crowded
        for scope, prefix in samples:
            assert (scope, prefix) in crowded
            country = scope or None
            fast = search.search(conn, prefix, country, 50, crowded)
            statement, params = search.matching_names(prefix, country)
            every_match = conn.execute(statement.limit(None), params)
            slow = search.rank_matches(every_match, prefix)[:50]
            assert [[city["id"], city["matched_name"]] for city in fast] == slow, (scope, prefix)
            assert len(fast) == 50
            # A worker that does not know the prefix is crowded finds the same answer.
            assert search.search(conn, prefix, country, 50, crowded=frozenset()) == fast


@pytest.mark.security
def test_no_search_reads_more_than_max_name_rows(backend, imported, monkeypatch):
    """Whatever the prefix and whatever a worker knows of the data, a search ranks at most
    MAX_NAME_ROWS names: "" (every name) and crowded prefixes a worker has not heard of."""
    ranked = []
    rank_matches = search.rank_matches

    def spy(rows, folded):
        rows = list(rows)
        ranked.append(len(rows))
        return rank_matches(rows, folded)

    monkeypatch.setattr(search, "rank_matches", spy)
    with backend[2].connect() as conn:
        crowded = search.crowded_prefixes(conn)
        for prefix in ("a", "s", "b", "san"):
            assert (ALL, prefix) in crowded
            assert search.search(conn, prefix, None, 10, frozenset()) == search.search(
                conn, prefix, None, 10, crowded
            )
        assert ranked == []  # their answers were precomputed, and read once the read overflowed
        every = search.search(conn, "", None, 10, crowded)
        in_germany = search.search(conn, "", "DE", 10, frozenset())
    assert ranked == [search.MAX_NAME_ROWS, search.MAX_NAME_ROWS]
    assert len(every) == len(in_germany) == 10
    assert {city["country_code"] for city in in_germany} == {"DE"}


# --- the index is used -------------------------------------------------------------------------


def query_plan(connection, statement, params=None) -> str:
    # The expanded state renders an expanding IN list as its parameters.
    state = statement.compile(dialect=connection.dialect).construct_expanded_state(params)
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql("EXPLAIN " + state.statement, state.parameters)
        return "\n".join(row[0] for row in rows)
    values = tuple(state.parameters[name] for name in state.positiontup)
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + state.statement, values)
    return "\n".join(row[-1] for row in rows)


def test_prefix_search_uses_the_folded_name_index(backend, imported):
    with backend[2].connect() as conn:
        plan = query_plan(conn, *search.matching_names("berl", None))
        by_country = query_plan(conn, *search.matching_names("berl", "DE"))
        precomputed = query_plan(
            conn, search.PRECOMPUTED_ANSWER, {"scope": "", "prefix": "b", "limit": 10}
        )
        # The most crowded prefixes, at the largest limit: one range of the answers' key, which
        # carry their cities' columns; the cities table is not read at all.
        crowded = [
            query_plan(conn, search.PRECOMPUTED_ANSWER, {"scope": "", "prefix": p, "limit": 50})
            for p in ("a", "sa", "b")
        ]
    assert (
        "pk_locations_top_cities" in precomputed or "sqlite_autoindex_locations_top" in precomputed
    )
    for answer in crowded:
        assert "Seq Scan" not in answer and "locations_cities" not in answer, answer
        assert "pk_locations_top_cities" in answer or "autoindex_locations_top" in answer, answer
        assert "Sort" not in answer and "TEMP B-TREE" not in answer, answer
    # The LIMIT stops the range scan: the index gives the order, nothing is sorted.
    assert "Sort" not in plan + by_country and "TEMP B-TREE" not in plan + by_country
    if backend[0] == "postgresql":
        assert "Index" in plan and "pk_locations_names" in plan, plan
        assert "Index" in by_country and "Seq Scan" not in by_country, by_country
        assert "Seq Scan" not in plan
        assert plan.startswith("Limit") and by_country.startswith("Limit"), (plan, by_country)
    else:
        assert "SEARCH locations_names USING INDEX" in plan, plan
        assert "(name_folded>? AND name_folded<?)" in plan, plan
        assert "ix_locations_names_country_folded" in by_country, by_country
        assert "name_folded>? AND name_folded<?" in by_country, by_country


def test_nearest_reads_only_nearby_cells(backend, imported):
    with backend[2].connect() as conn:
        plan = query_plan(conn, nearest.candidates(nearest.cell_ranges(52.5, 13.4, 10)))
    assert "ix_locations_cities_cell" in plan, plan
    assert "Seq Scan" not in plan and "SCAN locations_cities" not in plan, plan


def test_schema_matches_the_tables_after_an_import(backend, imported):
    """The migration, tables.py and the PostgreSQL table swap agree (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with backend[2].connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    mine = [d for d in diff if "locations_" in repr(d)]
    assert mine == []


# --- nearest and by id -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        ("52.5245", "13.4102", BERLIN),
        ("53.9601", "-1.0901", YORK_GB),
        ("47.3769", "8.5417", ZURICH),
    ],
)
def test_nearest_city_to_a_point(client, lat, lon, expected):
    result = client.simulate_get("/api/v1/locations/nearest", params={"lat": lat, "lon": lon})
    assert result.status_code == 200
    assert result.json["id"] == expected
    assert result.json["matched_name"] is None


def test_nearest_across_the_antimeridian(make_app, imported):
    # Suva (Fiji) lies at 178.44 E; from 179.99 W the way is shorter across the 180th meridian
    # (165 km: beyond the default LOCATIONS_NEAREST_MAX_KM).
    app = make_app(LUMEN_PLUGINS="locations", LOCATIONS_NEAREST_MAX_KM="500")
    result = falcon.testing.TestClient(app).simulate_get(
        "/api/v1/locations/nearest", params={"lat": "-18.1", "lon": "-179.99"}
    )
    assert result.status_code == 200
    assert result.json["country_code"] == "FJ"


def test_location_by_id(client):
    result = client.simulate_get(f"/api/v1/locations/{ZURICH}")
    assert result.status_code == 200
    assert (result.json["name"], result.json["matched_name"]) == ("Zürich", None)
    missing = client.simulate_get("/api/v1/locations/1")
    assert missing.status_code == 404
    assert missing.json["description"] == "id: no such location"
    for path in ("abc", "0", "-5", "99999999999", "1.5"):
        assert client.simulate_get(f"/api/v1/locations/{path}").status_code == 404


def test_lookup_hook_ignores_ids_that_cannot_exist(app):
    found = app.lumen.hook.lumen_location_lookup(
        lumen=app.lumen, location_ids=[BERLIN, 1, 2**40, -3]
    )
    assert list(found) == [BERLIN]
    assert found[BERLIN]["matched_name"] is None


# --- photos ------------------------------------------------------------------------------------


def gps_exif(latitude: float, longitude: float) -> Image.Exif:
    def dms(value):
        value = abs(value)
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        return (float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4))

    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N" if latitude >= 0 else "S"
    gps[ExifTags.GPS.GPSLatitude] = dms(latitude)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E" if longitude >= 0 else "W"
    gps[ExifTags.GPS.GPSLongitude] = dms(longitude)
    return exif


def test_upload_with_exif_gps_gets_the_nearest_city(client):
    api = Api(client)
    user = api.user()
    photo = api.upload(user, image=jpeg(exif=gps_exif(47.3769, 8.5417)))  # Zürich centre
    assert photo["location"]["id"] == ZURICH
    assert photo["location"]["matched_name"] is None
    again = client.simulate_get(f"/api/v1/photos/{photo['id']}", headers=user["headers"])
    assert again.json["location"]["name"] == "Zürich"
    plain = api.upload(user)
    assert plain["location"] is None


def test_patch_location_to_an_existing_and_a_missing_city(client):
    api = Api(client)
    user = api.user()
    photo = api.upload(user)
    path = f"/api/v1/photos/{photo['id']}"
    moved = client.simulate_patch(path, json={"location_id": MUNICH}, headers=user["headers"])
    assert moved.status_code == 200, moved.text
    assert moved.json["location"]["name"] == "Munich"
    for missing in (1, 2**40):
        refused = client.simulate_patch(
            path, json={"location_id": missing}, headers=user["headers"]
        )
        assert refused.status_code == 400, refused.text
        assert refused.json["description"] == "location_id: no such location"
    still = client.simulate_get(path, headers=user["headers"])
    assert still.json["location"]["id"] == MUNICH


# --- bad input (security) ----------------------------------------------------------------------

BAD_SEARCHES = [
    ("q=", f"q: {Q_LENGTH_RULE}"),
    ("q=" + "a" * 101, f"q: {Q_LENGTH_RULE}"),
    ("q=-", f"q: {Q_SEARCHABLE_RULE}"),  # folds to "", a prefix of every name
    ("q=%CC%81", f"q: {Q_SEARCHABLE_RULE}"),  # a lone combining acute accent, as well
    ("q=-%20-%20%27", f"q: {Q_SEARCHABLE_RULE}"),
    ("q=" + "%EF%B7%BA" * 10, f"q: {Q_LENGTH_RULE}"),  # 10 characters folding to 180
    ("q=%25", f"q: {Q_CHARACTERS_RULE}"),
    ("q=ber%25", f"q: {Q_CHARACTERS_RULE}"),
    ("q=_", f"q: {Q_CHARACTERS_RULE}"),
    ("q=b_rl", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%5C", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%27%20OR%201%3D1%20--", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%22%3B%20DROP%20TABLE%20locations_cities%3B", f"q: {Q_CHARACTERS_RULE}"),
    ("q=ber%00lin", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%F0%9F%98%80", f"q: {Q_CHARACTERS_RULE}"),  # an emoji
    ("q=ber%07lin", f"q: {Q_CHARACTERS_RULE}"),
    ("q=ber%0Alin", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%1B%5B31m", f"q: {Q_CHARACTERS_RULE}"),
    ("q=%E2%80%AEnilreb", f"q: {Q_CHARACTERS_RULE}"),  # right-to-left override
    ("q=%FF", "q: must be valid UTF-8"),
    ("q=ber%C3%28", "q: must be valid UTF-8"),
    ("q=berl&q=zur", "q: must be given once"),
    ("limit=5", "q: is required"),
    ("q=berl&limit=0", "limit: must be an integer from 1 to 50"),
    ("q=berl&limit=51", "limit: must be an integer from 1 to 50"),
    ("q=berl&limit=x", "limit: must be an integer from 1 to 50"),
    ("q=berl&limit=1e1", "limit: must be an integer from 1 to 50"),
    ("q=berl&country=xyz", f"country: {COUNTRY_RULE}"),
    ("q=berl&country=D%25", f"country: {COUNTRY_RULE}"),
    ("q=berl&country=fr,", f"country: {COUNTRY_RULE}"),
    ("q=berl&country=fr,xx", f"country: {COUNTRY_RULE}"),
    ("q=berl&country=" + ",".join(["fr"] * 11), f"country: {COUNTRY_RULE}"),
    ("q=berl&lat=45", "lon: is required"),
    ("q=berl&lon=7", "lat: is required"),
    ("q=berl&lat=91&lon=7", "lat: must be a number from -90 to 90"),
    ("q=berl&lat=45&lon=x", "lon: must be a number from -180 to 180"),
]

BAD_POINTS = [
    ("lat=91&lon=0", "lat: must be a number from -90 to 90"),
    ("lat=-90.0001&lon=0", "lat: must be a number from -90 to 90"),
    ("lat=0&lon=181", "lon: must be a number from -180 to 180"),
    ("lat=0&lon=-181", "lon: must be a number from -180 to 180"),
    ("lat=x&lon=0", "lat: must be a number from -90 to 90"),
    ("lat=NaN&lon=0", "lat: must be a number from -90 to 90"),
    ("lat=0&lon=%FF", "lon: must be valid UTF-8"),
    ("lat=0", "lon: is required"),
]


@pytest.mark.security
def test_bad_input_is_a_400_naming_the_rule_and_the_tables_stay_intact(client, backend, caplog):
    before = counts(backend[2])
    for path, cases in (
        ("/api/v1/locations", BAD_SEARCHES),
        ("/api/v1/locations/nearest", BAD_POINTS),
    ):
        for query_string, expected in cases:
            caplog.clear()
            result = client.simulate_get(path, query_string=query_string)
            assert result.status_code == 400, (query_string, result.text)
            assert result.json["description"] == expected, query_string
            rule = expected.split(": ", 1)[1]
            warnings = [r for r in caplog.records if r.levelname == "WARNING"]
            assert [r.rule for r in warnings] == [rule], query_string
    assert counts(backend[2]) == before
    assert find(client, "berl")[0]["id"] == BERLIN


@pytest.mark.security
def test_long_rejected_input_is_not_logged(client, caplog):
    secretish = "Z" * 90 + "%"
    result = client.simulate_get("/api/v1/locations", params={"q": secretish})
    assert result.status_code == 400
    assert "Z" * 50 not in caplog.text
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert (record.field, record.value, record.value_length) == ("q", None, 91)


@pytest.mark.security
def test_wildcards_are_never_patterns(backend, imported):
    """Called past the validation, the search still treats % and _ as plain characters."""
    with backend[2].connect() as conn:
        crowded = search.crowded_prefixes(conn)
        for q in ("%", "b%", "_", "b_rl", "\\", "' or 1=1 --"):
            assert search.search(conn, q, None, 10, crowded) == []


# --- the LRU, metrics and health ----------------------------------------------------------------


def test_lru_hits_misses_and_metrics(make_app, imported):
    app = make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="2")
    registry = app.lumen.metrics_registry  # read through lumen.tally: every reading flushes it
    client = falcon.testing.TestClient(app)
    first = find(client, "berl")
    assert find(client, "berl") == first  # hit
    find(client, "berl", limit=5)  # another key: miss
    find(client, "zur")  # miss; evicts "berl" (limit 10)
    find(client, "berl")  # miss again
    cache = app.lumen.state["locations"].cache_info()
    assert (cache.hits, cache.misses) == (1, 4)
    assert registry.get_sample_value("lumen_location_searches_total") == 5
    assert registry.get_sample_value("lumen_location_cache_hits_total") == 1
    checks = {}
    for result in app.lumen.hook.lumen_health_checks(lumen=app.lumen):
        checks.update(result)
    data, cached = checks["locations:data"](), checks["locations:cache"]()
    assert (data["status"], data["observedValue"]) == ("pass", len(imported.cities))
    assert cached["observedValue"] == 20.0 and "1 hits, 4 misses, 2/2 entries" in cached["output"]


def test_metrics_through_the_metrics_plugin(make_app, imported):
    # Listed first, the metrics plugin still finds the plugin's counters: the core calls
    # lumen_metrics after every plugin started.
    app = make_app(
        LUMEN_PLUGINS="metrics,locations", METRICS_ENABLED="true", LOCATION_CACHE_SIZE="10"
    )
    client = falcon.testing.TestClient(app)
    find(client, "zur")
    find(client, "zur")
    text = client.simulate_get("/metrics").text
    assert "lumen_location_searches_total 2.0" in text
    assert "lumen_location_cache_hits_total 1.0" in text


def test_openapi_documents_the_parameters(client):
    paths = client.simulate_get("/openapi.json").json["paths"]
    search_op = paths["/api/v1/locations"]["get"]
    assert [p["name"] for p in search_op["parameters"]] == ["q", "limit", "country", "lat", "lon"]
    assert search_op["parameters"][0]["schema"]["maxLength"] == 100
    nearest_op = paths["/api/v1/locations/nearest"]["get"]
    assert [p["name"] for p in nearest_op["parameters"]] == ["lat", "lon"]
    city = {"$ref": "#/components/schemas/City"}
    assert (
        paths["/api/v1/locations/{location_id}"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        == city
    )


def test_search_works_without_the_metrics_plugin_and_without_the_lru(make_app, imported):
    app = make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="0")
    client = falcon.testing.TestClient(app)
    assert find(client, "berl") == find(client, "berl")
    assert client.simulate_get("/metrics").status_code == 404
    assert app.lumen.metrics_registry.get_sample_value("lumen_location_searches_total") == 2
    info = app.lumen.state["locations"].cache_info()
    assert (info.hits, info.misses, info.currsize) == (0, 2, 0)


@pytest.mark.slow
def test_reimport_empties_every_lru_and_searches_never_see_a_half_import(
    make_app, backend, imported
):
    """One app re-imports while another searches without pause: every answer is complete
    (old or new data, never an empty or partial table), and the other app's LRU is emptied
    through the data version."""
    importing = make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="10")
    serving = make_app(LUMEN_PLUGINS="locations", LOCATION_CACHE_SIZE="10")
    serving.lumen.state["locations"].watch.check_seconds = 0  # compare the version on every search
    client = falcon.testing.TestClient(serving)
    find(client, "berl")
    find(client, "berl")
    cache = serving.lumen.state["locations"].cache_info
    assert (cache().hits, cache().misses) == (1, 1)
    version = serving.lumen.state["locations"].data_version()

    answers, failures, done = [], [], threading.Event()
    crowded = serving.lumen.state["locations"].crowded

    def search_meanwhile():
        with backend[2].connect() as conn:
            while not done.is_set():
                try:
                    answers.append(search.search(conn, "zur", None, 3, crowded)[0]["id"])
                    conn.rollback()
                    time.sleep(0.001)  # leave the importing thread most of the interpreter
                except (SQLAlchemyError, IndexError) as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=search_meanwhile)
    thread.start()
    try:
        assert importer.write(importing.lumen.engine, imported)
    finally:
        done.set()
        thread.join(timeout=30)
    assert failures == []
    assert answers and set(answers) == {ZURICH}
    assert serving.lumen.state["locations"].data_version() == version + 1
    assert find(client, "berl")[0]["id"] == BERLIN
    # Emptied, its statistics too: the search after the re-import was a miss.
    assert (cache().hits, cache().misses, cache().currsize) == (0, 1, 1)
    assert counts(backend[2]) == (len(imported.cities), len(imported.names))


# --- import on an empty database, the CLI, gunicorn ---------------------------------------------


def migrated_sqlite(tmp_path, **env) -> Lumen:
    settings = load_settings(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/fresh.db",
            "STORAGE_PATH": str(tmp_path / "storage"),
            "LUMEN_PLUGINS": "locations",
            **env,
        }
    )
    lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
    lumen.start()
    migrate.upgrade(lumen)
    return lumen


SMALL = {"LOCATIONS_DATASET": "cities15000", "LOCATIONS_MIN_POPULATION": "2000000"}


def test_first_serve_on_an_empty_database_imports_once(tmp_path, caplog):
    lumen = migrated_sqlite(tmp_path, **SMALL)
    try:
        checks = lumen.state["locations"].data_check()
        assert (checks["status"], checks["observedValue"]) == ("warn", 0)
        assert "imports them in the background" in checks["output"]
        lumen.hook.lumen_before_serve(lumen=lumen)  # returns at once: a process imports
        assert lumen.state["locations"].importing.wait(timeout=120) == 0
        status = lumen.state["locations"].status()
        assert status["version"] == 1 and status["dataset"] == "cities15000"
        assert 50 < status["city_count"] < 500
        lumen.state["locations"].importing = None
        lumen.hook.lumen_before_serve(lumen=lumen)  # cities present: nothing to do
        assert lumen.state["locations"].importing is None
        assert lumen.state["locations"].status()["version"] == 1
        assert lumen.state["locations"].data_check()["status"] == "pass"
        assert lumen.state["locations"].nearest(52.52, 13.4)["name"] == "Berlin"
    finally:
        lumen.shutdown()


def test_auto_import_can_be_turned_off_and_waits_for_the_migration(tmp_path, caplog):
    lumen = migrated_sqlite(tmp_path, LOCATIONS_AUTO_IMPORT="false", **SMALL)
    try:
        lumen.hook.lumen_before_serve(lumen=lumen)
        assert lumen.state["locations"].importing is None
        assert lumen.state["locations"].status()["city_count"] == 0
        assert "run `lumen locations import`" in lumen.state["locations"].data_check()["output"]
    finally:
        lumen.shutdown()
    settings = load_settings(
        {"DATABASE_URL": f"sqlite:///{tmp_path}/unmigrated.db", "LUMEN_PLUGINS": "locations"}
    )
    unmigrated = Lumen(settings, make_plugin_manager(["locations"]))
    unmigrated.start()
    unmigrated.hook.lumen_before_serve(lumen=unmigrated)  # no tables: a warning, no crash
    assert "lumen db upgrade" in caplog.text
    unmigrated.shutdown()


def test_bad_settings_stop_start_up_naming_the_variable(tmp_path):
    from lumen.config import ConfigError

    for variable, value in (("LOCATIONS_DATASET", "cities42"), ("LOCATIONS_MIN_POPULATION", "-1")):
        settings = load_settings({"DATABASE_URL": "sqlite://", variable: value})
        lumen = Lumen(settings, make_plugin_manager(["locations"]))
        with pytest.raises(ConfigError, match=variable):
            lumen.start()


def test_cli_import(tmp_path, monkeypatch):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "locations",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context = Context()
    context.pm.hook.lumen_cli(group=cli)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], obj=context).exit_code == 0
    result = runner.invoke(
        cli,
        ["locations", "import", "--dataset", "cities15000", "--min-population", "5000000"],
        obj=context,
    )
    assert result.exit_code == 0, result.output
    assert "cities15000, population >= 5,000,000" in result.output
    status = context.lumen.state["locations"].status()
    assert status["min_population"] == 5_000_000 and 10 < status["city_count"] < 100
    refused = runner.invoke(cli, ["locations", "import", "--dataset", "nope"], obj=context)
    assert refused.exit_code == 2
    context.lumen.shutdown()


@pytest.mark.slow
def test_gunicorn_imports_on_first_start_and_every_worker_forgets_old_answers(
    tmp_path, gunicorn_server
):
    """Two sync workers with the LRU on: after a re-import by another process, within about
    a second neither worker answers from the old data."""
    lumen = migrated_sqlite(tmp_path, **SMALL)
    env = {
        "DATABASE_URL": lumen.settings.database_url,
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "locations",
        "LOCATION_CACHE_SIZE": "100",
        **SMALL,
    }
    server = gunicorn_server(env, workers=2)

    def first_of(q: str) -> str | None:
        url = f"{server.url}/api/v1/locations?q={q}"
        deadline = time.monotonic() + 30
        while True:  # the master imports before the workers start
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    results = loads(response.read())["results"]
                    return results[0]["name"] if results else None
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    try:
        assert first_of("berl") == "Berlin"
        for _ in range(20):  # both workers cache the answer
            assert first_of("berl") == "Berlin"
        # Another process re-imports without Berlin (3.4 million people).
        lumen.state["locations"].import_gazetteer(min_population=5_000_000)
        deadline, fresh_in_a_row = time.monotonic() + 15, 0
        while fresh_in_a_row < 20 and time.monotonic() < deadline:
            fresh_in_a_row = fresh_in_a_row + 1 if first_of("berl") != "Berlin" else 0
        assert fresh_in_a_row == 20, server.log()[-3000:]
    finally:
        lumen.shutdown()


@pytest.mark.slow
def test_a_reimport_purges_every_cached_entry_that_embeds_a_city(
    make_app, backend, imported, monkeypatch, redis_url, redis_prefix, redis_client
):
    """Cached photos and lists embed their city: after a re-import that renames it, no cached
    answer shows the old name, while a cached entry without a city (a profile) stays."""
    from lumen_plugins.locations import locations_of

    app = make_app(
        LUMEN_PLUGINS="locations,cache", REDIS_URL=redis_url, CACHE_KEY_PREFIX=redis_prefix
    )
    client = falcon.testing.TestClient(app)
    api = Api(client)
    owner = api.user()
    photo = api.upload(owner, location_id=str(BERLIN))
    url = f"/api/v1/photos/{photo['id']}"
    profile = f"/api/v1/users/{owner['id']}"
    for _ in range(2):  # the second answer of each comes from the cache
        assert client.simulate_get(url).json["location"]["name"] == "Berlin"
        assert client.simulate_get("/api/v1/photos").json[0]["location"]["name"] == "Berlin"
        client.simulate_get(profile)
    profile_generation = f"{redis_prefix}:tag:user:{owner['id']}:profile"
    profile_before = redis_client.get(profile_generation)

    original = gazetteer.read_dataset

    def renamed(dataset):
        for record in original(dataset):
            if record["geonameid"] == BERLIN:
                record = {**record, "name": "Berlin Renamed"}
            yield record

    monkeypatch.setattr(gazetteer, "read_dataset", renamed)
    try:
        locations_of(app.lumen).import_gazetteer("cities15000")
        assert client.simulate_get(url).json["location"]["name"] == "Berlin Renamed"
        listed = client.simulate_get("/api/v1/photos").json[0]
        assert listed["location"]["name"] == "Berlin Renamed"
        assert redis_client.get(profile_generation) == profile_before  # not purged
    finally:
        importer.write(backend[2], imported)
