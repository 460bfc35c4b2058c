"""The locations plugin's pieces without the shared databases: folding, query validation, the
gazetteer's rows and precomputed answers, the nearest-city grid, and the search LRU."""

from __future__ import annotations

import logging
import math
import random

import falcon
import pytest
import sqlalchemy as sa

from lumen_plugins.locations import gazetteer, importer, nearest, query, search, tables
from lumen_plugins.locations.cache import VersionWatch
from lumen_plugins.locations.normalise import fold, fold_name

# --- folding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "folded"),
    [
        ("Zürich", "zurich"),
        ("MÜNCHEN", "munchen"),
        ("São Paulo", "sao paulo"),
        ("Gießen", "giessen"),
        ("GIEẞEN", "giessen"),
        ("Xi’an", "xi'an"),
        ("Hawaiʻi", "hawai'i"),
        ("Saint-Étienne", "saint etienne"),
        ("  New \u00a0  York ", "new york"),
        ("Łódź", "lodz"),
        ("İstanbul", "istanbul"),
        ("ﬁnale", "finale"),
        ("東京", "東京"),
    ],
)
def test_fold(written, folded):
    assert fold(written) == folded


def test_fold_is_idempotent_on_real_names():
    records = list(gazetteer.read_dataset("cities15000"))
    sample = random.Random(4).sample(records, 2000)
    for record in sample:
        for name in (record["name"], *record["alternatenames"]):
            assert fold(fold(name)) == fold(name), name


# --- query validation --------------------------------------------------------------------------


def description(exc_info) -> str:
    return exc_info.value.to_dict()["description"]


@pytest.mark.parametrize(
    ("q", "text", "folded"),
    [
        ("  Berl ", "Berl", "berl"),
        ("new\u00a0\u2003york", "new york", "new york"),
        ("L’Aquila", "L’Aquila", "l'aquila"),
        ("St. John's, NL", "St. John's, NL", "st. john's, nl"),
        ("नई दिल्ली", "नई दिल्ली", fold("नई दिल्ली")),
        ("a" * 100, "a" * 100, "a" * 100),
        ("\ufdfa" * 5, "\ufdfa" * 5, fold("\ufdfa") * 5),  # 90 characters once folded
        ("-a", "-a", "a"),
        ("Zu\u0308rich", "Zu\u0308rich", "zurich"),  # decomposed input
    ],
)
def test_search_query_accepts(q, text, folded):
    parsed = query.parse_search({"q": q})
    assert (parsed.text, parsed.folded, parsed.country, parsed.limit) == (text, folded, None, 10)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "q: is required"),
        ({"q": ""}, "q: must be 1 to 100 characters"),
        ({"q": "   "}, "q: must be 1 to 100 characters"),
        ({"q": "a" * 101}, "q: must be 1 to 100 characters"),
        ({"q": "a" * 5000}, "q: must be 1 to 100 characters"),
        # The rules hold for the folded query too: these fold to "", a prefix of every name...
        ({"q": "-"}, f"q: {query.Q_SEARCHABLE_RULE}"),
        ({"q": "\u0301"}, f"q: {query.Q_SEARCHABLE_RULE}"),  # a lone combining acute accent
        ({"q": "-\u0301 - \u0308"}, f"q: {query.Q_SEARCHABLE_RULE}"),
        ({"q": "' . ,"}, f"q: {query.Q_SEARCHABLE_RULE}"),  # ...or to punctuation alone
        ({"q": "\ufdfa" * 6}, "q: must be 1 to 100 characters"),  # NFKD: 6 -> 108 characters
        ({"q": "ber%"}, f"q: {query.Q_CHARACTERS_RULE}"),
        ({"q": "a\tb"}, f"q: {query.Q_CHARACTERS_RULE}"),
        ({"q": "a\u200bb"}, f"q: {query.Q_CHARACTERS_RULE}"),  # zero-width space (format)
        ({"q": "\ufffd"}, "q: must be valid UTF-8"),
        ({"q": ["a", "b"]}, "q: must be given once"),
        ({"q": "a", "limit": "0"}, "limit: must be an integer from 1 to 50"),
        ({"q": "a", "limit": "-1"}, "limit: must be an integer from 1 to 50"),
        ({"q": "a", "limit": "٣"}, "limit: must be an integer from 1 to 50"),  # Arabic-Indic 3
        ({"q": "a", "country": "D"}, f"country: {query.COUNTRY_RULE}"),
        ({"q": "a", "country": "ZZ"}, f"country: {query.COUNTRY_RULE}"),
        ({"q": "a", "country": ["fr", "zz"]}, f"country: {query.COUNTRY_RULE}"),
        ({"q": "a", "lat": "45"}, "lon: is required"),
    ],
)
def test_search_query_rejects(params, expected):
    with pytest.raises(falcon.HTTPError) as exc_info:
        query.parse_search(params)
    assert exc_info.value.status == falcon.HTTP_400
    assert description(exc_info) == expected


