"""Concurrency at scale: many clients uploading, editing, deleting and reading at once against
three gunicorn workers with the Redis cache on. Afterwards every file belongs to a row and
every row to a file, every count is right, and every answer the cache gives equals the
database's (the same reads through an app without the cache)."""

from __future__ import annotations

import random
import threading

import falcon.testing
import pytest
from sqlalchemy import func, select

from lumen.models import Photo
from tests.faults import (
    Loop,
    json_request,
    photo_rows,
    quick_user,
    referenced_files,
    request,
    stored_files,
    temporary_files,
    upload,
)
from tests.test_reliability_faults import figures, noise_jpeg

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

USERS = 6


class Clients:
    """What each simulated client does: upload, edit, delete its own photos; read anyone's."""

    def __init__(self, base, users):
        self.base, self.users = base, users
        self.mine = {u["id"]: [] for u in users}
        self._lock = threading.Lock()

    def _someone(self):
        return random.choice(self.users)

    def _one_of(self, user):
        with self._lock:
            return random.choice(self.mine[user["id"]]) if self.mine[user["id"]] else None

    def upload(self):
        user = self._someone()
        visibility = random.choice(["public", "public", "private"])
        status, headers, body = upload(
            self.base, user, noise_jpeg(48), caption="new", visibility=visibility
        )
        if status == 201:
            with self._lock:
                self.mine[user["id"]].append(body["id"])
        return status, headers, body

    def edit(self):
        user = self._someone()
        photo = self._one_of(user)
        if photo is None:
            return self.upload()
        change = random.choice(
            [
                {"caption": f"c{random.randrange(10**6)}"},
                {"visibility": random.choice(["public", "private"])},
            ]
        )
        return json_request(self.base, "PATCH", f"/api/v1/photos/{photo}", change, user["headers"])

    def delete(self):
        user = self._someone()
        photo = self._one_of(user)
        if photo is None:
            return self.upload()
        answer = json_request(self.base, "DELETE", f"/api/v1/photos/{photo}", None, user["headers"])
        if answer[0] == 204:
            with self._lock:
                if photo in self.mine[user["id"]]:
                    self.mine[user["id"]].remove(photo)
        return answer

    def read(self):
        user, owner = self._someone(), self._someone()
        photo = self._one_of(owner)
        headers = random.choice([{}, user["headers"], owner["headers"]])
        path = random.choice(
            [
                "/api/v1/photos?limit=50",
                f"/api/v1/users/{owner['id']}",
                f"/api/v1/users/{owner['id']}/photos?limit=50",
            ]
            + ([f"/api/v1/photos/{photo}"] if photo else [])
        )
        return request(self.base, "GET", path, headers=headers)


def answer_of(client, path, headers):
    result = client.simulate_get(path, headers=headers)
    return result.status_code, result.headers.get("x-total-count"), result.json


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"], indirect=True)
def test_many_clients_at_once_leave_files_rows_counts_and_cache_in_agreement(
    backend, clean_db, gunicorn_server, environ, make_app, redis_url, redis_prefix, redis_client
):
    cached_env = {
        **environ,
        "LUMEN_PLUGINS": "cache",
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": redis_prefix,
    }
    server = gunicorn_server(cached_env, workers=3)
    base = ("127.0.0.1", server.port)
    users = [quick_user(backend[2]) for _ in range(USERS)]
    clients = Clients(base, users)
    loop = Loop(
        {
            "upload": clients.upload,
            "read": clients.read,
            "edit": clients.edit,
            "read again": clients.read,
            "delete": clients.delete,
            "read once more": clients.read,
        },
        threads=10,
    ).run(8.0)
    answers = loop.answers
    statuses = {a.status for a in answers}
    # 404: a photo another request of its owner deleted meanwhile; nothing else may fail.
    assert statuses <= {200, 201, 204, 404}, (
        [(a.label, a.status, a.body) for a in answers if a.status >= 500][:5],
        [line for line in server.log().splitlines() if "Error" in line][-20:],
    )
    uploads = sum(a.status == 201 for a in answers)
    deletes = sum(a.label == "delete" and a.status == 204 for a in answers)
    assert uploads > 20 and deletes > 5

    # Files and rows.
    assert photo_rows(backend[2]) == uploads - deletes
    assert temporary_files(environ["STORAGE_PATH"]) == []
    assert stored_files(environ["STORAGE_PATH"]) == referenced_files(backend[2])

    # Counts, from the database.
    engine = backend[2]
    with engine.connect() as conn:
        counted = select(Photo.owner_id, func.count()).group_by(Photo.owner_id)
        every = {str(o): n for o, n in conn.execute(counted)}
        public = {str(o): n for o, n in conn.execute(counted.where(Photo.visibility == "public"))}
        ids = [(str(p.id), str(p.owner_id)) for p in conn.execute(select(Photo.id, Photo.owner_id))]

    # Every read through the cache (twice: the second from Redis) equals the same read through
    # an app without it, on the same database.
    plain = falcon.testing.TestClient(make_app(LUMEN_PLUGINS="none"))
    compared = 0

    def same(path, headers):
        nonlocal compared
        expected = answer_of(plain, path, headers)
        for _ in range(2):
            status, got_headers, body = request(base, "GET", path, headers=headers)
            assert (status, got_headers.get("x-total-count"), body) == expected, path
            compared += 1
        return expected

    _, total, _ = same("/api/v1/photos?limit=100", {})
    assert int(total) == sum(public.values())
    for user in users:
        for viewer, expected_count in ((user["headers"], every), ({}, public)):
            _, total, _ = same(f"/api/v1/users/{user['id']}/photos?limit=100", viewer)
            assert int(total) == expected_count.get(user["id"], 0)
        # Others see the public photos counted, the user every photo.
        _, _, profile = same(f"/api/v1/users/{user['id']}", {})
        assert profile["photo_count"] == public.get(user["id"], 0)
        _, _, own_profile = same(f"/api/v1/users/{user['id']}", user["headers"])
        assert own_profile["photo_count"] == every.get(user["id"], 0)
    owners = {u["id"]: u for u in users}
    for photo, owner in ids:
        same(f"/api/v1/photos/{photo}", {})
        same(f"/api/v1/photos/{photo}", owners[owner]["headers"])
    figures(
        f"concurrency ({backend[0]})",
        answers,
        uploads=uploads,
        edits=sum(a.label == "edit" for a in answers),
        deletes=deletes,
        reads=sum(a.label.startswith("read") for a in answers),
        compared=compared,
        rows_lost=0,
        orphan_files=0,
    )
