"""Once a write has returned, no later read returns the old value: writers and readers run at
once, in threads of one process and across gunicorn workers, against the real Redis.

Every write sets a caption (or a display name) carrying an increasing number. A reader notes the
numbers of the writes that had returned before it sent its request; every photo (and profile)
in its answer must carry at least those numbers."""

from __future__ import annotations

import http.client
import json
import random
import re
import threading

import pytest

from lumen_plugins.cache import cache_of
from lumen_plugins.cache.stats import totals
from tests.conftest import jpeg, multipart
from tests.plugins.test_cache import QuickApi

pytestmark = pytest.mark.slow

WRITERS, READERS = 2, 4


class Ledger:
    """The numbers of the writes that returned, per photo and per user."""

    def __init__(self):
        self._lock = threading.Lock()
        self.latest: dict[str, int] = {}
        self.stale: list[str] = []
        self.reads = self.writes = 0

    def wrote(self, thing: str, number: int) -> None:
        with self._lock:
            self.latest[thing] = max(self.latest.get(thing, 0), number)
            self.writes += 1

    def floor(self) -> dict[str, int]:
        with self._lock:
            return dict(self.latest)

    def check(self, floor: dict[str, int], seen: dict[str, int], what: str) -> None:
        with self._lock:
            self.reads += 1
            for thing, number in seen.items():
                if number < floor.get(thing, 0):
                    self.stale.append(f"{what}: {thing} at {number}, written {floor[thing]}")


def number(text: str) -> int:
    return int(re.fullmatch(r"[cd](\d+)", text).group(1))


def photo_numbers(photos: list[dict], ours: set[str]) -> dict[str, int]:
    return {p["id"]: number(p["caption"]) for p in photos if p["id"] in ours}


def writer(request, owner: dict, photos: list[str], ledger: Ledger, writes: int, seed: int):
    rng = random.Random(seed)
    for n in range(1, writes + 1):
        if n % 5 == 0:
            status, body = request(
                "PATCH", f"/api/v1/users/{owner['id']}", {"display_name": f"d{n}"}, owner
            )
            assert status == 200, body
            ledger.wrote(owner["id"], n)
            continue
        photo = rng.choice(photos)
        status, body = request("PATCH", f"/api/v1/photos/{photo}", {"caption": f"c{n}"}, owner)
        assert status == 200, body
        ledger.wrote(photo, n)


def reader(request, owners: list[dict], photos: list[str], ledger: Ledger, reads: int, seed: int):
    rng = random.Random(seed)
    ours = set(photos)
    for _ in range(reads):
        floor = ledger.floor()
        kind = rng.randrange(4)
        owner = rng.choice(owners)
        if kind == 0:
            path = f"/api/v1/photos/{rng.choice(photos)}"
            status, body = request("GET", path, None, None)
            seen = photo_numbers([body], ours)
        elif kind == 1:
            path = "/api/v1/photos"
            status, body = request("GET", path, None, None)
            seen = photo_numbers(body, ours)
        elif kind == 2:
            path = f"/api/v1/users/{owner['id']}/photos"
            status, body = request("GET", path, None, rng.choice([None, owner]))
            seen = photo_numbers(body, ours)
        else:
            path = f"/api/v1/users/{owner['id']}"
            status, body = request("GET", path, None, None)
            seen = {owner["id"]: number(body["display_name"])}
        assert status == 200, (path, body)
        ledger.check(floor, seen, path)


