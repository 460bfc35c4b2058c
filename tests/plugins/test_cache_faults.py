"""The cache when Redis goes away: a redis-server of the test's own on a free port (the
machine's shared Redis is never stopped) that is killed and restarted, a dead port, and a cut
TCP proxy between one worker and Redis. No request may fail, and once Redis is back no read
may return a value older than a write that returned."""

from __future__ import annotations

import time
import uuid

import pytest

from lumen import hookimpl
from lumen.models import Photo
from lumen_plugins.cache import cache_of, check_breaker, check_hit_rate
from tests.conftest import free_port
from tests.faults import OwnRedis, TcpProxy, until
from tests.plugins.test_cache import QuickApi, list_entry, photo_entry, served


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


def cache_app(make_app, url: str, prefix: str, **extra):
    settings = {
        "LUMEN_PLUGINS": "cache",
        "REDIS_URL": url,
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_BREAKER_FAILURES": "3",
        "CACHE_BREAKER_COOLDOWN_S": "0.2",
    }
    return make_app(**{**settings, **extra})


class Traffic:
    """Writes captions and reads them back (the photo and the public list); counts requests
    that failed and reads older than the last write that returned."""

    def __init__(self, api: QuickApi, photos: int = 3):
        self.api = api
        self.owner = api.user()
        self.photos = [api.upload(self.owner, caption="v0")["id"] for _ in range(photos)]
        self.latest = dict.fromkeys(self.photos, "v0")
        self.failed = self.stale = self.steps = 0

    def run(self, steps: int) -> None:
        client = self.api.client
        for _ in range(steps):
            self.steps += 1
            photo = self.photos[self.steps % len(self.photos)]
            if self.steps % 4 == 0:
                caption = f"v{self.steps}"
                result = client.simulate_patch(
                    f"/api/v1/photos/{photo}",
                    json={"caption": caption},
                    headers=self.owner["headers"],
                )
                self.failed += result.status_code != 200
                if result.status_code == 200:
                    self.latest[photo] = caption
                continue
            one = client.simulate_get(f"/api/v1/photos/{photo}")
            page = client.simulate_get("/api/v1/photos")
            self.failed += (one.status_code != 200) + (page.status_code != 200)
            seen = [one.json] + page.json if one.status_code == 200 else page.json
            ours = [p for p in seen if p["id"] in self.latest]
            self.stale += sum(p["caption"] != self.latest[p["id"]] for p in ours)


def test_redis_killed_mid_run_fails_no_request_and_serves_nothing_stale_once_back(
    make_app, own_redis, redis_prefix
):
    app = cache_app(make_app, own_redis.url, redis_prefix)
    cache = cache_of(app.lumen)
    metrics = app.lumen.metrics_registry  # counted through lumen.tally: a reading flushes it
    traffic = Traffic(QuickApi(app))
    traffic.run(40)
    own_redis.kill()
    traffic.run(40)
    assert check_breaker(cache)["observedValue"] == "open"
    assert check_hit_rate(cache)["status"] == "warn"
    assert metrics.get_sample_value("lumen_cache_breaker_open") == 1
    assert metrics.get_sample_value("lumen_cache_errors_total") >= 3
    own_redis.start()
    # The background recovery renews the namespace and closes the breaker once Redis answers.
    until(
        lambda: check_breaker(cache)["observedValue"] == "closed" and not cache.store.renewal_owed,
        "the cache never recovered",
    )
    traffic.run(60)
    assert (traffic.failed, traffic.stale) == (0, 0)
    assert check_breaker(cache)["observedValue"] == "closed"
    assert metrics.get_sample_value("lumen_cache_breaker_open") == 0
    # Errors counted while Redis was away reach the shared figures once it answers.
    errors = sum(int(b.get(b"errors", 0)) for b in cache.store.minute_buckets(5))
    assert errors == metrics.get_sample_value("lumen_cache_errors_total") >= 3
    traffic.api.client.simulate_get("/api/v1/photos")
    assert served(cache, *list_entry())  # back to the cache


def test_a_restart_from_a_snapshot_serves_none_of_the_entries_it_brings_back(
    make_app, own_redis, redis_prefix
):
    """Redis comes back from an RDB snapshot holding an entry whose invalidation was lost
    while it was away; a worker that never noticed the outage must not serve it."""
    reader = cache_app(make_app, own_redis.url, redis_prefix)
    # The writer has no cache: its change is exactly a write whose invalidation was lost.
    writer = make_app(LUMEN_PLUGINS="none")
    api = QuickApi(writer)
    owner = api.user()
    photo = api.upload(owner, caption="old")
    reader_client = QuickApi(reader).client
    assert reader_client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] == "old"
    entry = cache_of(reader.lumen).keys.entry(*photo_entry(photo["id"]))
    snapshot = own_redis.client()
    snapshot.save()
    epoch_before = snapshot.get(cache_of(reader.lumen).keys.epoch)
    own_redis.kill()

    changed = api.client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "new"}, headers=owner["headers"]
    )
    assert changed.status_code == 200
    own_redis.start()
    restored = own_redis.client()
    assert restored.hget(entry.data, "v") is not None  # the old entry is back in Redis

    for _ in range(3):
        answer = reader_client.simulate_get(f"/api/v1/photos/{photo['id']}")
        assert answer.status_code == 200
        assert answer.json["caption"] == "new"
    assert restored.get(cache_of(reader.lumen).keys.epoch) != epoch_before  # renewed on NOSCRIPT
    assert served(cache_of(reader.lumen), *photo_entry(photo["id"]))


