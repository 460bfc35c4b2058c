"""The cache plugin against the machine's real Redis (db 15, a prefix of its own per test) and
both databases: what is cached, which event invalidates what (the table in docs/cache.md), the
cache-aside race, the stampede lock, statistics, warm-up and the CLI."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import falcon.testing
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from lumen import hookimpl, photos, users
from lumen.auth import issue_token
from lumen.cli import make_cli
from lumen.models import Photo, User
from lumen.plugins import make_plugin_manager
from lumen.resources.paging import Page
from lumen_plugins.cache import cache_of, check_breaker, check_hit_rate
from lumen_plugins.cache import stats as cache_stats
from lumen_plugins.cache.stats import totals
from lumen_plugins.cache.store import LOCK_TTL_MS
from lumen_plugins.cache.warmup import warm, warm_once
from tests.conftest import Api

DOCS = Path(__file__).parents[2] / "docs" / "cache.md"


@pytest.fixture
def cache_env(redis_url, redis_prefix, redis_client):
    return {
        "LUMEN_PLUGINS": "cache",
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": redis_prefix,
        # Generous: the machine is shared, and these tests count hits exactly.
        "REDIS_TIMEOUT_MS": "2000",
    }


class QuickApi(Api):
    """Api whose users are made directly in the database: hashing a password takes half a
    second on this machine, and these tests need many users."""

    def __init__(self, app):
        super().__init__(falcon.testing.TestClient(app))
        self.lumen = app.lumen

    def user(self, username=None, password=None, display_name=None):
        with self.lumen.unit_of_work() as session:
            user = User(
                username=username or f"u{uuid.uuid4().hex[:12]}",
                password_hash="not used",
                display_name=display_name,
            )
            session.add(user)
            session.flush()
            token, _ = issue_token(session, user, ttl_hours=1)
        headers = {"Authorization": f"Bearer {token}"}
        return {"id": str(user.id), "username": user.username, "headers": headers}


@pytest.fixture
def cached_app(make_app, cache_env):
    return make_app(**cache_env)


@pytest.fixture
def capi(cached_app):
    return QuickApi(cached_app)


TAGS = ("test",)


def served(cache, key: str, tags: tuple[str, ...] = TAGS) -> bool:
    """Would a lookup of ``key`` (depending on ``tags``) be answered from Redis now?"""
    entry = cache.keys.entry(key, tags)
    return cache.store.lookup(entry, lock=False, count=False).value is not None


def put(cache, key: str, tags: tuple[str, ...] = TAGS) -> None:
    value = cache.get(key, tags, lambda: {"cached": key})
    assert value == {"cached": key}
    assert served(cache, key, tags)


def photo_entry(photo_id) -> tuple[str, tuple[str, ...]]:
    """The key and tags the core caches a photo under."""
    read = photos.photo_read(None, None, uuid.UUID(str(photo_id)))
    return read.key, read.tags


def list_entry(owner_id=None, viewer_id=None, limit=20, offset=0):
    """The key and tags the core caches a list under."""
    owner = uuid.UUID(owner_id) if owner_id else None
    viewer = SimpleNamespace(id=uuid.UUID(viewer_id)) if viewer_id else None
    read = photos.list_read(None, None, viewer, Page(limit, offset), owner, None)
    return read.key, read.tags


def profile_entry(user_id):
    read = users.profile_read(None, uuid.UUID(user_id))
    return read.key, read.tags


# --- what is cached ----------------------------------------------------------------------------


def test_a_photo_is_served_from_the_cache_until_it_changes(capi, cached_app, backend):
    owner = capi.user()
    photo = capi.upload(owner, caption="first")
    client = capi.client
    assert client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] == "first"
    # Changed behind the API's back (no event): the cached value is what is served.
    with backend[2].begin() as conn:
        conn.execute(update(Photo).where(Photo.id == uuid.UUID(photo["id"])).values(caption="x"))
    assert client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] == "first"
    # Changed through the API: the event invalidates before the response returns.
    patched = client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "second"}, headers=owner["headers"]
    )
    assert patched.status_code == 200
    assert client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] == "second"


def _counting_round_trips(app) -> list:
    """A list that grows by one for each round trip the app's hot-path Redis calls make."""
    trips, exchange = [], app.lumen.redis_calls._exchange

    def counted(state, commands):
        trips.append(len(commands))
        return exchange(state, commands)

    app.lumen.redis_calls._exchange = counted
    return trips


