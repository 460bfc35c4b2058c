"""The health plugin: the IETF health+json shape, checks gathered through the hook, the time
budget and the reuse of results, then faults on real services: a Redis of the test's own that
is killed, and PostgreSQL behind an in-test TCP proxy that is cut and restored."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from urllib.parse import urlsplit

import falcon.testing
import pytest
from sqlalchemy import event

from lumen import hookimpl
from lumen.app import create_app
from lumen.config import ConfigError, load_settings
from lumen.plugins import PluginError, make_plugin_manager
from lumen_plugins import health
from tests.conftest import free_port, wait_for_port
from tests.faults import TcpProxy

DB_PASSWORD = "db-Secret-4711"
REDIS_PASSWORD = "redis-Secret-0815"
# The health plugin's own checks, and the core's maintenance flag.
CORE_CHECKS = {
    "database:connection",
    "database:pool",
    "maintenance:mode",
    "redis:connection",
    "storage:free",
}


class ExtraChecks:
    """A test plugin offering the checks it is given."""

    def __init__(self, checks):
        self.checks = checks

    @hookimpl
    def lumen_health_checks(self, lumen):
        return self.checks


@pytest.fixture
def health_app(make_app):
    """Build an app with the health plugin (plus test plugins) on the session's engine."""

    def build(*extra_plugins, **overrides):
        env = {"LUMEN_PLUGINS": "health", "HEALTH_CHECK_INTERVAL": "0", **overrides}
        return falcon.testing.TestClient(make_app(*extra_plugins, **env))

    return build


@contextlib.contextmanager
def own_app(environ, **overrides):
    """An app with its own engine built from DATABASE_URL (not the session's)."""
    settings = load_settings(
        {**environ, "LUMEN_PLUGINS": "health", "HEALTH_CHECK_INTERVAL": "0", **overrides}
    )
    app = create_app(settings, make_plugin_manager(settings.enabled_plugins))
    try:
        yield falcon.testing.TestClient(app)
    finally:
        app.lumen.shutdown()


def assert_health_json(result, status: str, http: int) -> dict:
    assert result.status_code == http, result.text
    assert result.headers["content-type"] == "application/health+json"
    body = result.json
    assert body["status"] == status, body
    assert body["version"] and body["serviceId"] == "lumen"
    return body


def assert_no_secret(*results) -> None:
    for result in results:
        assert DB_PASSWORD not in result.text
        assert REDIS_PASSWORD not in result.text


# ---------------------------------------------------------------------------
# The shape, the core checks, the endpoints
# ---------------------------------------------------------------------------


def test_health_gathers_the_core_checks_in_the_ietf_shape(health_app):
    client = health_app()
    body = assert_health_json(client.simulate_get("/health"), "pass", 200)
    assert set(body["checks"]) == CORE_CHECKS
    for name, entries in body["checks"].items():
        assert isinstance(entries, list) and entries, name
        for entry in entries:
            assert entry["status"] == "pass", (name, entry)
            assert {"componentType", "observedValue", "time"} <= set(entry), (name, entry)
            assert entry["time"].endswith("+00:00")
    assert body["checks"]["database:connection"][0]["observedUnit"] == "ms"
    assert body["checks"]["database:connection"][0]["observedValue"] > 0
    pool = body["checks"]["database:pool"][0]["observedValue"]
    assert {"size", "max_overflow", "checked_out", "overflow"} == set(pool)
    assert body["checks"]["storage:free"][0]["observedUnit"] == "bytes"
    assert "no-store" in client.simulate_get("/health").headers["cache-control"]


def test_scoped_endpoints_answer_their_component_only(health_app):
    client = health_app()
    database = assert_health_json(client.simulate_get("/health/database"), "pass", 200)
    assert set(database["checks"]) == {"database:connection", "database:pool"}
    redis = assert_health_json(client.simulate_get("/health/redis"), "pass", 200)
    assert set(redis["checks"]) == {"redis:connection"}
    ready = assert_health_json(client.simulate_get("/readyz"), "pass", 200)
    assert set(ready["checks"]) == {"database:connection"}
    live = assert_health_json(client.simulate_get("/livez"), "pass", 200)
    assert "checks" not in live


def test_without_redis_url_redis_passes_as_not_configured(health_app):
    body = assert_health_json(health_app().simulate_get("/health/redis"), "pass", 200)
    entry = body["checks"]["redis:connection"][0]
    assert entry["status"] == "pass"
    assert "not configured" in entry["output"]