def test_a_dead_port_fails_no_request_and_the_open_breaker_makes_no_redis_call(
    make_app, redis_prefix, caplog
):
    app = cache_app(make_app, f"redis://127.0.0.1:{free_port()}/0", redis_prefix)
    cache = cache_of(app.lumen)
    traffic = Traffic(QuickApi(app), photos=2)
    traffic.run(12)
    assert (traffic.failed, traffic.stale) == (0, 0)
    assert cache.store.breaker.state != "closed"
    calls = []
    real = cache.store.client.evalsha
    cache.store.client.evalsha = lambda *a, **k: calls.append(a) or real(*a, **k)
    cache.store.breaker.cooldown = 60
    cache.store.breaker.failed()  # open now, for a minute
    for _ in range(20):
        assert (
            traffic.api.client.simulate_get(f"/api/v1/photos/{traffic.photos[0]}").status_code
            == 200
        )
    assert calls == []
    opened = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert 1 <= len(opened) <= 3
    lost = [r for r in caplog.records if r.getMessage().startswith("cache purge failed")]
    # The two uploads, and the three caption changes of the 12 steps: each purge lost, and
    # logged with the tags it could not purge.
    assert len(lost) == 5
    assert all(any(tag.endswith(":photos") for tag in r.tags) for r in lost)
    assert {r.levelname for r in lost} == {"ERROR"}


@pytest.fixture
def proxy(own_redis):
    """Between one worker and Redis: cut, it holds connections without an answer."""
    proxy = TcpProxy(("127.0.0.1", own_redis.port))
    yield proxy
    proxy.close()


def test_a_writer_cut_off_from_redis_renews_the_namespace_as_soon_as_it_can(
    make_app, own_redis, proxy, redis_prefix
):
    # A long cooldown: what ends the window below is the background renewal, not a probe.
    writer = cache_app(
        make_app, f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, CACHE_BREAKER_COOLDOWN_S="60"
    )
    reader = cache_app(make_app, own_redis.url, redis_prefix)
    api, reader_client = QuickApi(writer), QuickApi(reader).client
    owner = api.user()
    photo = api.upload(owner, caption="old")
    url = f"/api/v1/photos/{photo['id']}"
    assert reader_client.simulate_get(url).json["caption"] == "old"

    proxy.cut()
    changed = api.client.simulate_patch(url, json={"caption": "new"}, headers=owner["headers"])
    assert changed.status_code == 200
    # The documented window: the reader reaches Redis, the writer could not invalidate.
    assert reader_client.simulate_get(url).json["caption"] == "old"

    proxy.restore()
    deadline = time.monotonic() + 10
    while reader_client.simulate_get(url).json["caption"] != "new":
        assert time.monotonic() < deadline, "the writer never renewed the namespace"
        time.sleep(0.05)
    assert not cache_of(writer.lumen).store.renewal_owed


def test_no_request_fails_when_redis_answers_too_slowly(make_app, own_redis, redis_prefix):
    app = cache_app(make_app, own_redis.url, redis_prefix, REDIS_TIMEOUT_MS="20")
    traffic = Traffic(QuickApi(app), photos=2)
    traffic.run(8)
    admin = own_redis.client()
    # Writes (and so every script) wait 10 s; CLIENT UNPAUSE still gets through.
    admin.client_pause(10_000, all=False)
    started = time.monotonic()
    traffic.run(12)
    waited = time.monotonic() - started
    admin.execute_command("CLIENT", "UNPAUSE")
    assert waited < 5  # no request waited for Redis: the timeout and the breaker cut it short
    assert (traffic.failed, traffic.stale) == (0, 0)
    # Requests go on until one, after the cooldown, probes Redis and closes the breaker (a probe
    # that misses its 20 ms on a busy machine opens it for another cooldown: keep going).
    until(
        lambda: traffic.run(1) or check_breaker(cache_of(app.lumen))["observedValue"] == "closed",
        "the breaker never closed",
    )
    traffic.run(20)
    assert (traffic.failed, traffic.stale) == (0, 0)
    assert check_breaker(cache_of(app.lumen))["observedValue"] == "closed"