@pytest.mark.parametrize("ratelimit", [True, False], ids=["rate limited", "no rate limit"])
def test_a_cache_hit_costs_one_redis_round_trip(make_app, cache_env, redis_prefix, ratelimit):
    plugins = "cache,ratelimit" if ratelimit else "cache"
    app = make_app(
        **{**cache_env, "LUMEN_PLUGINS": plugins}, RATE_LIMIT_KEY_PREFIX=f"{redis_prefix}:rl"
    )
    api = QuickApi(app)
    photo = api.upload(api.user(), caption="once")
    for path in (f"/api/v1/photos/{photo['id']}", "/api/v1/photos"):
        first = api.client.simulate_get(path)  # a miss: the database answers, the cache stores
        trips = _counting_round_trips(app)
        again = api.client.simulate_get(path)
        assert again.status_code == 200 and again.json == first.json
        # The lookup rides in the rate limit's write (one command more), or goes alone.
        assert len(trips) == 1, trips
        del app.lumen.redis_calls._exchange  # the class's own again


def test_what_a_request_prefetched_answers_no_other(make_app, cache_env, redis_prefix):
    app = make_app(
        **{**cache_env, "LUMEN_PLUGINS": "cache,ratelimit"},
        RATE_LIMIT_KEY_PREFIX=f"{redis_prefix}:rl",
        RATE_LIMIT_DEFAULT="2/minute",
    )
    api = QuickApi(app)
    owner = api.user()
    photo = api.upload(owner, caption="old")
    path = f"/api/v1/photos/{photo['id']}"
    cache = cache_of(app.lumen)
    base = totals(cache.store.minute_buckets(2))
    assert api.client.simulate_get(path).json["caption"] == "old"  # a miss, stored
    assert api.client.simulate_get(path).json["caption"] == "old"  # a hit
    # Refused: its lookup was read with the rate limit's check, and never used.
    assert api.client.simulate_get(path).status_code == 429
    changed = api.client.simulate_patch(path, json={"caption": "new"}, headers=owner["headers"])
    assert changed.status_code == 200
    # The next read on this thread (the worker's) is the new caption, not the refused
    # request's lookup of the old entry.
    key, tags = photo_entry(photo["id"])
    assert app.lumen.cached(key, tags, lambda: {"loaded": True}) == {"loaded": True}
    figures = totals(cache.store.minute_buckets(2))
    # The refused request's lookup is not counted as a hit.
    assert figures["hits"] - base["hits"] == 1
    assert figures["misses"] - base["misses"] == 2


def in_redis(redis_client, redis_prefix) -> dict[str, int]:
    """The stats as Redis has them now, read around the app (whose reading would flush)."""
    buckets = [redis_client.hgetall(k) for k in redis_client.scan_iter(f"{redis_prefix}:stats:*")]
    return totals(buckets)


def test_lookups_and_misses_reach_redis_a_second_at_a_time(
    make_app, cache_env, redis_client, redis_prefix, monkeypatch
):
    monkeypatch.setattr(cache_stats, "OWED_SECONDS", 0.3)
    app = make_app(**cache_env)
    api = QuickApi(app)
    photo = api.upload(api.user())
    path = f"/api/v1/photos/{photo['id']}"
    assert api.client.simulate_get(path).status_code == 200  # a miss, then stored
    cache_of(app.lumen).store.flush_stats()
    base = in_redis(redis_client, redis_prefix)
    for _ in range(5):
        assert api.client.simulate_get(path).status_code == 200  # hits
    # The five peeks carried no counts of their own (they are due a second after the last).
    assert in_redis(redis_client, redis_prefix)["lookups"] == base["lookups"]
    time.sleep(0.35)
    assert api.client.simulate_get(path).status_code == 200
    # Due now: the next peek carried them (the one that carried them counts later itself).
    figures = in_redis(redis_client, redis_prefix)
    assert figures["hits"] - base["hits"] == 5 and figures["misses"] == base["misses"]
    app.lumen.shutdown()  # and what is left goes when the app stops
    figures = in_redis(redis_client, redis_prefix)
    assert figures["hits"] - base["hits"] == 6 and figures["misses"] == base["misses"]


