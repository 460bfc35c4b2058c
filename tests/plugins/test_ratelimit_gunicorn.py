"""The ratelimit plugin under gunicorn with two workers, on real Redis: the workers share one
limit, a login burst against one username from many addresses (behind a trusted proxy) is
stopped, and a Redis of the test's own killed mid-test leaves the limits in memory with no
request failing."""

from __future__ import annotations

import http.client
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.plugins.test_cache_faults import own_redis, until  # noqa: F401 (a fixture)

PASSWORD = "correct horse"


def request(server, method, path, body=None, headers=None):
    """(status, headers, JSON body) of one request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    payload = json.dumps(body) if body is not None else None
    conn.request(
        method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.headers, json.loads(data) if data else None


def burst(calls, threads=6):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda call: call(), calls))


def serving_pids(server, path: str) -> set[int]:
    """The worker processes that answered ``path`` (the JSON access log names them)."""
    pids = set()
    for line in server.log().splitlines():
        if line.startswith('{"remote"'):
            entry = json.loads(line)
            if entry["path"] == path:
                pids.add(entry["pid"])
    return pids


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_share_one_limit(
    backend, clean_db, gunicorn_server, environ, redis_url, redis_prefix, redis_client
):
    env = {
        **environ,
        "LUMEN_PLUGINS": "ratelimit",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_KEY_PREFIX": redis_prefix,
        "RATE_LIMIT_DEFAULT": "30/minute",
    }
    server = gunicorn_server(env, workers=2)
    answers = burst([lambda: request(server, "GET", "/api/v1/photos")] * 60)
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 30 + [429] * 30
    refused = next(headers for status, headers, _ in answers if status == 429)
    assert refused["RateLimit-Policy"] == '"default";q=30;w=60'
    assert re.fullmatch(r'"default";r=0;t=\d+', refused["RateLimit"])
    assert 1 <= int(refused["Retry-After"]) <= 60
    until(lambda: len(serving_pids(server, "/api/v1/photos")) == 2, "one worker answered all")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_login_burst_against_one_username_from_many_addresses_is_stopped(
    backend, clean_db, gunicorn_server, environ, redis_url, redis_prefix, redis_client
):
    env = {
        **environ,
        "LUMEN_PLUGINS": "ratelimit",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_KEY_PREFIX": redis_prefix,
        "TRUSTED_PROXIES": "127.0.0.1/32",  # the test plays the proxy
        "RATE_LIMIT_AUTH": "50/minute",
        "RATE_LIMIT_USERNAME": "5/hour",
    }
    server = gunicorn_server(env, workers=2)
    victim = f"victim_{redis_prefix[-8:]}"
    status, _, _ = request(
        server, "POST", "/api/v1/users", {"username": victim, "password": PASSWORD}
    )
    assert status == 201

    def guess(number):
        return lambda: request(
            server,
            "POST",
            "/api/v1/tokens",
            {"username": victim, "password": f"guess {number}"},
            {"X-Forwarded-For": f"203.0.113.250, 203.0.113.{number}"},
        )

    answers = burst([guess(number) for number in range(1, 41)], threads=4)
    statuses = [status for status, _, _ in answers]
    # Each address is fresh; the username's 5 failures an hour stop them all. A check and its
    # charge are two steps, so a failure in flight on the other worker may slip through.
    assert 5 <= statuses.count(401) <= 6
    assert statuses.count(429) == 40 - statuses.count(401)
    refused = [(headers, body) for status, headers, body in answers if status == 429]
    assert all(h["RateLimit-Policy"] == '"username";q=5;w=3600' for h, _ in refused)
    assert all("'username'" in body["description"] for _, body in refused)
    # Even the right password waits, from an address that never logged in to the account.
    status, _, _ = request(
        server,
        "POST",
        "/api/v1/tokens",
        {"username": victim, "password": PASSWORD},
        {"X-Forwarded-For": "203.0.113.200"},
    )
    assert status == 429
    # One WARNING per worker that saw the block, not one per refused request.
    blocked = server.log().count("rate limit reached")
    assert 1 <= blocked <= 2 < len(refused)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_redis_stopped_mid_test_limits_in_memory_and_fails_nothing(
    backend,
    clean_db,
    gunicorn_server,
    environ,
    own_redis,  # noqa: F811 (the fixture)
    redis_prefix,
):
    env = {
        **environ,
        "LUMEN_PLUGINS": "ratelimit,health",
        "REDIS_URL": own_redis.url,
        "RATE_LIMIT_KEY_PREFIX": redis_prefix,
        "RATE_LIMIT_DEFAULT": "10/minute",
        "RATE_LIMIT_REDIS_RETRY_S": "600",  # stay in memory once Redis failed
        "HEALTH_CHECK_INTERVAL": "0",
    }
    server = gunicorn_server(env, workers=2)
    before = burst([lambda: request(server, "GET", "/api/v1/photos")] * 6)
    assert [status for status, _, _ in before] == [200] * 6
    assert own_redis.client().llen(next(own_redis.client().scan_iter(f"{redis_prefix}:*"))) == 6
    own_redis.kill()
    answers = burst([lambda: request(server, "GET", "/api/v1/photos")] * 40)
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 429}
    # In memory each worker counts for itself: at most 10 each pass.
    assert statuses.count(200) <= 20 and statuses.count(429) >= 20

    def health_says_memory():
        status, _, body = request(server, "GET", "/health")
        check = body["checks"]["ratelimit:storage"][0]
        return status == 200 and (check["status"], check["observedValue"]) == ("warn", "memory")

    until(health_says_memory, "/health never said the limits are in memory")
    assert "rate limits counted in memory: Redis does not answer" in server.log()