def test_probes_skip_authentication_and_open_no_session(health_app, backend):
    client = health_app()
    stale = {"Authorization": "Bearer " + "x" * 40}
    opened = []

    def count_checkouts(*_):
        opened.append(threading.current_thread().name)

    event.listen(backend[2], "checkout", count_checkouts)
    try:
        for path in ("/livez", "/health", "/readyz"):
            assert client.simulate_get(path, headers=stale).status_code == 200, path
        assert client.simulate_head("/livez", headers=stale).status_code == 200
    finally:
        event.remove(backend[2], "checkout", count_checkouts)
    # Only the checks' own threads took a connection: never the request's thread.
    assert opened and all(name.startswith("health ") for name in opened)
    # The same header on an API route is still refused: the exemption is the probes'.
    assert client.simulate_get("/api/v1/photos", headers=stale).status_code == 401


def test_other_methods_are_405(health_app):
    client = health_app()
    assert client.simulate_post("/health").status_code == 405
    assert client.simulate_delete("/livez").status_code == 405


def test_the_openapi_document_lists_the_probes(health_app):
    paths = health_app().simulate_get("/openapi.json").json["paths"]
    for path in ("/health", "/health/database", "/health/redis", "/livez", "/readyz"):
        assert "application/health+json" in paths[path]["get"]["responses"]["503"]["content"]


def test_service_id_is_configurable(health_app):
    client = health_app(HEALTH_SERVICE_ID="photos-eu-1")
    assert client.simulate_get("/livez").json["serviceId"] == "photos-eu-1"


def test_pool_warns_when_nearly_every_connection_is_checked_out(health_app, backend):
    client = health_app(DB_MAX_OVERFLOW="0")
    size = backend[2].pool.size()
    held = [backend[2].connect() for _ in range(int(size * health.POOL_BUSY_SHARE))]
    try:
        body = client.simulate_get("/health/database").json
    finally:
        for connection in held:
            connection.close()
    pool = body["checks"]["database:pool"][0]
    assert pool["status"] == "warn"
    assert pool["observedValue"]["checked_out"] >= len(held)
    assert body["status"] == "warn"


@pytest.mark.parametrize(
    "overrides, status",
    [
        ({"MAX_STORAGE_GB": "1e9"}, "warn"),  # 10 % of an exabyte is more than any disk here
        ({"MAX_UPLOAD_MB": "1e12"}, "fail"),  # one upload larger than the disk
    ],
)
def test_storage_free_space_against_the_quota_and_the_largest_upload(health_app, overrides, status):
    body = health_app(**overrides).simulate_get("/health").json
    assert body["checks"]["storage:free"][0]["status"] == status
    # Storage is not critical: the service still reads and lists.
    assert body["status"] == "warn"


def test_a_malformed_redis_url_stops_startup_naming_it(health_app):
    with pytest.raises(ConfigError) as caught:
        health_app(REDIS_URL="http://:pw@example.com")
    assert str(caught.value).startswith("invalid setting REDIS_URL=")
    assert ":pw@" not in str(caught.value)


# ---------------------------------------------------------------------------
# Checks from other plugins, the time budget, reuse of results
# ---------------------------------------------------------------------------


def test_plugins_add_checks_that_health_gathers(health_app):
    entry = {"componentType": "component", "observedValue": 3, "status": "pass"}
    listing = [dict(entry, componentId="a"), dict(entry, componentId="b")]
    client = health_app(
        ExtraChecks({"cache:hit_rate": lambda: entry, "locations:data": lambda: listing})
    )
    body = client.simulate_get("/health").json
    assert body["checks"]["cache:hit_rate"][0]["observedValue"] == 3
    assert [e["componentId"] for e in body["checks"]["locations:data"]] == ["a", "b"]


def test_a_failing_optional_check_warns_the_whole_and_fails_alone(health_app):
    failing = {"componentType": "component", "status": "fail", "output": "index missing"}
    client = health_app(ExtraChecks({"locations:data": lambda: failing}))
    body = assert_health_json(client.simulate_get("/health"), "warn", 200)
    assert body["checks"]["locations:data"][0]["status"] == "fail"
    assert "locations:data: fail" in body["output"]


