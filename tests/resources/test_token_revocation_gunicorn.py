"""A revoked token stops working at once on every worker: under gunicorn with two workers that
have both served the token, a revocation answered by one is refused by the other on the very
next request (whatever each worker keeps to verify tokens faster)."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from tests.plugins.test_ratelimit_gunicorn import request

PASSWORD = "correct horse battery"


def answered_by(server, before: int, at_least: int = 1) -> list[tuple[str, str, int, int]]:
    """(method, path, status, pid) of the access-log lines after the first ``before`` ones;
    waits for ``at_least`` (a worker writes its line just after its answer)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in server.log().splitlines() if line.startswith('{"remote"')]
        if len(lines) - before >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    entries = [json.loads(line) for line in lines[before:]]
    return [(e["method"], e["path"], e["status"], e["pid"]) for e in entries]


def log_length(server) -> int:
    return sum(1 for line in server.log().splitlines() if line.startswith('{"remote"'))


class holding_a_worker:
    """A connection with a half-sent request: the sync worker that accepts it waits on it."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.socket = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        self.socket.sendall(b"GET /livez HTTP/1.1\r\n")
        time.sleep(0.05)  # long enough for a worker to accept it
        return self

    def __exit__(self, *exc):
        self.socket.close()


def signed_in_until_both_workers_served(server, headers, path) -> set[int]:
    before = log_length(server)
    for attempt in range(50):  # every other request with one worker held (holding_a_worker)
        with holding_a_worker(server) if attempt % 2 else contextlib.nullcontext():
            status, _, _ = request(server, "GET", path, headers=headers)
        assert status == 200
        pids = {pid for _, p, _, pid in answered_by(server, before, attempt + 1) if p == path}
        if len(pids) >= 2:
            return pids
    pytest.fail("one worker answered every request")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.security
@pytest.mark.parametrize("revoke", ["/api/v1/tokens/current", "/api/v1/tokens"])
def test_a_token_revoked_on_one_worker_is_refused_at_once_on_another(
    backend, clean_db, gunicorn_server, environ, redis_url, redis_client, revoke
):
    env = {**environ, "REDIS_URL": redis_url}  # TOKEN_CACHE_KEY: beside the test's prefix
    server = gunicorn_server(env, workers=2)
    status, _, user = request(
        server, "POST", "/api/v1/users", {"username": "revoker", "password": PASSWORD}
    )
    assert status == 201
    status, _, token = request(
        server, "POST", "/api/v1/tokens", {"username": "revoker", "password": PASSWORD}
    )
    assert status == 201
    headers = {"Authorization": f"Bearer {token['token']}"}
    me = f"/api/v1/users/{user['id']}/photos"
    workers = signed_in_until_both_workers_served(server, headers, me)

    before = log_length(server)
    status, _, _ = request(server, "DELETE", revoke, headers=headers)
    assert status == 204
    ((_, _, _, revoked_by),) = answered_by(server, before)
    others = workers - {revoked_by}

    before = log_length(server)
    for attempt in range(50):
        # Workers take turns as they accept, and one that has just answered often wins again:
        # a half-sent request keeps one worker reading it, so the request goes to the other.
        with holding_a_worker(server):
            status, _, body = request(server, "GET", me, headers=headers)
        assert status == 401, body  # never served again, by any worker
        served = [pid for _, path, _, pid in answered_by(server, before, attempt + 1) if path == me]
        if any(pid in others for pid in served):
            break
    else:
        pytest.fail("the other worker never answered")
    assert "invalid, expired or revoked" in body["description"]