class ReadsDuringTheCommit:
    """A test plugin on the writer, after the cache plugin: once the change is purged before
    its commit, the writer loses Redis, and the reader loads the photo, its image and the public
    list while the change is still uncommitted (the old, public, rows)."""

    def __init__(self, proxy, reader_client, photo_id):
        self.proxy, self.reader, self.photo_id = proxy, reader_client, photo_id
        self.seen: list[int] = []

    @hookimpl(trylast=True)
    def lumen_purge_before_commit(self, lumen, tags, change):
        self.proxy.cut()
        for path in (f"/api/v1/photos/{self.photo_id}", f"/api/v1/photos/{self.photo_id}/image"):
            self.seen.append(self.reader.simulate_get(path).status_code)
        listed = self.reader.simulate_get("/api/v1/photos").json
        self.seen.append(sum(item["id"] == self.photo_id for item in listed))


def public_reads(client, photo_id) -> tuple[int, int, bool]:
    """What anonymous readers get of the photo: its JSON, its image, whether the front page
    lists it."""
    one = client.simulate_get(f"/api/v1/photos/{photo_id}").status_code
    image = client.simulate_get(f"/api/v1/photos/{photo_id}/image").status_code
    listed = any(p["id"] == photo_id for p in client.simulate_get("/api/v1/photos").json)
    return one, image, listed


@pytest.mark.security
@pytest.mark.parametrize("narrowing", ["private", "delete"])
def test_a_writer_cut_off_from_redis_cannot_leave_other_workers_serving_what_it_hid(
    make_app, own_redis, proxy, redis_prefix, narrowing
):
    """Two workers of one deployment share a Redis; the writer reaches it through a proxy.
    A photo made private, or deleted, is refused (503, nothing changed) while the writer cannot
    purge before the commit; and once it could, no reader serves the photo afterwards, even
    when the writer loses Redis before its purge after the commit."""
    timeouts = {"REDIS_TIMEOUT_MS": "500", "CACHE_BREAKER_COOLDOWN_S": "60"}
    writer = cache_app(make_app, f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, **timeouts)
    reader = cache_app(make_app, own_redis.url, redis_prefix, **timeouts)
    api, reader_client = QuickApi(writer), QuickApi(reader).client
    owner = api.user()
    reader_cache = cache_of(reader.lumen)

    def narrow(photo_id):
        url = f"/api/v1/photos/{photo_id}"
        if narrowing == "private":
            return api.client.simulate_patch(
                url, json={"visibility": "private"}, headers=owner["headers"]
            )
        return api.client.simulate_delete(url, headers=owner["headers"])

    # 1. The writer cannot reach Redis: the change is refused and nothing changed.
    photo = api.upload(owner, caption="public", visibility="public")["id"]
    assert public_reads(reader_client, photo) == (200, 200, True)
    assert served(reader_cache, *photo_entry(photo)) and served(reader_cache, *list_entry())
    proxy.cut()
    refused = narrow(photo)
    assert refused.status_code == 503, refused.text
    assert refused.json["title"] == "Cache unavailable"
    assert refused.headers["Retry-After"] == "5"
    with writer.lumen.Session() as session:
        row = session.get(Photo, uuid.UUID(photo))
        assert row is not None and row.visibility == "public"
    assert public_reads(reader_client, photo) == (200, 200, True)  # still public: correct

    # 2. Redis answers the writer again: the change is made, and no reader serves the photo.
    proxy.restore()
    done = narrow(photo)
    assert done.status_code in (200, 204), done.text
    assert public_reads(reader_client, photo) == (404, 404, False)

    # 3. The writer loses Redis between its purge before the commit and the one after, while
    #    a reader loads the old rows during the commit: the reader must not keep them.
    second = api.upload(owner, caption="public too", visibility="public")["id"]
    assert public_reads(reader_client, second) == (200, 200, True)
    during = ReadsDuringTheCommit(proxy, reader_client, second)
    writer.lumen.pm.register(during, name="reads-during-the-commit")
    try:
        done = narrow(second)
    finally:
        writer.lumen.pm.unregister(during)
    assert done.status_code in (200, 204), done.text
    assert during.seen == [200, 200, 1]  # uncommitted yet: the old rows, read from the database
    assert cache_of(writer.lumen).store.renewal_owed  # its purge after the commit was lost
    for _ in range(3):
        assert public_reads(reader_client, second) == (404, 404, False)
    assert not served(reader_cache, *photo_entry(second))
    assert not served(reader_cache, *list_entry())

    # Once the writer reaches Redis again it lifts its fences: the reader caches again.
    proxy.restore()
    until(lambda: not cache_of(writer.lumen).store.renewal_owed, "the writer never recovered")
    reader_client.simulate_get("/api/v1/photos")
    assert served(reader_cache, *list_entry())