def run(request, owners: list[dict], photos: dict[str, list[str]], writes: int, reads: int):
    """Run the writers and readers at once; a failure in any of them fails the test (it is
    raised here, not left to a thread's dying words), and so does a thread still running."""
    ledger = Ledger()
    everything = [p for owned in photos.values() for p in owned]
    failures: list[BaseException] = []

    def guarded(target, *args):
        def body():
            try:
                target(*args)
            except BaseException as exc:
                failures.append(exc)

        return threading.Thread(target=body, name=target.__name__)

    threads = [
        guarded(writer, request, owner, photos[owner["id"]], ledger, writes, i)
        for i, owner in enumerate(owners)
    ] + [
        guarded(reader, request, owners, everything, ledger, reads, 100 + i) for i in range(READERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not [t.name for t in threads if t.is_alive()], "a thread did not finish in 300 s"
    if failures:
        raise failures[0]
    return ledger


def test_threads_mixing_writes_and_reads_never_read_a_value_older_than_a_returned_write(
    make_app, redis_url, redis_prefix, redis_client
):
    app = make_app(LUMEN_PLUGINS="cache", REDIS_URL=redis_url, CACHE_KEY_PREFIX=redis_prefix)
    api = QuickApi(app)
    owners = [api.user(display_name="d0") for _ in range(WRITERS)]
    photos = {o["id"]: [api.upload(o, caption="c0")["id"] for _ in range(3)] for o in owners}

    def request(method, path, body, user):
        headers = user["headers"] if user else None
        result = api.client.simulate_request(method, path, json=body, headers=headers)
        return result.status_code, result.json

    ledger = run(request, owners, photos, writes=150, reads=500)
    assert ledger.writes == WRITERS * 150 and ledger.reads == READERS * 500
    assert ledger.stale == []
    hits = totals(cache_of(app.lumen).store.minute_buckets(10))["hits"]
    assert hits > 100  # the reads were answered from the cache, not only from the database


# Several processes writing: on PostgreSQL, the deployment database.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_gunicorn_workers_mixing_writes_and_reads_never_serve_an_old_value(
    backend, clean_db, gunicorn_server, environ, redis_url, redis_prefix, redis_client
):
    env = {
        **environ,
        "LUMEN_PLUGINS": "cache",
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": redis_prefix,
        "CACHE_WARMUP_ENABLED": "true",
        "LOG_LEVEL": "INFO",
    }
    server = gunicorn_server(env, workers=3)

    def request(method, path, body, user, raw=None, content_type="application/json"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        headers = {"Content-Type": content_type, **(user["headers"] if user else {})}
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None

    owners = []
    for i in range(WRITERS):
        name = f"w{i}{redis_prefix[-8:]}"
        password = "correct horse"
        status, user = request(
            "POST",
            "/api/v1/users",
            {"username": name, "password": password, "display_name": "d0"},
            None,
        )
        assert status == 201
        status, token = request(
            "POST", "/api/v1/tokens", {"username": name, "password": password}, None
        )
        assert status == 201
        user["headers"] = {"Authorization": f"Bearer {token['token']}"}
        owners.append(user)
    photos = {}
    for owner in owners:
        photos[owner["id"]] = []
        for _ in range(3):
            body, content_type = multipart({"file": ("p.jpg", jpeg()), "caption": "c0"})
            status, photo = request("POST", "/api/v1/photos", None, owner, body, content_type)
            assert status == 201
            photos[owner["id"]].append(photo["id"])

    ledger = run(request, owners, photos, writes=60, reads=300)
    assert (ledger.writes, ledger.reads) == (WRITERS * 60, READERS * 300)
    assert ledger.stale == []
    stats = [redis_client.hgetall(k) for k in redis_client.scan_iter(f"{redis_prefix}:stats:*")]
    assert totals(stats)["hits"] > 100
    assert server.log().count("cache warmed") == 1  # by the master, once, before the workers


def test_a_failed_write_in_a_thread_fails_the_run():
    """The guard above: a writer that gets a 500 makes ``run`` raise, the test fails."""

    def request(method, path, body, user):
        return (500, {"title": "Internal Server Error"}) if method == "PATCH" else (200, None)

    owner = {"id": "u1", "headers": {}}
    with pytest.raises(AssertionError, match="Internal Server Error"):
        run(request, [owner], {"u1": ["p1"]}, writes=3, reads=0)
