"""The ratelimit plugin in one process, on the machine's Redis (its own key prefix) or a Redis
of the test's own that it kills: the headers of every answer, who a request is charged to,
logins limited per address and per username, what is never limited, the start-up errors, the
metrics and the log, and counting in memory while Redis is away."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry

from lumen.config import ConfigError, load_section
from lumen_plugins.ratelimit import check_storage, state_of
from lumen_plugins.ratelimit.middleware import login_username
from lumen_plugins.ratelimit.settings import ClientAddress, RateLimitSettings, address_key
from tests.conftest import Api
from tests.plugins.test_cache_faults import own_redis, until  # noqa: F401 (a fixture)

POLICY = re.compile(r'^"(\w+)";q=(\d+);w=(\d+)$')
FIELD = re.compile(r'^"(\w+)";r=(\d+);t=(\d+)$')
PASSWORD = "correct horse"


def limited_app(make_app, redis_url=None, prefix=None, plugins="ratelimit", **settings):
    extra = {"REDIS_URL": redis_url, "RATE_LIMIT_KEY_PREFIX": prefix} if redis_url else {}
    return make_app(LUMEN_PLUGINS=plugins, **extra, **settings)


def policy_of(result) -> tuple[str, int, int]:
    name, quota, window = POLICY.match(result.headers["RateLimit-Policy"]).groups()
    return name, int(quota), int(window)


def field_of(result) -> tuple[str, int, int]:
    name, remaining, reset = FIELD.match(result.headers["RateLimit"]).groups()
    return name, int(remaining), int(reset)


def from_address(address: str) -> dict:
    return {"X-Forwarded-For": address}


# ---------------------------------------------------------------------------
# Answers and their headers
# ---------------------------------------------------------------------------


def test_a_burst_gets_429_with_retry_after_and_the_ratelimit_fields(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="3/minute")
    client = falcon.testing.TestClient(app)
    answers = [client.simulate_get("/api/v1/photos") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    for number, answer in enumerate(answers[:3]):
        assert policy_of(answer) == ("default", 3, 60)
        name, remaining, reset = field_of(answer)
        assert (name, remaining) == ("default", 2 - number)
        assert 55 <= reset <= 60
    refused = answers[3]
    assert refused.headers["Content-Type"].startswith("application/json")
    assert refused.json["title"] == "Too many requests"
    assert "'default'" in refused.json["description"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert policy_of(refused) == ("default", 3, 60)
    assert field_of(refused) == ("default", 0, retry_after)
    # The counts are in Redis, where every worker and host sees them.
    keys = list(redis_client.scan_iter(f"{redis_prefix}:*"))
    assert len(keys) == 1 and redis_client.llen(keys[0]) == 3


def test_probes_and_metrics_are_never_limited_nor_counted(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(
        make_app,
        redis_url,
        redis_prefix,
        plugins="ratelimit,health,metrics",
        METRICS_ENABLED="true",
        RATE_LIMIT_DEFAULT="1/minute",
    )
    client = falcon.testing.TestClient(app)
    for _ in range(3):
        for path in ("/livez", "/readyz", "/health", "/health/database", "/metrics"):
            answer = client.simulate_get(path)
            assert answer.status_code == 200, path
            assert "RateLimit" not in answer.headers
    assert client.simulate_get("/api/v1/photos").status_code == 200
    assert client.simulate_get("/api/v1/photos").status_code == 429
    assert client.simulate_get("/livez").status_code == 200


def test_paths_no_route_matches_are_limited_too(make_app, redis_url, redis_prefix, redis_client):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="1/minute")
    client = falcon.testing.TestClient(app)
    first = client.simulate_get("/no/such/path")
    assert first.status_code == 404 and field_of(first) == ("default", 0, 60)
    refused = client.simulate_get("/wp-login.php")
    assert refused.status_code == 429 and refused.json["title"] == "Too many requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert policy_of(refused) == ("default", 1, 60)
    assert field_of(refused) == ("default", 0, int(refused.headers["Retry-After"]))
    assert client.simulate_get("/api/v1/photos").status_code == 429  # one budget


def test_users_are_limited_each_on_their_own_and_anonymous_callers_by_address(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="2/minute")
    api = Api(falcon.testing.TestClient(app))
    alice, bob = api.user(), api.user()  # registrations and logins are another policy
    client = api.client
    for user in (alice, bob):
        seen = [client.simulate_get("/api/v1/photos", headers=user["headers"]) for _ in range(3)]
        assert [a.status_code for a in seen] == [200, 200, 429]
    # The same address, without a token: its own budget.
    assert client.simulate_get("/api/v1/photos").status_code == 200


def test_uploads_and_registrations_have_their_own_policies(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(
        make_app,
        redis_url,
        redis_prefix,
        RATE_LIMIT_DEFAULT="100/minute",
        RATE_LIMIT_UPLOAD="1/hour",
        RATE_LIMIT_AUTH="3/minute",
    )
    api = Api(falcon.testing.TestClient(app))
    user = api.user()  # one registration and one login: 2 of "auth"
    first = api.upload(user)
    assert first["id"]
    refused = api.upload(user, expect=429)
    assert refused["description"].startswith("rate limit 'upload'")
    listing = api.client.simulate_get("/api/v1/photos", headers=user["headers"])
    assert listing.status_code == 200 and policy_of(listing)[0] == "default"
    third = api.client.simulate_post(
        "/api/v1/users", json={"username": "carol_rl", "password": PASSWORD}
    )
    assert third.status_code == 201 and field_of(third)[:2] == ("auth", 0)
    fourth = api.client.simulate_post(
        "/api/v1/users", json={"username": "dave_rl", "password": PASSWORD}
    )
    assert fourth.status_code == 429 and policy_of(fourth) == ("auth", 3, 60)


def test_a_bad_token_is_refused_by_authentication_but_spends_the_address_budget(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="3/minute")
    client = falcon.testing.TestClient(app)
    bad = {"Authorization": "Bearer " + "x" * 40}
    assert [client.simulate_get("/api/v1/photos", headers=bad).status_code for _ in range(3)] == [
        401
    ] * 3
    assert client.simulate_get("/api/v1/photos").status_code == 429
    refused = client.simulate_get("/api/v1/photos", headers=bad)
    assert refused.status_code == 429 and "WWW-Authenticate" not in refused.headers
    assert refused.json["title"] == "Too many requests" and "Retry-After" in refused.headers


def test_cors_exposes_the_fields_on_answers_and_refusals(
    make_app, redis_url, redis_prefix, redis_client
):
    app = limited_app(
        make_app, redis_url, redis_prefix, plugins="cors,ratelimit", RATE_LIMIT_DEFAULT="1/minute"
    )
    client = falcon.testing.TestClient(app)
    origin = {"Origin": "http://localhost:3000"}
    for status in (200, 429):
        answer = client.simulate_get("/api/v1/photos", headers=origin)
        assert answer.status_code == status
        assert answer.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        exposed = {h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"RateLimit", "RateLimit-Policy", "Retry-After"} <= exposed
    # A preflight is answered before any limit.
    preflight = client.simulate_options(
        "/api/v1/photos", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 204


def test_the_api_document_lists_the_429(make_app):
    app = limited_app(make_app, plugins="ratelimit,health")
    paths = app.lumen.openapi["paths"]
    assert "429" in paths["/api/v1/tokens"]["post"]["responses"]
    assert "429" not in paths["/livez"]["get"]["responses"]


# ---------------------------------------------------------------------------
# Logins
# ---------------------------------------------------------------------------


def login(client, username, password, address):
    return client.simulate_post(
        "/api/v1/tokens",
        json={"username": username, "password": password},
        headers=from_address(address),
    )


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_failed_logins_cost_more_than_successes(
    make_app, redis_url, redis_prefix, redis_client, storage
):
    app = limited_app(
        make_app,
        redis_url if storage == "redis" else None,
        redis_prefix,
        RATE_LIMIT_AUTH="10/minute",
        RATE_LIMIT_FAILURE_COST="5",
        RATE_LIMIT_USERNAME="100/hour",
    )
    api = Api(falcon.testing.TestClient(app))
    user = api.user()  # 2 of 10 spent
    client = api.client
    for _ in range(3):
        answer = client.simulate_post(
            "/api/v1/tokens", json={"username": user["username"], "password": PASSWORD}
        )
        assert answer.status_code == 201
    # 5 spent; one failure costs 5 (1 now, 4 once it failed) and leaves nothing.
    failed = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": "wrong password"}
    )
    assert failed.status_code == 401 and field_of(failed)[:2] == ("auth", 4)
    refused = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": PASSWORD}
    )
    assert refused.status_code == 429 and policy_of(refused)[0] == "auth"


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_one_username_guessed_from_many_addresses_is_stopped_but_its_owner_gets_in(
    make_app, redis_url, redis_prefix, redis_client, storage
):
    app = limited_app(
        make_app,
        redis_url if storage == "redis" else None,
        redis_prefix,
        TRUSTED_PROXIES="127.0.0.1/32",
        RATE_LIMIT_AUTH="100/minute",
        RATE_LIMIT_USERNAME="3/hour",
    )
    api = Api(falcon.testing.TestClient(app))
    client = api.client
    victim = api.user()["username"]
    # The owner logged in from home before the attack.
    assert login(client, victim, PASSWORD, "203.0.113.250").status_code == 201
    answers = [login(client, victim, f"guess{i}", f"203.0.113.{i}") for i in range(1, 11)]
    assert [a.status_code for a in answers] == [401] * 3 + [429] * 7
    assert policy_of(answers[3]) == ("username", 3, 3600)
    assert "'username'" in answers[3].json["description"]
    # Even the right password from a new address waits: the attacker could have it.
    assert login(client, victim, PASSWORD, "203.0.113.99").status_code == 429
    # From the owner's known address, the password is still checked.
    assert login(client, victim, "wrong again", "203.0.113.250").status_code == 401
    assert login(client, victim, PASSWORD, "203.0.113.250").status_code == 201
    # Another account is not affected.
    other = api.user()["username"]
    assert login(client, other, "nope", "203.0.113.7").status_code == 401
    # Successes spend nothing of the username budget.
    spare = api.user()["username"]
    for i in range(5):
        assert login(client, spare, PASSWORD, f"203.0.113.{100 + i}").status_code == 201
    assert login(client, spare, "x", "203.0.113.120").status_code == 401
    assert state_of(app.lumen).counters.in_memory == (storage == "memory")


def test_login_usernames_are_read_from_the_body_without_taking_it_from_the_resource():
    req = falcon.testing.create_req(
        method="POST",
        path="/api/v1/tokens",
        body=b'{"username": " Alice ", "password": "p"}',
        headers={"Content-Type": "application/json"},
    )
    assert login_username(req) == "alice"
    assert req.bounded_stream.read() == b""  # consumed once; the copy is on the request
    assert req.context.raw_body.startswith(b'{"username"')
    for body, content_type in (
        (b"[1]", "application/json"),
        (b"not json", "application/json"),
        (b'{"username": 3}', "application/json"),
        (b'{"username": "' + b"a" * 65 + b'"}', "application/json"),
        (b'{"username": "alice"}', "text/plain"),
    ):
        req = falcon.testing.create_req(
            method="POST", path="/", body=body, headers={"Content-Type": content_type}
        )
        assert login_username(req) is None


# ---------------------------------------------------------------------------
# The client address
# ---------------------------------------------------------------------------


def address(remote: str, trusted: str | None = None, **headers) -> str:
    section = load_section(RateLimitSettings, {"TRUSTED_PROXIES": trusted} if trusted else {})
    from lumen_plugins.ratelimit.settings import parse_networks

    finder = ClientAddress(parse_networks(section.trusted_proxies))
    names = {"xff": "X-Forwarded-For", "forwarded": "Forwarded"}
    req = falcon.testing.create_req(
        remote_addr=remote, headers={names[k]: v for k, v in headers.items()}
    )
    return address_key(finder.of(req))


def test_forwarding_headers_are_believed_only_from_trusted_proxies():
    spoof = "198.51.100.7, 203.0.113.5"
    assert address("192.0.2.10", xff=spoof) == "addr:192.0.2.10"  # nothing trusted
    assert address("192.0.2.10", "10.0.0.0/8", xff=spoof) == "addr:192.0.2.10"  # not a proxy
    # From a trusted proxy: the nearest hop it did not add itself, never the client's claim.
    assert address("10.1.2.3", "10.0.0.0/8", xff=spoof) == "addr:203.0.113.5"
    assert address("10.1.2.3", "10.0.0.0/8", xff="203.0.113.5, 10.9.9.9") == "addr:203.0.113.5"
    assert address("10.1.2.3", "10.0.0.0/8", xff="junk, 10.9.9.9") == "addr:10.9.9.9"
    assert address("10.1.2.3", "10.0.0.0/8") == "addr:10.1.2.3"
    forwarded = 'for=198.51.100.7, for="[2001:db8:cafe::17]:4711"'
    assert address("10.1.2.3", "10.0.0.0/8", forwarded=forwarded) == "addr:2001:db8:cafe::/64"
    assert address("10.1.2.3", "10.0.0.0/8", forwarded="for=203.0.113.9:80") == "addr:203.0.113.9"
    # Forwarded wins over X-Forwarded-For when both are there.
    assert (
        address("10.1.2.3", "10.0.0.0/8", forwarded="for=203.0.113.9", xff="203.0.113.1")
        == "addr:203.0.113.9"
    )


def test_ipv6_clients_are_counted_by_their_slash_64():
    assert address("2001:db8:1:2::1") == address("2001:db8:1:2:ffff::9") == "addr:2001:db8:1:2::/64"
    assert address("2001:db8:1:3::1") != address("2001:db8:1:2::1")
    assert address("::ffff:192.0.2.1") == "addr:192.0.2.1"
    assert ipaddress.ip_network("2001:db8:1:2::/64")  # the key is a network, as written


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("RATE_LIMIT_DEFAULT", "lots", "must be one limit such as 600/minute"),
        ("RATE_LIMIT_UPLOAD", "0/hour", "must be one limit such as 600/minute"),
        ("RATE_LIMIT_AUTH", "5/minute;100/day", "must be one limit such as 600/minute"),
        ("RATE_LIMIT_USERNAME", "50/fortnight", "must be one limit such as 600/minute"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal", "'proxy.internal' is not an address"),
        ("RATE_LIMIT_FAILURE_COST", "0", "must be greater than or equal to 1"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(make_app, variable, value, rule):
    with pytest.raises(ConfigError) as raised:
        limited_app(make_app, **{variable: value})
    message = str(raised.value)
    assert message.startswith(f"invalid setting {variable}=")
    assert rule in message and "\n" not in message


@pytest.mark.parametrize("command", [("config", "check"), ("serve", "--bind", "127.0.0.1:0")])
def test_lumen_config_check_and_serve_stop_on_a_bad_limit_with_one_line(tmp_path, command):
    from tests.conftest import run_lumen, service_env

    env = service_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db", RATE_LIMIT_DEFAULT="600/minutes/please"
    )
    result = run_lumen(*command, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "lumen: invalid setting RATE_LIMIT_DEFAULT='600/minutes/please': must be one limit "
        "such as 600/minute: a count of at least 1, '/', and a period"
    ]


# ---------------------------------------------------------------------------
# Metrics, log, health
# ---------------------------------------------------------------------------


def test_refusals_are_counted_by_route_and_logged_once_per_blocked_caller(
    make_app, redis_url, redis_prefix, redis_client, caplog
):
    app = limited_app(make_app, redis_url, redis_prefix, RATE_LIMIT_DEFAULT="1/minute")
    registry = CollectorRegistry()
    app.lumen.hook.lumen_metrics(lumen=app.lumen, registry=registry)
    client = falcon.testing.TestClient(app)
    caplog.set_level(logging.WARNING, logger="lumen_plugins.ratelimit")
    for _ in range(4):
        client.simulate_get("/api/v1/photos")
    for _ in range(3):
        client.simulate_get("/api/v1/photos/1")
    other = {"X-Forwarded-For": "203.0.113.8"}  # not trusted: the same address
    client.simulate_get("/api/v1/photos", headers=other)

    def refused(route):
        labels = {"route": route, "policy": "default"}
        return registry.get_sample_value("lumen_ratelimit_limited_total", labels)

    assert refused("/api/v1/photos") == 4
    assert refused("/api/v1/photos/{photo_id}") == 3
    blocked = [r for r in caplog.records if r.getMessage() == "rate limit reached"]
    assert len(blocked) == 1
    assert blocked[0].levelno == logging.WARNING and blocked[0].addr == "127.0.0.1"
    assert blocked[0].policy == "default"


def test_without_redis_limits_are_kept_in_memory_and_health_says_so(make_app):
    app = limited_app(make_app, plugins="ratelimit,health", RATE_LIMIT_DEFAULT="2/minute")
    client = falcon.testing.TestClient(app)
    statuses = [client.simulate_get("/api/v1/photos").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    check = client.simulate_get("/health").json["checks"]["ratelimit:storage"][0]
    assert (check["status"], check["observedValue"]) == ("pass", "memory")
    assert "REDIS_URL is not set" in check["output"]


def test_redis_killed_mid_test_limits_in_memory_fails_nothing_and_comes_back(
    make_app,
    own_redis,  # noqa: F811 (the fixture)
    redis_prefix,
    caplog,
):
    app = limited_app(
        make_app,
        own_redis.url,
        redis_prefix,
        plugins="ratelimit,health",
        RATE_LIMIT_DEFAULT="5/minute",
        RATE_LIMIT_REDIS_RETRY_S="0.2",
        HEALTH_CHECK_INTERVAL="0",
    )
    counters = state_of(app.lumen).counters
    client = falcon.testing.TestClient(app)
    assert [client.simulate_get("/api/v1/photos").status_code for _ in range(3)] == [200] * 3
    own_redis.kill()
    statuses = [client.simulate_get("/api/v1/photos").status_code for _ in range(8)]
    # Memory starts empty: 5 more pass, then the limit holds there.
    assert statuses == [200] * 5 + [429] * 3
    check = client.simulate_get("/health").json["checks"]["ratelimit:storage"][0]
    assert (check["status"], check["observedValue"]) == ("warn", "memory")
    assert counters.errors >= 1
    own_redis.start()  # empty: a fresh Redis, its scripts not loaded
    time.sleep(0.3)  # past the retry wait: still memory until Redis has answered a check
    assert check_storage(counters)["observedValue"] == "memory"

    def back_on_redis():
        client.simulate_get("/api/v1/photos")
        return check_storage(counters)["observedValue"] == "redis"

    with caplog.at_level(logging.INFO, logger="lumen_plugins.ratelimit"):
        until(back_on_redis, "the limiter never went back to Redis")
    assert "rate limits counted in Redis again" in caplog.messages
    keys = list(own_redis.client().scan_iter(f"{redis_prefix}:*"))
    assert len(keys) == 1


def test_counting_in_memory_starts_no_thread_per_request(monkeypatch):
    import limits.storage.memory

    from lumen_plugins.ratelimit.limiter import Counters, Op
    from lumen_plugins.ratelimit.settings import Policy, parse_limit

    started = []

    class CountedTimer(threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(limits.storage.memory.threading, "Timer", CountedTimer)
    counters = Counters(None, None, "unused", 5.0)
    policy = Policy("default", "RATE_LIMIT_DEFAULT", parse_limit("1000/minute"))
    outcomes = [counters.run([Op(policy, f"addr:203.0.113.{n % 5}")])[0] for n in range(200)]
    assert [o.remaining for o in outcomes[-5:]] == [960] * 5
    assert len(started) <= 1  # the one MemoryStorage starts when made
    # Expired entries are dropped in line instead, at most once a second.
    dropped = []
    monkeypatch.setattr(counters.memory, "EXPIRY_SECONDS", 0.0)
    monkeypatch.setattr(counters.memory, "_next_expiry", 0.0)
    monkeypatch.setattr(counters.memory, "_MemoryStorage__expire_events", lambda: dropped.append(1))
    counters.run([Op(policy, "addr:203.0.113.9")] * 3)
    assert len(dropped) == 3
    counters.close()