@pytest.mark.parametrize(
    "check, output",
    [
        (lambda: 1 / 0, "ZeroDivisionError (details in the log)"),
        (lambda: None, "the check returned no valid result"),
        (lambda: {"status": "fine"}, "the check returned no valid result"),
        (lambda: [], "the check returned no valid result"),
    ],
)
def test_a_check_that_raises_or_answers_nonsense_fails(health_app, check, output):
    body = health_app(ExtraChecks({"broken:check": check})).simulate_get("/health").json
    entry = body["checks"]["broken:check"][0]
    assert entry == {
        "observedValue": None,
        "status": "fail",
        "output": output,
        "time": entry["time"],
    }


@pytest.mark.security
def test_no_secret_reaches_a_body_even_from_a_check_that_leaks_one(environ, backend):
    if backend[0] != "postgresql":
        pytest.skip("a password in DATABASE_URL needs PostgreSQL (trust auth takes any)")
    url = urlsplit(backend[1])
    with_password = f"postgresql://postgres:{DB_PASSWORD}@{url.hostname}:{url.port}{url.path}"

    def leaky():
        return {"status": "warn", "output": f"dsn={with_password} redis={REDIS_PASSWORD}"}

    def raising():
        raise RuntimeError(f"cannot log in with {DB_PASSWORD}")

    settings = load_settings(
        {
            **environ,
            "DATABASE_URL": with_password,
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
            "REDIS_PASSWORD": REDIS_PASSWORD,
            "LUMEN_PLUGINS": "health",
        }
    )
    pm = make_plugin_manager(["health"])
    pm.register(ExtraChecks({"leaky:output": leaky, "leaky:error": raising}), name="leaky")
    app = create_app(settings, pm)
    try:
        client = falcon.testing.TestClient(app)
        results = [
            client.simulate_get(path)
            for path in ("/health", "/health/database", "/health/redis", "/livez", "/readyz")
        ]
        assert results[0].json["checks"]["database:connection"][0]["status"] == "pass"
        assert results[0].json["checks"]["redis:connection"][0]["status"] == "fail"
        assert "********" in results[0].json["checks"]["leaky:output"][0]["output"]
        assert_no_secret(*results)
    finally:
        app.lumen.shutdown()


def test_checks_run_in_parallel(health_app):
    # Each check passes only once the other is running too.
    both = threading.Barrier(2, timeout=5)

    def meet():
        both.wait()
        return {"componentType": "component", "status": "pass"}

    client = health_app(
        ExtraChecks({"meet:one": meet, "meet:two": meet}), HEALTH_CHECK_TIMEOUT_MS="10000"
    )
    assert_health_json(client.simulate_get("/health"), "pass", 200)  # neither timed out


class Hanging:
    """A check that blocks until released, counting its runs."""

    def __init__(self):
        self.release = threading.Event()
        self.runs = 0

    def __call__(self):
        self.runs += 1
        self.release.wait(30)
        return {"componentType": "component", "status": "pass"}


def test_a_hung_check_fails_by_the_deadline_and_is_never_run_twice_at_once(health_app):
    hanging = Hanging()
    client = health_app(ExtraChecks({"slow:thing": hanging}), HEALTH_CHECK_TIMEOUT_MS="800")
    try:
        for _ in range(2):
            started = time.monotonic()
            body = assert_health_json(client.simulate_get("/health"), "warn", 200)
            # Bounded by the budget (plus room for a loaded machine), however long it hangs.
            assert time.monotonic() - started < 0.8 + 2.0
            assert body["checks"]["slow:thing"][0]["status"] == "fail"
            assert body["checks"]["slow:thing"][0]["output"] == "timed out after 800 ms"
            assert body["checks"]["database:connection"][0]["status"] != "fail"
        assert hanging.runs == 1
    finally:
        hanging.release.set()
    deadline = time.monotonic() + 10
    while client.simulate_get("/health").json["status"] != "pass":
        assert time.monotonic() < deadline, "the released check never reported"


def test_results_are_reused_for_the_interval(health_app):
    runs = []

    def counted():
        runs.append(1)
        return {"status": "pass"}

    cached = health_app(ExtraChecks({"count:runs": counted}), HEALTH_CHECK_INTERVAL="3600")
    for path in ("/health", "/health", "/readyz", "/health/database"):
        assert cached.simulate_get(path).status_code == 200
    assert len(runs) == 1

    runs.clear()
    fresh = health_app(ExtraChecks({"count:runs": counted}), HEALTH_CHECK_INTERVAL="0")
    fresh.simulate_get("/health")
    fresh.simulate_get("/health")
    assert len(runs) == 2


