"""The paths of issue 13, each beside the reference app doing the same database or Redis work:
one seeded PostgreSQL database, the Lumen configurations they need (every plugin on), and the
requests. Shared by ``targets_bench`` (gunicorn + wrk) and ``profile_paths`` (in process).

Every configuration has every installed plugin on, metrics included, with the rate limits far
above the load (wrk comes from one address: this measures the cost of counting, not refusals;
see loadtests/README.md and docs/ratelimit.md).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import falcon.testing
import redis

from benchmarks.cache_bench import seed as seed_photos
from lumen import migrate
from lumen.app import Lumen, create_app
from lumen.auth import issue_token
from lumen.config import load_settings
from lumen.models import User
from lumen.plugins import installed_plugins, make_plugin_manager
from lumen_plugins.locations import gazetteer, importer

REDIS_URL = "redis://127.0.0.1:6379/15"
# Requests come from the 254 addresses of 203.0.113.0/24 (X-Forwarded-For from 127.0.0.1, the
# trusted proxy; in process, as the client address) and signed-in requests from MEMBERS members,
# each under the default policy's one-minute window with ten times its quota (wrk's load, some
# 5,000 requests a second, is 20 a second per address, over the default 600 a minute): nothing
# is refused, and each counter is a caller's own, as short as its window's requests (one
# counter for all of wrk's load would be one list far longer than any real client's). The
# default RATE_LIMIT_BATCH applies. Probes are exempt whatever the limit.
LOOSE_LIMITS = {"RATE_LIMIT_DEFAULT": "6000/minute", "TRUSTED_PROXIES": "127.0.0.1/32"}
ADDRESSES = tuple(f"203.0.113.{n}" for n in range(1, 255))
MEMBERS = 50
# Lumen configurations by name: what each adds to the common environment.
# The city LRU at its default size (LOCATION_CACHE_SIZE) but where it is off.
CONFIGS = {
    "redis": {"REDIS_URL": REDIS_URL},
    "no_redis": {},
    "lru_off": {"REDIS_URL": REDIS_URL, "LOCATION_CACHE_SIZE": "0"},
}


@dataclass(frozen=True)
class Path:
    label: str
    config: str  # which Lumen configuration answers it
    lumen: tuple[str, ...]  # request paths, cycled through (city search: typed prefixes)
    reference: str  # the reference app's path
    target: float  # Lumen's req/s as a share of the reference's, at least
    p99_ms: float | None = None  # Lumen's p99 at most, where the issue sets one
    signed_in: bool = False  # each request with the token of one of the members, in turn
    warm_s: int = 2  # seconds of load before the measured rounds, per side
    # Lumen's side is loaded until its workers' city LRUs answer (nearly) every search
    fills_lru: bool = False


@dataclass
class Scenario:
    database_url: str
    prefix: str  # this run's Redis keys: the cache's, the rate limit's and the blobs
    photo_id: str
    tokens: list[str]  # one per member
    queries: list[str]  # city search paths
    paths: list[Path] = field(default_factory=list)

    def env(self, config: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "LUMEN_PLUGINS": ",".join(installed_plugins()),
            "METRICS_ENABLED": "true",
            "LOCATIONS_AUTO_IMPORT": "false",
            "CACHE_KEY_PREFIX": f"{self.prefix}:cache",
            "RATE_LIMIT_KEY_PREFIX": f"{self.prefix}:rl",
            "LOG_LEVEL": "WARNING",
            **LOOSE_LIMITS,
            **CONFIGS[config],
        }

    def reference_env(self) -> dict[str, str]:
        return {
            "LUMEN_PLUGINS": "none",
            "REFERENCE_DATABASE_URL": self.database_url,
            "REFERENCE_REDIS_URL": REDIS_URL,
        }


def city_queries(count: int, dataset: str) -> list[str]:
    from urllib.parse import urlencode

    from benchmarks.locations_bench import typed_prefixes

    records = list(gazetteer.read_dataset(dataset))
    return ["/api/v1/locations?" + urlencode(q) for q in typed_prefixes(records, count)]


def _prepare(url: str, photos: int, dataset: str) -> tuple[str, list[str]]:
    """Seed photos, migrate every plugin's tables, import the cities; a photo id and a token
    of each of MEMBERS members (each owns photos, some private)."""
    public = seed_photos(url, photos)
    settings = load_settings({"DATABASE_URL": url, "LUMEN_PLUGINS": ",".join(installed_plugins())})
    lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
    lumen.start()
    try:
        migrate.upgrade(lumen)
        importer.write(lumen.engine, gazetteer.build(gazetteer.read_dataset(dataset), dataset))
        with lumen.unit_of_work() as session:
            members = session.query(User).order_by(User.username).limit(MEMBERS).all()
            tokens = [issue_token(session, member, 24)[0] for member in members]
    finally:
        lumen.shutdown()
    return public[0], tokens


def _store_blobs(scenario: Scenario, client: redis.Redis) -> dict[str, str]:
    """The reference's pre-serialised blobs: the bytes Lumen answers the photo and the first
    page with, read from an app in this process, kept under this run's prefix."""
    app = create_app(load_settings(scenario.env("no_redis")))
    try:
        test = falcon.testing.TestClient(app)
        keys = {}
        for name, path in (
            ("photo", f"/api/v1/photos/{scenario.photo_id}"),
            ("page", "/api/v1/photos"),
        ):
            result = test.simulate_get(path)
            assert result.status_code == 200, result.text
            keys[name] = f"{scenario.prefix}:blob:{name}"
            client.set(keys[name], json.dumps(result.json, separators=(",", ":")), ex=86400)
    finally:
        app.lumen.shutdown()
    return keys


def issue_paths(scenario: Scenario, blobs: dict[str, str]) -> list[Path]:
    photo = f"/api/v1/photos/{scenario.photo_id}"
    row = f"/row/{scenario.photo_id}"
    queries = tuple(scenario.queries)
    list_path = ("/api/v1/photos",)
    return [
        Path("GET /livez", "redis", ("/livez",), "/static", 0.85),
        Path("GET photo, cache hit", "redis", (photo,), f"/blob/{blobs['photo']}", 0.80),
        Path("first list page, cache hit", "redis", list_path, f"/blob/{blobs['page']}", 0.75),
        Path("GET photo, no Redis", "no_redis", (photo,), row, 0.75),
        Path("first list page, no Redis", "no_redis", list_path, "/page", 0.70),
        Path("signed-in member's own first page", "redis", list_path, "/page", 0.60, None, True),
        Path("city search, LRU off", "lru_off", queries, row, 0.70, 15.0),
        # Each worker's LRU fills with what that worker is asked, so a prefix reaches all four
        # only after it was asked some twenty times: half a minute of load left one search in
        # nine to the database. The warm-up goes on until the LRUs answer 99 % (targets_bench).
        Path("city search, LRU on", "redis", queries, "/static", 0.70, warm_s=30, fills_lru=True),
    ]


@contextlib.contextmanager
def scenario(
    photos: int = 3000, queries: int = 4000, dataset: str = "cities500"
) -> Iterator[Scenario]:
    """The seeded database and this run's Redis keys, removed afterwards."""
    from benchmarks.harness import pg_database

    prefix = f"lumenbench:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    with pg_database("lumen_bench_paths") as url:
        photo_id, tokens = _prepare(url, photos, dataset)
        found = Scenario(url, prefix, photo_id, tokens, city_queries(queries, dataset))
        try:
            found.paths = issue_paths(found, _store_blobs(found, client))
            yield found
        finally:
            for key in client.scan_iter(f"{prefix}:*"):
                client.unlink(key)