def test_search_query_country_and_limit():
    parsed = query.parse_search({"q": "york", "country": "gb", "limit": "50"})
    assert (parsed.country, parsed.countries, parsed.limit) == ("GB", ("GB",), 50)
    several = query.parse_search({"q": "york", "country": "us, GB,us"})
    assert (several.country, several.countries) == (None, ("GB", "US"))
    repeated = query.parse_search({"q": "york", "country": ["fr", "be"]})
    assert repeated.countries == ("BE", "FR")
    near = query.parse_search({"q": "york", "lat": "54", "lon": "-1.5"})
    assert near.near == (54.0, -1.5) and query.parse_search({"q": "york"}).near is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"lat": "52.52", "lon": "13.40"}, (52.52, 13.40)),
        ({"lat": "-90", "lon": "180"}, (-90.0, 180.0)),
        ({"lat": "+.5", "lon": "-0."}, (0.5, 0.0)),
        # What JavaScript's String() writes for small numbers: 1e-7, not 0.0000001.
        ({"lat": "1e1", "lon": "-2.96e-29"}, (10.0, -2.96e-29)),
        ({"lat": "4.5E+1", "lon": "1e-7"}, (45.0, 1e-07)),
    ],
)
def test_point_accepts(params, expected):
    assert query.parse_point(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"lon": "1"}, "lat: is required"),
        ({"lat": "91", "lon": "0"}, "lat: must be a number from -90 to 90"),
        ({"lat": "0", "lon": "181"}, "lon: must be a number from -180 to 180"),
        ({"lat": "nan", "lon": "0"}, "lat: must be a number from -90 to 90"),
        ({"lat": "1e400", "lon": "0"}, "lat: must be a number from -90 to 90"),
        ({"lat": "1e", "lon": "0"}, "lat: must be a number from -90 to 90"),
        ({"lat": "1_0", "lon": "0"}, "lat: must be a number from -90 to 90"),
        ({"lat": "0", "lon": "-inf"}, "lon: must be a number from -180 to 180"),
    ],
)
def test_point_rejects(params, expected):
    with pytest.raises(falcon.HTTPError) as exc_info:
        query.parse_point(params)
    assert description(exc_info) == expected


def test_rejections_are_logged_with_the_rule_and_only_short_values(caplog):
    caplog.set_level(logging.WARNING, logger="lumen_plugins.locations.query")
    for q in ("ber%", "x" * 300 + "%"):
        with pytest.raises(falcon.HTTPError):
            query.parse_search({"q": q})
    short, long = caplog.records
    assert short.levelno == logging.WARNING
    assert (short.field, short.rule, short.value) == ("q", query.Q_CHARACTERS_RULE, "'ber%'")
    assert (long.rule, long.value, long.value_length) == (query.Q_LENGTH_RULE, None, 301)
    assert "x" * 50 not in caplog.text


def test_logged_values_are_escaped(caplog):
    caplog.set_level(logging.WARNING, logger="lumen_plugins.locations.query")
    with pytest.raises(falcon.HTTPError):
        query.parse_search({"q": "a\nFAKE b"})
    assert caplog.records[0].value == "'a\\nFAKE b'"


# --- the gazetteer's rows ----------------------------------------------------------------------


def record(geonameid, name, population, alternates=(), country="DE", lat=50.0, lon=10.0):
    return {
        "geonameid": geonameid,
        "name": name,
        "latitude": lat,
        "longitude": lon,
        "countrycode": country,
        "population": population,
        "timezone": "Europe/Berlin",
        "admin1code": "",
        "alternatenames": list(alternates),
    }


def test_build_ranks_cities_and_keeps_one_spelling_per_folded_name():
    built = gazetteer.build(
        [
            record(1, "Munich", 1_500_000, ["Munchen", "München", "munchen", "MUC", " Munich "]),
            record(2, "Augsburg", 300_000, ["Augsburg"]),
            record(3, "Tiny", 10),
        ],
        "test",
        min_population=100,
    )
    assert [row[0] for row in built.cities] == [1, 2]  # by population; Tiny left out
    assert [row[8] for row in built.cities] == [1, 2]  # rank
    assert built.cities[1][3] is None  # an empty admin1 code is stored as NULL
    munich = sorted((row[0], row[2], row[3]) for row in built.names if row[1] == 1)
    assert munich == [
        ("muc", "MUC", False),
        ("munchen", "München", False),
        ("munich", "Munich", True),
    ]
    # Every name carries copies of its city's columns, as the tables name them.
    cities = {row[0]: dict(zip(tables.cities.c.keys(), row, strict=True)) for row in built.cities}
    for row in built.names:
        name = dict(zip(tables.names.c.keys(), row, strict=True))
        city = cities[name["city_id"]]
        assert name["city_name"] == city["name"]
        for column in tables.SHOWN_CITY_COLUMNS[1:]:
            assert name[column] == city[column], column