def test_counts_carried_by_a_peek_never_sent_are_given_back(
    make_app, cache_env, redis_client, redis_prefix
):
    app = make_app(**cache_env)
    cache = cache_of(app.lumen)
    key, tags = photo_entry(uuid.uuid4())
    cache.store.stats.owe("missed", 2)  # due: this app has sent none yet
    cache.store.defer_peek(cache.keys.entry(key, tags))  # carries them...
    app.lumen.redis_calls.discard()  # ...but its request ended before any round trip
    assert in_redis(redis_client, redis_prefix)["misses"] == 0
    cache.store.flush_stats()
    assert in_redis(redis_client, redis_prefix)["misses"] == 2


def test_lists_and_profiles_are_cached_per_viewer(capi, cached_app):
    owner, other = capi.user(), capi.user()
    capi.upload(owner, caption="open")
    capi.upload(owner, caption="mine", visibility="private")
    client = capi.client
    for _ in range(2):
        anonymous = client.simulate_get("/api/v1/photos")
        assert [p["caption"] for p in anonymous.json] == ["open"]
        assert anonymous.headers["X-Total-Count"] == "1"
        own = client.simulate_get(f"/api/v1/users/{owner['id']}/photos", headers=owner["headers"])
        assert [p["caption"] for p in own.json] == ["mine", "open"]
        seen = client.simulate_get(f"/api/v1/users/{owner['id']}/photos", headers=other["headers"])
        assert [p["caption"] for p in seen.json] == ["open"]
        profile = client.simulate_get(f"/api/v1/users/{owner['id']}")
        assert profile.json["photo_count"] == 1
        mine = client.simulate_get(f"/api/v1/users/{owner['id']}", headers=owner["headers"])
        assert mine.json["photo_count"] == 2
    cache = cache_of(cached_app.lumen)
    for key, tags in (
        list_entry(),
        list_entry(owner["id"], viewer_id=owner["id"]),
        list_entry(owner["id"]),
        profile_entry(owner["id"]),
    ):
        assert served(cache, key, tags), key


@pytest.mark.parametrize(
    "value",
    [
        b'{"looks": "like JSON"}\n' + bytes(range(256)),
        b"",
        b"\x00raw",
        {"json": ["value", 1]},
        "text",
    ],
)
def test_a_value_comes_back_from_redis_as_the_type_it_was_given(cached_app, value):
    calls = []

    def load():
        calls.append(1)
        return value

    for _ in range(2):
        found = cached_app.lumen.cached("typed", ("typed",), load)
        assert found == value and type(found) is type(value)
    assert calls == [1]  # the second came from Redis


def test_a_cached_page_answers_byte_for_byte_as_the_database_did(capi, backend):
    owner = capi.user()
    for n in range(3):
        capi.upload(owner, caption=f'a "quoted" caption \\ {n}\n')
    first = capi.client.simulate_get("/api/v1/photos", params={"limit": 2})
    # Changed behind the API's back: the page that follows can only come from the cache.
    with backend[2].begin() as conn:
        conn.execute(update(Photo).values(caption="changed"))
    again = capi.client.simulate_get("/api/v1/photos", params={"limit": 2})
    assert [item["caption"] for item in first.json] == ['a "quoted" caption \\ 2\n'] + [
        'a "quoted" caption \\ 1\n'
    ]
    assert again.content == first.content
    assert again.headers["X-Total-Count"] == first.headers["X-Total-Count"] == "3"
    assert again.headers["Link"] == first.headers["Link"]


def test_absent_rows_are_not_cached(capi, cached_app, redis_client, redis_prefix):
    missing = uuid.uuid4()
    for _ in range(2):
        assert capi.client.simulate_get(f"/api/v1/photos/{missing}").status_code == 404
        assert capi.client.simulate_get(f"/api/v1/users/{missing}").status_code == 404
        unknown_owner = capi.client.simulate_get("/api/v1/photos", params={"owner_id": missing})
        assert unknown_owner.status_code == 404
        assert unknown_owner.json["description"] == "id: no such user"
    # Nothing that outlives a stampede lock is left behind by reads of what does not exist:
    # no entry, the locks freed, the generations the lookups made expiring with the lock's
    # TTL. What else remains is the deployment's own: its namespace epoch (set on first
    # contact) and the minute's statistics bucket.
    keys = {key.decode() for key in redis_client.scan_iter(f"{redis_prefix}:*")}
    kinds = {key[len(redis_prefix) + 1 :].split(":")[0] for key in keys}
    assert kinds <= {"epoch", "stats", "tag"}, keys
    for key in keys:
        if key.startswith(f"{redis_prefix}:tag:"):
            assert 0 < redis_client.pttl(key) <= LOCK_TTL_MS, key


