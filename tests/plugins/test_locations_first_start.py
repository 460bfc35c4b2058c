"""The first start on a database without cities, under a real gunicorn: the import runs beside
the server, so /livez answers while it has not finished; search and the nearest city answer 503
with Retry-After and /health warns until the data is there, then search answers by itself.

The test holds the lock the import must take (PostgreSQL: the import's advisory lock; SQLite:
the write lock), so "before the import finishes" is a fact of the test, not a race."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time

import psycopg2
import pytest

from lumen_plugins.locations import importer
from tests.conftest import run_lumen, service_env

pytestmark = pytest.mark.slow

SMALL = {"LOCATIONS_DATASET": "cities15000", "LOCATIONS_MIN_POPULATION": "2000000"}


def get(port: int, path: str):
    """(status, headers, body) of a GET, or None while nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return None
    finally:
        conn.close()
    return response.status, response.headers, json.loads(body) if body else None


def poll(what: str, call, timeout: float):
    """``call()`` until it returns something truthy (and return it); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = call()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} after {timeout} s"
        time.sleep(0.1)


class ImportBlocked:
    """Holds what the import needs to write, until released."""

    def __init__(self, backend: str, url: str):
        if backend == "postgresql":
            self.conn = psycopg2.connect(url)
            self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (importer._IMPORT_LOCK,))
        else:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")  # readers go on (WAL); the import waits

    def release(self) -> None:
        self.conn.close()  # ends the session's advisory lock, or the SQLite transaction


def city_count(backend: str, url: str) -> int:
    if backend == "postgresql":
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT city_count FROM locations_state WHERE id = 1")
            count = cur.fetchone()[0]
        conn.close()
        return count
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT city_count FROM locations_state WHERE id = 1").fetchone()[0]


def test_livez_answers_while_the_first_import_runs_and_search_waits_for_it(
    fresh_database, tmp_path, gunicorn_server
):
    backend, url = fresh_database
    env = {
        "DATABASE_URL": url,
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "locations,health",
        "HEALTH_CHECK_INTERVAL": "0",
        "LOCATION_CACHE_SIZE": "0",
        **SMALL,
    }
    migrated = run_lumen("db", "upgrade", env=service_env(**env), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    blocked = ImportBlocked(backend, url)
    try:
        server = gunicorn_server(env, workers=1)
        # /livez answers within seconds of the start (the deadline only allows for a busy
        # machine), while the import cannot have finished: it waits for the lock held here.
        status, _, body = poll("no answer from /livez", lambda: get(server.port, "/livez"), 30)
        assert (status, body["status"]) == (200, "pass")
        assert city_count(backend, url) == 0
        assert "importing the gazetteer in the background" in server.log()

        for path in ("/api/v1/locations?q=berl", "/api/v1/locations/nearest?lat=52.5&lon=13.4"):
            status, headers, body = get(server.port, path)
            assert status == 503, (path, headers, body)
            assert headers.get("Retry-After") == "5", (path, headers, body)
            assert body["title"] == "Locations unavailable"
            assert "imports them in the background" in body["description"]
        status, _, health = get(server.port, "/health")
        assert (status, health["status"]) == (200, "warn")
        assert health["checks"]["locations:data"][0]["status"] == "warn"
        assert get(server.port, "/readyz")[0] == 200
    finally:
        blocked.release()

    def berlin_found():
        answer = get(server.port, "/api/v1/locations?q=berl")
        return answer is not None and answer[0] == 200 and answer[2]["results"][0]["name"]

    assert poll("search never answered after the import", berlin_found, 60) == "Berlin"
    status, _, health = get(server.port, "/health")
    assert health["checks"]["locations:data"][0]["status"] == "pass"
    assert 50 < city_count(backend, url) < 500