def random_names(rng: random.Random, count: int) -> list[str]:
    # A small alphabet makes crowded prefixes; some names share their folded form.
    letters = "abcñ"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(1, 5))) for _ in range(count)]


def test_precomputed_answers_equal_ranking_every_match(monkeypatch):
    """For every crowded prefix, the import's answer is what ranking all its matches gives."""
    monkeypatch.setattr(gazetteer, "SHORT_PREFIX_ROWS", 6)
    rng = random.Random(7)
    records = [
        record(
            i,
            name,
            rng.choice([1000, 2000, 5000, 5000, 9000]),  # ties: then by name, then by id
            random_names(rng, rng.randint(0, 4)),
            country=rng.choice(["DE", "FR"]),
        )
        for i, name in enumerate(random_names(rng, 300), 1)
    ]
    built = gazetteer.build(records, "test")
    answers: dict[tuple[str, str], list] = {}
    for scope, prefix, position, city_id, matched_name, *city in built.top_cities:
        # The city's own columns, id to rank (the cities are in rank order; rank is the last).
        assert tuple(built.cities[city[-1] - 1][:9]) == (city_id, *city)
        answer = answers.setdefault((scope, prefix), [])
        assert position == len(answer)
        answer.append([city_id, matched_name])
    assert len(answers) > 30
    for (scope, prefix), answer in answers.items():
        rows = [
            (row[1], row[0], row[2], row[3], row[5])
            for row in built.names
            if row[0].startswith(prefix) and scope in ("", row[4])
        ]
        assert len(rows) > 6  # crowded, by definition
        assert answer == search.rank_matches(rows, prefix)[: gazetteer.TOP_CITIES], (scope, prefix)


def test_rank_matches_puts_equal_names_first_then_population():
    rows = [
        # city_id, folded, name, is_main, rank
        (10, "new york", "New York", True, 1),
        (20, "york", "York", True, 5),
        (20, "yorkshire city", "Yorkshire City", False, 5),
        (30, "yorktown", "Yorktown", True, 3),
        (40, "york", "York", False, 9),
        (40, "yorck", "Yorck", True, 9),
    ]
    matches = [r for r in rows if r[1].startswith("york")]
    assert search.rank_matches(matches, "york") == [[20, "York"], [40, "York"], [30, "Yorktown"]]


# --- nearest -----------------------------------------------------------------------------------


def destination(lat, lon, bearing, km):
    """The point ``km`` from (lat, lon) along ``bearing`` (degrees) on the sphere."""
    angle = km / nearest.EARTH_RADIUS_KM
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing)
    phi2 = math.asin(
        math.sin(phi) * math.cos(angle) + math.cos(phi) * math.sin(angle) * math.cos(theta)
    )
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(angle) * math.cos(phi),
        math.cos(angle) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), (math.degrees(lam2) + 540) % 360 - 180


def test_cell_ranges_cover_every_point_within_the_radius():
    rng = random.Random(11)
    for _ in range(400):
        lat, lon = rng.uniform(-89.9, 89.9), rng.uniform(-180, 180)
        radius = rng.choice([1, 10, 40, 160, 640, 2560])
        ranges = nearest.cell_ranges(lat, lon, radius)
        for _ in range(25):
            point = destination(lat, lon, rng.uniform(0, 360), rng.uniform(0, radius * 0.999))
            cell = nearest.cell_of(*point)
            assert any(low <= cell <= high for low, high in ranges), (lat, lon, radius, point)


def test_cell_ranges_near_the_antimeridian_and_the_poles():
    east, west = nearest.cell_of(10, 179.9), nearest.cell_of(10, -179.9)
    ranges = nearest.cell_ranges(10, 179.95, 20)
    assert all(any(lo <= cell <= hi for lo, hi in ranges) for cell in (east, west))
    polar = nearest.cell_ranges(89.9, 0, 50)
    assert polar == [
        (nearest._row(89.9 - 0.5) * nearest.COLUMNS, nearest.ROWS * nearest.COLUMNS - 1)
    ]