def test_every_key_has_a_ttl_of_at_most_cache_ttl_days(
    make_app, cache_env, redis_client, redis_prefix
):
    app = make_app(**cache_env, CACHE_TTL_DAYS="0.5")
    api = QuickApi(app)
    owner = api.user()
    photo = api.upload(owner)
    api.client.simulate_get(f"/api/v1/photos/{photo['id']}")
    api.client.simulate_get("/api/v1/photos")
    api.client.simulate_get(f"/api/v1/users/{owner['id']}")
    api.client.simulate_get(f"/api/v1/users/{owner['id']}/photos")
    api.client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "c"}, headers=owner["headers"]
    )
    keys = list(redis_client.scan_iter(f"{redis_prefix}:*"))
    assert len(keys) >= 8
    for key in keys:
        assert 0 < redis_client.ttl(key) <= 43200, key


def test_prefixes_keep_deployments_apart(make_app, cache_env, redis_client):
    other_prefix = f"{cache_env['CACHE_KEY_PREFIX']}x"
    first = cache_of(make_app(**cache_env).lumen)
    second = cache_of(make_app(**{**cache_env, "CACHE_KEY_PREFIX": other_prefix}).lumen)
    key = f"test:{uuid.uuid4()}"
    first.get(key, TAGS, lambda: {"deployment": 1})
    assert second.get(key, TAGS, lambda: {"deployment": 2}) == {"deployment": 2}
    assert first.get(key, TAGS, lambda: {"deployment": 0}) == {"deployment": 1}
    second.store.clear()
    assert served(first, key)
    assert not list(redis_client.scan_iter(f"{other_prefix}:*"))


# --- the docs table ----------------------------------------------------------------------------