@pytest.mark.parametrize(
    "checks, message",
    [
        ({"database:connection": lambda: None}, "'database:connection' already added by"),
        ({"nocolon": lambda: None}, "must be 'component:measurement'"),
    ],
)
def test_a_bad_check_name_stops_startup_naming_the_plugin(health_app, checks, message):
    with pytest.raises(PluginError) as caught:
        health_app(ExtraChecks(checks))
    assert "'extra0'" in str(caught.value) and message in str(caught.value)


# ---------------------------------------------------------------------------
# Real faults: a Redis of our own that dies, a database behind a proxy that is cut
# ---------------------------------------------------------------------------


@pytest.fixture
def own_redis():
    """A redis-server of this test only, with a password; killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            REDIS_PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=10, proc=proc)
        yield proc, port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_redis_down_warns_health_and_fails_health_redis(health_app, own_redis):
    proc, port = own_redis
    client = health_app(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        REDIS_PASSWORD=REDIS_PASSWORD,
        HEALTH_CHECK_TIMEOUT_MS="2000",
    )
    up = [client.simulate_get("/health"), client.simulate_get("/health/redis")]
    assert_health_json(up[0], "pass", 200)
    assert_health_json(up[1], "pass", 200)

    proc.kill()
    proc.wait(timeout=10)
    down = [client.simulate_get("/health"), client.simulate_get("/health/redis")]
    whole = assert_health_json(down[0], "warn", 200)
    failed = whole["checks"]["redis:connection"][0]
    assert failed["status"] == "fail" and failed["output"].startswith("ConnectionError")
    # Its shape as last observed, its value unknown.
    assert (failed["componentType"], failed["observedUnit"], failed["observedValue"]) == (
        "datastore",
        "ms",
        None,
    )
    assert whole["checks"]["database:connection"][0]["status"] != "fail"
    assert_health_json(down[1], "fail", 503)
    assert client.simulate_get("/readyz").status_code == 200  # Redis is optional
    assert_no_secret(*up, *down)


@pytest.fixture
def pg_proxy(backend):
    if backend[0] != "postgresql":
        pytest.skip("the proxy stands in front of PostgreSQL")
    url = urlsplit(backend[1])
    proxy = TcpProxy((url.hostname, url.port or 5432))
    database_url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{proxy.port}{url.path}"
    yield proxy, database_url
    proxy.close()


@pytest.mark.security
def test_livez_touches_no_dependency(environ, pg_proxy):
    proxy, database_url = pg_proxy
    with own_app(environ, DATABASE_URL=database_url) as client:
        assert_health_json(client.simulate_get("/livez"), "pass", 200)
        assert proxy.accepted == 0
        assert_health_json(client.simulate_get("/readyz"), "pass", 200)
        assert proxy.accepted == 1


def test_an_unreachable_database_fails_health_and_readyz_in_time_and_they_recover(
    environ, pg_proxy
):
    proxy, database_url = pg_proxy
    budget = 0.8
    with own_app(
        environ,
        DATABASE_URL=database_url,
        HEALTH_CHECK_TIMEOUT_MS=str(int(budget * 1000)),
        REDIS_PASSWORD=REDIS_PASSWORD,
    ) as client:
        assert client.simulate_get("/readyz").status_code == 200  # a pooled connection

        proxy.cut()
        answers = []
        for path in ("/readyz", "/health", "/health/database"):
            started = time.monotonic()
            answers.append(client.simulate_get(path))
            # Within the budget, plus room for a loaded machine: the connect itself never ends.
            assert time.monotonic() - started < budget + 2.0, path
        for answer in answers:
            body = assert_health_json(answer, "fail", 503)
            failed = body["checks"]["database:connection"][0]
            assert failed["status"] == "fail" and failed["componentType"] == "datastore"
            assert failed["output"] == "timed out after 800 ms"
        assert_health_json(client.simulate_get("/livez"), "pass", 200)

        proxy.restore()
        deadline = time.monotonic() + 15
        while client.simulate_get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not recover"
            time.sleep(0.1)
        assert client.simulate_get("/health").status_code == 200
        assert_no_secret(*answers)
