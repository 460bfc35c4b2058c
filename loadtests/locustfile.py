"""Locust scenarios for release load tests: anonymous browsing, signed-in use, and city search.

    lumen seed --users 20 --photos 500          # data to browse (password seeded-user-password)
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 2m

The run fails (exit code 1) when it breaks a release threshold of loadtests/thresholds.json.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import uuid
from pathlib import Path

from locust import FastHttpUser, between, events, task

# LUMEN_LOAD_THRESHOLDS names another thresholds file (e.g. a stricter one for a release).
THRESHOLDS = json.loads(
    Path(
        os.environ.get("LUMEN_LOAD_THRESHOLDS") or Path(__file__).parent / "thresholds.json"
    ).read_text()
)
CITY_PREFIXES = ["ber", "lon", "par", "new y", "san", "mün", "zur", "sao p", "tok", "york", "a"]


def small_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    colour = tuple(random.randrange(256) for _ in range(3))
    Image.new("RGB", (320, 240), colour).save(out, "JPEG")
    return out.getvalue()


class Browser(FastHttpUser):
    """An anonymous visitor: the public feed, photos, thumbnails, and place search."""

    weight = 4
    wait_time = between(0.5, 2)
    photo_ids: list[str] = []

    def on_start(self):
        self.feed()

    @task(4)
    def feed(self):
        offset = random.choice([0, 0, 0, 20, 40])
        with self.client.get(
            f"/api/v1/photos?limit=20&offset={offset}", name="/api/v1/photos", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            Browser.photo_ids = [p["id"] for p in resp.json()] or Browser.photo_ids

    @task(6)
    def photo(self):
        if Browser.photo_ids:
            photo_id = random.choice(Browser.photo_ids)
            self.client.get(f"/api/v1/photos/{photo_id}", name="/api/v1/photos/{id}")

    @task(3)
    def thumbnail(self):
        if Browser.photo_ids:
            photo_id = random.choice(Browser.photo_ids)
            self.client.get(
                f"/api/v1/photos/{photo_id}/image?size=thumb", name="/api/v1/photos/{id}/image"
            )

    @task(2)
    def search_city(self):
        prefix = random.choice(CITY_PREFIXES)
        with self.client.get(
            f"/api/v1/locations?q={prefix}", name="/api/v1/locations", catch_response=True
        ) as resp:
            if resp.status_code == 404:
                resp.success()  # the locations plugin is off on this server


class Member(FastHttpUser):
    """A signed-in user: uploads, edits and deletes their own photos."""

    weight = 1
    wait_time = between(1, 3)

    def on_start(self):
        self.username = f"load{uuid.uuid4().hex[:12]}"
        password = "load-test-password"
        self.client.post("/api/v1/users", json={"username": self.username, "password": password})
        token = self.client.post(
            "/api/v1/tokens", json={"username": self.username, "password": password}
        ).json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.mine: list[str] = []

    @task(3)
    def upload(self):
        resp = self.client.post(
            "/api/v1/photos",
            headers=self.headers,
            files={"file": ("photo.jpg", small_jpeg(), "image/jpeg")},
            data={"caption": "load test"},
        )
        if resp.status_code == 201:
            self.mine.append(resp.json()["id"])

    @task(3)
    def edit(self):
        if self.mine:
            self.client.patch(
                f"/api/v1/photos/{random.choice(self.mine)}",
                headers=self.headers,
                json={"caption": f"edited {random.random():.4f}"},
                name="/api/v1/photos/{id}",
            )

    @task(1)
    def delete(self):
        if self.mine:
            photo_id = self.mine.pop(random.randrange(len(self.mine)))
            self.client.delete(
                f"/api/v1/photos/{photo_id}", headers=self.headers, name="/api/v1/photos/{id}"
            )

    @task(4)
    def own_list(self):
        self.client.get(
            "/api/v1/photos?limit=20", headers=self.headers, name="/api/v1/photos (signed in)"
        )


@events.quitting.add_listener
def enforce_thresholds(environment, **_kwargs):
    total = environment.stats.total
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    elif total.fail_ratio > THRESHOLDS["max_failure_ratio"]:
        problems.append(
            f"failure ratio {total.fail_ratio:.3%} > {THRESHOLDS['max_failure_ratio']:.3%}"
        )
    p95 = total.get_response_time_percentile(0.95) or 0
    if p95 > THRESHOLDS["max_p95_ms"]:
        problems.append(f"p95 {p95:.0f} ms > {THRESHOLDS['max_p95_ms']} ms")
    for problem in problems:
        logging.error("release threshold broken: %s", problem)
    if problems:
        environment.process_exit_code = 1