def docs_table() -> dict[tuple[str, str], set[str]]:
    """(event, when) -> the entry patterns of docs/cache.md's invalidation table."""
    section = DOCS.read_text().split("## Which event touches which entry", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`lumen_"):
            rows[(cells[0].strip("`"), cells[1])] = set(re.findall(r"`([^`]+)`", cells[2]))
    return rows


class World:
    """An owner with the photo an event acts on and a second photo, and another user with a
    photo: every kind of entry, for each of them, is cached before the event."""

    def __init__(self, api: Api, cache, visibility: str | None):
        self.api, self.cache = api, cache
        self.owner, self.other = api.user(), api.user()
        self.photo = api.upload(self.owner, visibility=visibility) if visibility else None
        self.second = api.upload(self.owner)
        self.elsewhere = api.upload(self.other)

    def universe(self) -> dict[str, tuple[str, ...]]:
        """Every entry, by key, with the tags the core declares for it."""
        entries = [list_entry(), list_entry(limit=5, offset=10)]
        shown = [self.second, self.elsewhere] + ([self.photo] if self.photo else [])
        entries += [photo_entry(photo["id"]) for photo in shown]
        for user in (self.owner, self.other):
            entries += [
                profile_entry(user["id"]),
                list_entry(user["id"], viewer_id=user["id"]),
                list_entry(user["id"]),
                list_entry(user["id"], limit=3),
            ]
        return dict(entries)

    def expand(self, patterns: set[str]) -> set[str]:
        names = {"owner": self.owner["id"], "photo": self.photo["id"] if self.photo else "-"}
        globs = {
            p.replace("{owner}", names["owner"]).replace("{photo}", names["photo"])
            for p in patterns
        }
        return {key for key in self.universe() if any(fnmatch.fnmatchcase(key, g) for g in globs)}

    def patch(self, body: dict) -> None:
        result = self.api.client.simulate_patch(
            f"/api/v1/photos/{self.photo['id']}", json=body, headers=self.owner["headers"]
        )
        assert result.status_code == 200, result.text


class TwoCities:
    """A stand-in for the locations plugin, so a photo's location can change."""

    @hookimpl
    def lumen_location_lookup(self, lumen, location_ids):
        return {i: {"id": i, "name": f"city {i}"} for i in location_ids if i in (1, 2)}


def _delete(world: World) -> None:
    result = world.api.client.simulate_delete(
        f"/api/v1/photos/{world.photo['id']}", headers=world.owner["headers"]
    )
    assert result.status_code == 204


def _rename(world: World) -> None:
    result = world.api.client.simulate_patch(
        f"/api/v1/users/{world.owner['id']}",
        json={"display_name": "New Name"},
        headers=world.owner["headers"],
    )
    assert result.status_code == 200


# (event, when) -> (visibility of the photo before, the change made through the API)
ACTIONS = {
    ("lumen_photo_created", "the photo is public"): (
        None,
        lambda w: w.api.upload(w.owner, visibility="public"),
    ),
    ("lumen_photo_created", "the photo is private"): (
        None,
        lambda w: w.api.upload(w.owner, visibility="private"),
    ),
    ("lumen_photo_updated", "its visibility changed"): (
        "public",
        lambda w: w.patch({"visibility": "private"}),
    ),
    ("lumen_photo_updated", "caption or location of a public photo changed"): (
        "public",
        lambda w: (w.patch({"caption": "new"}), w.patch({"location_id": 2})),
    ),
    ("lumen_photo_updated", "caption or location of a private photo changed"): (
        "private",
        lambda w: (w.patch({"caption": "new"}), w.patch({"location_id": 2})),
    ),
    ("lumen_photo_deleted", "the photo was public"): ("public", _delete),
    ("lumen_photo_deleted", "the photo was private"): ("private", _delete),
    ("lumen_user_updated", "the display name changed"): (None, _rename),
}


def test_the_docs_table_lists_every_case_the_tests_make():
    assert set(docs_table()) == set(ACTIONS)


@pytest.mark.parametrize("row", sorted(ACTIONS), ids=lambda row: f"{row[0]}: {row[1]}")
def test_each_event_invalidates_exactly_the_entries_of_the_docs_table(row, capi, cached_app):
    cached_app.lumen.pm.register(TwoCities())
    cache = cache_of(cached_app.lumen)
    visibility, act = ACTIONS[row]
    world = World(capi, cache, visibility)
    if visibility:
        world.patch({"location_id": 1})
    universe = world.universe()
    for key, tags in universe.items():
        put(cache, key, tags)
    act(world)
    gone = {key for key, tags in universe.items() if not served(cache, key, tags)}
    assert gone == world.expand(docs_table()[row])


# --- the race and the stampede -----------------------------------------------------------------


def test_a_reader_that_loaded_the_old_row_cannot_store_it_after_the_write(capi, cached_app):
    """The classic cache-aside race: the reader loads, the writer commits and invalidates,
    then the reader stores. The store must be refused."""
    lumen = cached_app.lumen
    owner = capi.user()
    photo = capi.upload(owner, caption="old")
    photo_id = uuid.UUID(photo["id"])
    loaded, writer_done, results = threading.Event(), threading.Event(), []

    def slow_loader():
        with lumen.Session() as session:
            record = photos.load_record(lumen, session, photo_id)
        loaded.set()
        assert writer_done.wait(10)
        return record

    reader = threading.Thread(
        target=lambda: results.append(lumen.cached(*photo_entry(photo_id), slow_loader))
    )
    reader.start()
    assert loaded.wait(10)
    patched = capi.client.simulate_patch(
        f"/api/v1/photos/{photo_id}", json={"caption": "new"}, headers=owner["headers"]
    )
    assert patched.status_code == 200
    writer_done.set()
    reader.join(10)
    # It was read before the write returned.
    assert json.loads(photos.PhotoRecord(results[0]).body)["caption"] == "old"
    assert capi.client.simulate_get(f"/api/v1/photos/{photo_id}").json["caption"] == "new"


def test_one_reader_loads_a_missing_entry_while_the_others_wait(make_app, cache_env):
    cache = cache_of(make_app(**cache_env, CACHE_LOCK_WAIT_MS="5000").lumen)
    cache.get(f"test:{uuid.uuid4()}", TAGS, dict)  # scripts loaded: no first-contact renewal
    key = f"test:{uuid.uuid4()}"
    calls, results, start = [], [], threading.Barrier(8)

    def loader():
        calls.append(1)
        threading.Event().wait(0.2)
        return {"loaded": True}

    def read():
        start.wait()
        results.append(cache.get(key, TAGS, loader))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert results == [{"loaded": True}] * 8


def test_a_failing_loader_frees_the_lock(cached_app, redis_client, redis_prefix):
    cache = cache_of(cached_app.lumen)
    key = f"test:{uuid.uuid4()}"

    def missing():
        raise falcon.HTTPNotFound()

    with pytest.raises(falcon.HTTPNotFound):
        cache.get(key, TAGS, missing)
    assert not list(redis_client.scan_iter(f"{redis_prefix}:temp:*"))
    assert cache.get(key, TAGS, lambda: {"found": 1}) == {"found": 1}


# --- without Redis -----------------------------------------------------------------------------


def test_without_redis_url_it_passes_through_and_says_so_once(make_app, caplog):
    with caplog.at_level(logging.INFO, logger="lumen_plugins.cache"):
        app = make_app(LUMEN_PLUGINS="cache")
        api = QuickApi(app)
        owner = api.user()
        photo = api.upload(owner, caption="a")
        for caption in ("b", "c"):
            api.client.simulate_patch(
                f"/api/v1/photos/{photo['id']}", json={"caption": caption}, headers=owner["headers"]
            )
            assert (
                api.client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] == caption
            )
    said = [r for r in caplog.records if r.name.startswith("lumen_plugins.cache")]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        ("INFO", "cache off: REDIS_URL is not set, every read goes to the database")
    ]
    calls = []
    assert app.lumen.cached("x", TAGS, lambda: calls.append(1) or {"n": len(calls)}) == {"n": 1}
    assert app.lumen.cached("x", TAGS, lambda: calls.append(1) or {"n": len(calls)}) == {"n": 2}
    assert check_breaker(cache_of(app.lumen))["observedValue"] == "off"


# --- statistics, health, metrics ---------------------------------------------------------------


def test_hits_and_misses_are_counted_in_redis_and_in_metrics(cached_app):
    lumen = cached_app.lumen
    registry = lumen.metrics_registry  # counted through lumen.tally: every reading flushes it
    cache = cache_of(lumen)
    keys = [f"test:{uuid.uuid4()}" for _ in range(4)]
    for key in keys:
        cache.get(key, TAGS, lambda: {"v": 1})  # miss
    for key in keys * 3:
        cache.get(key, TAGS, lambda: {"v": 2})  # hit
    assert registry.get_sample_value("lumen_cache_hits_total") == 12
    assert registry.get_sample_value("lumen_cache_misses_total") == 4
    check = check_hit_rate(cache)
    assert check["observedValue"] == 75.0
    assert check["status"] == "pass"  # too little traffic to judge anyway


def test_the_hit_rate_check_warns_below_70_percent_once_there_is_traffic(cached_app):
    lumen = cached_app.lumen
    cache = cache_of(lumen)
    for _ in range(100):
        cache.get(f"test:{uuid.uuid4()}", TAGS, lambda: {"v": 1})
    checks = lumen.hook.lumen_health_checks(lumen=lumen)[0]
    hit_rate = checks["cache:hitRate"]()
    assert hit_rate["status"] == "warn" and hit_rate["observedValue"] == 0.0
    assert hit_rate["observedUnit"] == "percent"
    key = f"test:{uuid.uuid4()}"
    for _ in range(400):
        cache.get(key, TAGS, lambda: {"v": 1})
    assert checks["cache:hitRate"]()["status"] == "pass"
    assert checks["cache:breaker"]() == {
        "componentType": "datastore",
        "observedValue": "closed",
        "observedUnit": None,
        "status": "pass",
        "output": "Redis answers",
    }


def test_metrics_keep_working_when_the_hook_is_never_called(cached_app):
    cache = cache_of(cached_app.lumen)
    assert cache.get(f"test:{uuid.uuid4()}", TAGS, lambda: {"v": 1}) == {"v": 1}


def test_invalidations_are_counted(capi, cached_app):
    owner = capi.user()
    capi.upload(owner)
    capi.upload(owner)
    buckets = cache_of(cached_app.lumen).store.minute_buckets(2)
    assert sum(int(b.get(b"invalidations", 0)) for b in buckets) == 2


# --- warm-up and the CLI -----------------------------------------------------------------------


def test_warm_up_loads_the_newest_public_photos_in_batches(make_app, cache_env):
    app = make_app(**cache_env, CACHE_WARMUP_ENABLED="true", CACHE_WARMUP_BATCH_SIZE="3")
    api = QuickApi(app)
    owner = api.user()
    public = [api.upload(owner) for _ in range(7)]
    private = api.upload(owner, visibility="private")
    cache = cache_of(app.lumen)
    sizes = []
    result = warm(app.lumen, cache, 100, sizes.append)
    assert sizes == [3, 3, 2]  # 7 photos and the front page, 3 at a time
    assert result == {"photos": 7, "stored": 8}
    assert all(served(cache, *photo_entry(p["id"])) for p in public)
    assert not served(cache, *photo_entry(private["id"]))
    assert served(cache, *list_entry())
    # What the warm-up stored is what the API serves.
    assert api.client.simulate_get(f"/api/v1/photos/{public[0]['id']}").json == public[0]
    assert warm(app.lumen, cache, 100)["stored"] == 0  # already warm


def test_warm_up_runs_in_one_process_at_a_time(make_app, cache_env, redis_client, redis_prefix):
    app = make_app(**cache_env, CACHE_WARMUP_ENABLED="true")
    api = QuickApi(app)
    photo = api.upload(api.user())
    redis_client.set(f"{redis_prefix}:temp:warmup", "another host", ex=60)
    app.lumen.hook.lumen_before_serve(lumen=app.lumen)
    assert not served(cache_of(app.lumen), *photo_entry(photo["id"]))
    redis_client.delete(f"{redis_prefix}:temp:warmup")
    warm_once(app.lumen, cache_of(app.lumen))
    assert served(cache_of(app.lumen), *photo_entry(photo["id"]))
    assert not redis_client.exists(f"{redis_prefix}:temp:warmup")


def test_warm_up_is_off_by_default(make_app, cache_env):
    app = make_app(**cache_env)
    api = QuickApi(app)
    photo = api.upload(api.user())
    app.lumen.hook.lumen_before_serve(lumen=app.lumen)
    assert not served(cache_of(app.lumen), *photo_entry(photo["id"]))


def run_cli(environ: dict, *args: str):
    return CliRunner(env=environ).invoke(make_cli(make_plugin_manager(["cache"])), list(args))


def test_cli_warm_stats_and_clear(make_app, environ, cache_env, redis_client, redis_prefix):
    app = make_app(**cache_env)
    api = QuickApi(app)
    photo = api.upload(api.user())
    redis_client.set("lumentest:unrelated", "kept", ex=60)
    env = {**environ, **cache_env}

    warmed = run_cli(env, "cache", "warm")
    assert warmed.exit_code == 0, warmed.output
    assert "warmed 2 entries (1 photos looked at)" in warmed.output
    assert served(cache_of(app.lumen), *photo_entry(photo["id"]))
    assert api.client.simulate_get(f"/api/v1/photos/{photo['id']}").status_code == 200
    # The app counts its lookups in the process: they reach Redis with a peek a second later,
    # when the app reads the figures itself or when it stops; here, before the CLI reads them.
    cache_of(app.lumen).store.flush_stats()

    stats = run_cli(env, "cache", "stats", "--json")
    assert stats.exit_code == 0, stats.output
    figures = __import__("json").loads(stats.output)["windows"]["5m"]
    assert figures["hits"] == 1 and figures["invalidations"] == 1

    cleared = run_cli(env, "cache", "clear")
    assert cleared.exit_code == 0, cleared.output
    assert not list(redis_client.scan_iter(f"{redis_prefix}:*"))
    assert redis_client.get("lumentest:unrelated") == b"kept"
    redis_client.delete("lumentest:unrelated")
    # The app goes on after a clear: entries, generations and scripts come back.
    assert api.client.simulate_get(f"/api/v1/photos/{photo['id']}").status_code == 200
    assert served(cache_of(app.lumen), *photo_entry(photo["id"]))


def test_cli_says_when_caching_is_off(environ):
    result = run_cli({**environ, "LUMEN_PLUGINS": "cache", "REDIS_URL": ""}, "cache", "stats")
    assert result.exit_code == 1
    assert "caching is off: REDIS_URL is not set" in result.output