@pytest.fixture
def grid_engine():
    engine = sa.create_engine("sqlite://")
    tables.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_nearest_city_equals_the_brute_force_answer(grid_engine):
    rng = random.Random(3)
    places = [(i, rng.uniform(-85, 85), rng.uniform(-180, 180)) for i in range(1, 400)]
    places += [(500, 0.0, 179.99), (501, 0.0, -179.98), (502, 89.5, 100.0)]
    with grid_engine.begin() as conn:
        conn.execute(
            tables.cities.insert(),
            [
                dict(
                    id=i,
                    name=f"c{i}",
                    country_code="XX",
                    latitude=lat,
                    longitude=lon,
                    population=1000,
                    rank=i,
                    cell=nearest.cell_of(lat, lon),
                )
                for i, lat, lon in places
            ],
        )
    probes = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(150)]
    probes += [(0.0, -179.999), (0.0, 180.0), (90.0, 0.0), (-90.0, 0.0)]
    with grid_engine.connect() as conn:
        for lat, lon in probes:
            found = nearest.nearest_city_id(conn, lat, lon)
            best = min(places, key=lambda p: nearest.distance_km(lat, lon, p[1], p[2]))
            distance = nearest.distance_km(lat, lon, best[1], best[2])
            got = next(p for p in places if p[0] == found)
            assert math.isclose(nearest.distance_km(lat, lon, got[1], got[2]), distance), (lat, lon)


def test_nearest_in_an_empty_gazetteer_is_none(grid_engine):
    with grid_engine.connect() as conn:
        assert nearest.nearest_city_id(conn, 10, 10) is None


# --- the search LRU's data version -----------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_version_watch_reads_at_most_once_a_second_and_reports_changes():
    clock, versions, reads, changes = Clock(), [1], [], []

    def read_version():
        reads.append(clock.now)
        return versions[0]

    watch = VersionWatch(read_version, changes.append, clock=clock)
    watch.check()  # the first check always reports
    versions[0] = 2  # another process imported
    clock.now = 0.5
    watch.check()
    assert changes == [1]
    clock.now = 1.0
    watch.check()
    clock.now = 2.5
    watch.check()  # read again, unchanged
    assert changes == [1, 2]
    assert reads == [0.0, 1.0, 2.5]
    watch.check_now()  # after an import in this process
    assert reads == [0.0, 1.0, 2.5, 2.5]


def test_version_watch_keeps_the_old_version_when_the_database_is_down(caplog):
    clock, failing, changes = Clock(), [False], []

    def read_version():
        if failing[0]:
            raise sa.exc.OperationalError("SELECT", {}, Exception("down"))
        return 1

    watch = VersionWatch(read_version, changes.append, clock=clock)
    watch.check()
    failing[0], clock.now = True, 5.0
    watch.check()
    assert changes == [1] and watch.version == 1
    assert "location data version unreadable" in caplog.text


# --- bounded reads ------------------------------------------------------------------------------


def test_no_search_ranks_more_than_max_name_rows(grid_engine, monkeypatch):
    """A prefix matched by many names is ranked from at most MAX_NAME_ROWS of them, also when
    the worker's list of crowded prefixes is stale and for the empty prefix."""
    rng = random.Random(5)
    names = {"a" + "".join(rng.choice("abcde") for _ in range(6)) for _ in range(900)}
    built = gazetteer.build(
        [record(i, name, 1000 + i) for i, name in enumerate(sorted(names), 1)], "test"
    )
    importer.write(grid_engine, built)
    ranked = []
    rank_matches = search.rank_matches

    def spy(rows, folded):
        rows = list(rows)
        ranked.append(len(rows))
        return rank_matches(rows, folded)

    monkeypatch.setattr(search, "rank_matches", spy)
    with grid_engine.connect() as conn:
        crowded = search.crowded_prefixes(conn)
        assert ("", "a") in crowded
        assert search.search(conn, "a", None, 5, frozenset()) == search.search(
            conn, "a", None, 5, crowded
        )
        assert ranked == []
        assert len(search.search(conn, "", None, 5, crowded)) == 5
        assert len(search.search(conn, "", "DE", 5, crowded)) == 5
        conn.execute(tables.top_cities.delete())  # as if an import were swapping the tables
        conn.commit()
        assert len(search.search(conn, "a", None, 5, crowded)) == 5
    assert ranked == [search.MAX_NAME_ROWS] * 3


@pytest.mark.parametrize("name", ["Saint-Étienne", "Łódź", "MÜNCHEN", "Sankt  Gallen", "ǅakovo"])
def test_a_remembered_fold_is_the_fold(name):
    assert fold_name(name) == fold(name)
    assert fold_name(name) == fold(name)  # the second from what is kept
