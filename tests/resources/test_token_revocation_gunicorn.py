"""A revoked token stops working at once on every worker: under gunicorn with two workers that
have both served the token, a revocation answered by one is refused by the other on the very
next request (whatever each worker keeps to verify tokens faster)."""

from __future__ import annotations

import json
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


def signed_in_until_both_workers_served(server, headers, path) -> set[int]:
    before = log_length(server)
    for attempt in range(200):  # a fresh connection each: the workers take turns as they accept
        status, _, _ = request(server, "GET", path, headers=headers)
        assert status == 200
        pids = {pid for _, _, _, pid in answered_by(server, before, attempt + 1)}
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
    for attempt in range(200):
        status, _, body = request(server, "GET", me, headers=headers)
        assert status == 401, body  # never served again, by any worker
        if any(pid in others for *_, pid in answered_by(server, before, attempt + 1)):
            break
    else:
        pytest.fail("the other worker never answered")
    assert "invalid, expired or revoked" in body["description"]
