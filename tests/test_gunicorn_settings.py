"""gunicorn's settings (lumen/gunicorn_conf.py) as a deployment uses them, on PostgreSQL, with the
access log on as it is by default: PORT, the access log's JSON lines, TLS given half a key
pair, gthread workers, and DB_POOL_CLASS=null against the default pool."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from tests.conftest import PG_ADMIN_URL, free_port, service_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]


def call(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = json.dumps(body) if body is not None else None
    conn.request(
        method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, (json.loads(data) if data else None)


def poll(predicate, what: str, timeout: float = 15.0):
    """Wait until ``predicate()`` is truthy (and return it), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} after {timeout}s"
        time.sleep(0.05)


def access_lines(server) -> list[dict]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith('{"remote"'):
            lines.append(json.loads(line))
    return lines


def test_port_binds_every_interface_and_each_request_is_one_json_access_line(
    environ, clean_db, gunicorn_server
):
    port = free_port()
    server = gunicorn_server({**environ, "PORT": str(port)}, workers=1)
    assert f"Listening at: http://0.0.0.0:{port}" in server.log()
    status, body = call(port, "GET", "/api/v1/photos?limit=1", headers={"User-Agent": "probe/1"})
    assert (status, body) == (200, [])
    status, _ = call(port, "GET", "/api/v1/nowhere", headers={"User-Agent": "probe/2"})
    assert status == 404

    lines = poll(lambda: len(access_lines(server)) >= 2 and access_lines(server), "no access log")
    first, second = lines
    assert {k: first[k] for k in ("remote", "method", "path", "status", "user_agent")} == {
        "remote": "127.0.0.1",
        "method": "GET",
        "path": "/api/v1/photos",
        "status": 200,
        "user_agent": "probe/1",
    }
    assert isinstance(first["duration_us"], int) and first["duration_us"] > 0
    assert int(first["bytes"]) == 2  # "[]"
    assert (second["path"], second["status"]) == ("/api/v1/nowhere", 404)


@pytest.mark.parametrize("given", ["LUMEN_TLS_CERT", "LUMEN_TLS_KEY"])
def test_half_a_tls_key_pair_stops_gunicorn_with_one_line(environ, tmp_path, given):
    half = tmp_path / "half.pem"
    half.write_text("not used: start-up stops first\n")
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "python:lumen.gunicorn_conf"]
        + ["lumen.wsgi:app"],
        cwd=tmp_path,
        env=service_env(**environ, LUMEN_BIND=f"127.0.0.1:{free_port()}", **{given: str(half)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    missing = {"LUMEN_TLS_CERT": "LUMEN_TLS_KEY", "LUMEN_TLS_KEY": "LUMEN_TLS_CERT"}[given]
    assert done.stderr.strip().splitlines() == [
        f"lumen: invalid setting {missing}='': required when {given} is set"
    ]
    assert "Booting worker" not in done.stderr


def test_gthread_workers_serve_concurrent_writes(environ, clean_db, gunicorn_server):
    server = gunicorn_server(
        {**environ, "GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "4"}, workers=1
    )
    assert "Using worker: gthread" in server.log()

    def sign_up_and_rename(n: int) -> dict:
        name = f"gt{n}_{uuid.uuid4().hex[:6]}"
        status, user = call(
            server.port, "POST", "/api/v1/users", {"username": name, "password": "x" * 10}
        )
        assert status == 201, user
        status, token = call(
            server.port, "POST", "/api/v1/tokens", {"username": name, "password": "x" * 10}
        )
        assert status == 201, token
        auth = {"Authorization": f"Bearer {token['token']}"}
        status, renamed = call(
            server.port, "PATCH", f"/api/v1/users/{user['id']}", {"display_name": f"n{n}"}, auth
        )
        assert status == 200, renamed
        return renamed

    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(sign_up_and_rename, range(16)))  # re-raises a thread's failure
    for n, user in enumerate(users):
        status, body = call(server.port, "GET", f"/api/v1/users/{user['id']}")
        assert (status, body["display_name"]) == (200, f"n{n}")
    expected = 16 * 3 + 16  # three requests per user from the threads, then one read each
    assert poll(lambda: len(access_lines(server)) == expected, "not every request was logged")


def connections(application_name: str) -> int:
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("pool_class", ["null", "queue"])
def test_db_pool_class_null_keeps_no_connection_between_requests(
    environ, clean_db, gunicorn_server, pool_class
):
    """NullPool (behind PgBouncer) closes each connection when the request ends; the default
    QueuePool keeps it open for the next request."""
    name = f"lumen_pool_{pool_class}_{uuid.uuid4().hex[:6]}"
    url = f"{environ['DATABASE_URL']}?application_name={name}"
    server = gunicorn_server(
        {**environ, "DATABASE_URL": url, "DB_POOL_CLASS": pool_class}, workers=1
    )
    for _ in range(3):
        assert call(server.port, "GET", "/api/v1/photos")[0] == 200
    if pool_class == "null":
        poll(lambda: connections(name) == 0, "a connection outlived its request")
    else:
        # Pooled, and reused by each of the three requests (the master's start-up connection,
        # closed before the worker booted, may take a moment to leave pg_stat_activity).
        poll(lambda: connections(name) == 1, "not exactly one pooled connection")
        for _ in range(3):
            assert call(server.port, "GET", "/api/v1/photos")[0] == 200
        assert connections(name) == 1
