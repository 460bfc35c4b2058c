"""The metrics plugin: request and pool metrics on a per-app registry, the lumen_metrics hook,
the start-up checks, and (slow) two gunicorn workers whose figures add up in /metrics."""

from __future__ import annotations

import glob
import http.client
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from lumen import hookimpl
from lumen.app import Lumen
from lumen.config import ConfigError, load_settings
from lumen.plugins import PluginError, make_plugin_manager
from lumen_plugins.metrics import LATENCY_BUCKETS


class Registering:
    """A test plugin registering one metric through the hook, as every plugin does."""

    def __init__(self, name="lumen_test_things"):
        self.name = name
        self.counter = None
        self.registries = []

    @hookimpl
    def lumen_metrics(self, lumen, registry):
        self.registries.append(registry)
        self.counter = Counter(self.name, "Things seen by the test plugin.", registry=registry)


@pytest.fixture
def metrics_app(make_app):
    def build(*extra_plugins, **overrides):
        env = {"LUMEN_PLUGINS": "metrics", "METRICS_ENABLED": "true", **overrides}
        return falcon.testing.TestClient(make_app(*extra_plugins, **env))

    return build


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()
    )


def scrape(client) -> str:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    return result.text


# ---------------------------------------------------------------------------
# Requests, the pool, the hook
# ---------------------------------------------------------------------------


def test_disabled_metrics_add_no_route_and_no_middleware(metrics_app):
    client = metrics_app(METRICS_ENABLED="false")
    assert client.simulate_get("/metrics").status_code == 404
    assert client.app.lumen.state.get("metrics") is None


def test_requests_are_counted_and_timed_by_route_template_method_and_status(metrics_app):
    client = metrics_app()
    for user_id in ("alpha", "beta", "gamma"):
        assert client.simulate_get(f"/api/v1/users/{user_id}").status_code == 404
    assert client.simulate_get("/api/v1/photos").status_code == 200
    text = scrape(client)
    route = "/api/v1/users/{user_id}"
    assert value(text, "lumen_http_requests_total", route=route, method="GET", status="404") == 3
    assert value(text, "lumen_http_request_duration_seconds_count", route=route) == 3
    assert value(text, "lumen_http_request_duration_seconds_sum", route=route) > 0
    assert value(text, "lumen_http_requests_total", route="/api/v1/photos", status="200") == 1
    assert "alpha" not in text and "beta" not in text  # never the raw path


def test_requests_answered_before_routing_keep_their_route(metrics_app):
    client = metrics_app()
    refused = client.simulate_get("/api/v1/photos", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401  # raised by the auth middleware, before routing
    assert client.simulate_get("/no/such/path/123").status_code == 404
    text = scrape(client)
    assert value(text, "lumen_http_requests_total", route="/api/v1/photos", status="401") == 1
    assert value(text, "lumen_http_requests_total", route="unmatched", status="404") == 1
    assert "/no/such/path" not in text


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
def test_an_unknown_method_is_counted_as_other(metrics_app):
    client = metrics_app()
    client.simulate_request("BREW", "/api/v1/photos")
    text = scrape(client)
    assert value(text, "lumen_http_requests_total", method="other") == 1
    assert "BREW" not in text


def test_a_workers_counts_reach_its_metrics_within_the_flush_interval_without_a_scrape(
    metrics_app,
):
    # Other workers' figures reach a scrape through their files, written by each worker's own
    # flush: without a scrape of this worker, its counts must still get there, and soon.
    client = metrics_app(METRICS_FLUSH_SECONDS="0.05")
    registry = client.app.lumen.state["metrics"].registry
    labels = {"method": "GET", "route": "/api/v1/photos", "status": "200"}
    for _ in range(3):
        assert client.simulate_get("/api/v1/photos").status_code == 200
    deadline = time.monotonic() + 10
    while registry.get_sample_value("lumen_http_requests_total", labels) != 3:
        assert time.monotonic() < deadline, "the counts never reached the registry"
        time.sleep(0.01)
    assert registry.get_sample_value("lumen_http_request_duration_seconds_count", labels) == 3


def test_counts_kept_for_the_next_flush_match_a_histogram_observed_one_at_a_time(metrics_app):
    client = metrics_app(METRICS_FLUSH_SECONDS="60")  # no flush but the ones made here
    metrics = client.app.lumen.state["metrics"]
    seconds = [0.0004, 0.001, 0.003, 0.003, 0.07, 2.0, 12.5]  # on a bound, between, past all
    for elapsed in seconds:
        metrics.observe("GET", "/x", 200, elapsed)
    metrics.tallies.flush()
    metrics.observe("GET", "/x", 200, 0.2)  # added to what was flushed before
    metrics.observe("POST", "/x", 201, 0.2)
    metrics.tallies.flush()

    expected = CollectorRegistry()
    histogram = Histogram(
        "lumen_http_request_duration_seconds",
        "",
        ("method", "route", "status"),
        buckets=LATENCY_BUCKETS,
        registry=expected,
    )
    for elapsed in [*seconds, 0.2]:
        histogram.labels("GET", "/x", "200").observe(elapsed)
    histogram.labels("POST", "/x", "201").observe(0.2)

    def latency_samples(registry) -> set:
        return {
            (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
            for s in samples(generate_latest(registry).decode())
            if s.name.startswith("lumen_http_request_duration_seconds")
            and not s.name.endswith("_created")  # when each was made, which differs
            and s.labels.get("route") == "/x"
        }

    assert latency_samples(metrics.registry) == latency_samples(expected)
    assert (
        metrics.registry.get_sample_value(
            "lumen_http_requests_total", {"method": "GET", "route": "/x", "status": "200"}
        )
        == len(seconds) + 1
    )


def test_what_is_counted_after_the_last_flush_is_written_at_shutdown(metrics_app):
    client = metrics_app(METRICS_FLUSH_SECONDS="60")
    metrics = client.app.lumen.state["metrics"]
    assert client.simulate_get("/api/v1/photos").status_code == 200
    labels = {"method": "GET", "route": "/api/v1/photos", "status": "200"}
    assert metrics.registry.get_sample_value("lumen_http_requests_total", labels) is None
    client.app.lumen.shutdown()
    assert metrics.registry.get_sample_value("lumen_http_requests_total", labels) == 1


def own_total(counter) -> float:
    # Read from the counter itself: a reading of the registry would flush lumen.tally first.
    return next(s.value for s in counter.collect()[0].samples if s.name.endswith("_total"))


def test_plugins_tally_counts_are_flushed_with_the_requests(metrics_app):
    plugin = Registering()
    client = metrics_app(plugin, METRICS_FLUSH_SECONDS="0.05")
    client.app.lumen.tally.inc(plugin.counter, 2)
    assert client.simulate_get("/api/v1/photos").status_code == 200  # starts the flusher
    deadline = time.monotonic() + 10
    while own_total(plugin.counter) != 2:
        assert time.monotonic() < deadline, "the tally never reached the counter"
        time.sleep(0.01)


def test_plugins_tally_counts_are_flushed_at_shutdown(metrics_app):
    plugin = Registering()
    client = metrics_app(plugin, METRICS_FLUSH_SECONDS="60")
    assert client.simulate_get("/api/v1/photos").status_code == 200
    client.app.lumen.tally.inc(plugin.counter)
    assert own_total(plugin.counter) == 0
    client.app.lumen.shutdown()
    assert own_total(plugin.counter) == 1


def test_a_flush_interval_out_of_range_stops_startup(metrics_app):
    for bad in ("0", "61", "soon"):
        with pytest.raises(ConfigError) as caught:
            metrics_app(METRICS_FLUSH_SECONDS=bad)
        assert "METRICS_FLUSH_SECONDS" in str(caught.value)


def test_pool_figures_are_gauges(metrics_app, backend):
    client = metrics_app()
    held = backend[2].connect()
    try:
        text = scrape(client)
    finally:
        held.close()
    assert value(text, "lumen_db_pool_size") == backend[2].pool.size()
    assert value(text, "lumen_db_pool_checked_out") >= 1
    assert "lumen_db_pool_overflow" in text


def test_the_pool_gauges_follow_requests_at_most_once_per_interval(metrics_app, backend):
    client = metrics_app()
    metrics = client.app.lumen.state.get("metrics")
    registry = metrics.registry
    metrics.pool_update_seconds = 0  # every request
    held = backend[2].connect()
    try:
        client.simulate_get("/api/v1/photos")
        assert registry.get_sample_value("lumen_db_pool_checked_out") >= 1
    finally:
        held.close()
    client.simulate_get("/api/v1/photos")
    assert registry.get_sample_value("lumen_db_pool_checked_out") == 0

    metrics.pool_update_seconds = 3600  # the next request reads the pool, later ones do not
    client.simulate_get("/api/v1/photos")
    held = backend[2].connect()
    try:
        client.simulate_get("/api/v1/photos")
        assert registry.get_sample_value("lumen_db_pool_checked_out") == 0
        assert value(scrape(client), "lumen_db_pool_checked_out") >= 1  # a scrape always does
    finally:
        held.close()


def test_every_plugin_registers_through_the_hook_on_its_apps_registry(metrics_app):
    first, second = Registering(), Registering()
    a = metrics_app(first)
    b = metrics_app(second)  # the same metric name again: each app has its own registry
    assert first.registries[0] is a.app.lumen.state.get("metrics").registry
    assert first.registries[0] is not second.registries[0]
    first.counter.inc(5)
    assert value(scrape(a), "lumen_test_things_total") == 5
    assert value(scrape(b), "lumen_test_things_total") == 0


def test_the_hook_is_called_once_per_app(metrics_app):
    plugin = Registering()
    client = metrics_app(plugin)
    scrape(client)
    client.simulate_get("/api/v1/photos")
    assert len(plugin.registries) == 1


def test_a_metric_name_taken_twice_stops_the_app_naming_the_plugin(metrics_app):
    with pytest.raises(PluginError) as caught:
        metrics_app(Registering("lumen_http_requests"))
    # The plugin that asked second is named: here the metrics plugin, called after extra0.
    message = str(caught.value)
    assert message.startswith("plugin 'metrics' failed in lumen_metrics: DuplicateTimeseries")
    assert "lumen_http_requests" in message


def test_a_process_that_never_serves_creates_no_metrics(environ):
    settings = load_settings({**environ, "LUMEN_PLUGINS": "metrics", "METRICS_ENABLED": "true"})
    plugin = Registering()
    pm = make_plugin_manager(["metrics"])
    pm.register(plugin, name="extra0")
    lumen = Lumen(settings, pm)
    lumen.start()  # what the gunicorn master and every CLI command do
    try:
        lumen.hook.lumen_routes(lumen=lumen)  # `lumen plugins` lists the routes
        assert lumen.state.get("metrics") is None and plugin.registries == []
    finally:
        lumen.shutdown()


def test_openmetrics_is_served_to_a_scraper_that_asks(metrics_app):
    result = metrics_app().simulate_get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert result.headers["content-type"].startswith("application/openmetrics-text")
    assert result.text.endswith("# EOF\n")


def test_the_openapi_document_lists_metrics(metrics_app):
    paths = metrics_app().simulate_get("/openapi.json").json["paths"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def lumen_config_check(tmp_path, directory) -> subprocess.CompletedProcess:
    """``lumen config check`` starts the plugins as ``lumen serve`` does, in a process whose
    environment has the variable from the start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "LUMEN_"))}
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        METRICS_ENABLED="true",
        LUMEN_PLUGINS="metrics",
        DATABASE_URL=f"sqlite:///{tmp_path / 'lumen.db'}",
    )
    return subprocess.run(
        [sys.executable, "-c", "from lumen.cli import main; main()", "config", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_missing_multiprocess_directory_is_made_at_startup(tmp_path):
    directory = tmp_path / "prometheus" / "lumen"
    done = lumen_config_check(tmp_path, directory)
    assert done.returncode == 0, done.stderr
    assert directory.is_dir()
    assert list(directory.iterdir()) == []  # a process that does not serve writes nothing


@pytest.mark.slow
def test_a_multiprocess_directory_that_cannot_be_one_stops_startup(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    done = lumen_config_check(tmp_path, taken)
    assert done.returncode != 0
    assert f"invalid setting PROMETHEUS_MULTIPROC_DIR='{taken}': must be a directory" in (
        done.stderr
    )


def test_a_multiprocess_directory_prometheus_client_does_not_use_stops_startup(
    metrics_app, tmp_path
):
    # This process imported prometheus_client without the variable: its values live in memory,
    # so a scrape of the directory would show nothing.
    with pytest.raises(ConfigError) as caught:
        metrics_app(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert "must be in the process environment" in str(caught.value)


# ---------------------------------------------------------------------------
# Two gunicorn workers, one shared directory
# ---------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def served_by_pid(directory) -> dict[int, float]:
    """Requests to /livez counted in each worker's own file."""
    counts = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        pid = int(os.path.basename(path)[len("counter_") : -len(".db")])
        counts[pid] = sum(
            s.value
            for metric in MultiProcessCollector.merge([path])
            for s in metric.samples
            if s.name == "lumen_http_requests_total" and s.labels.get("route") == "/livez"
        )
    return counts


def live_pool_files(directory) -> set[str]:
    return set(glob.glob(os.path.join(directory, "gauge_livesum_*.db")))


@pytest.mark.slow
def test_two_gunicorn_workers_add_up_in_metrics(gunicorn_server, tmp_path):
    directory = tmp_path / "prometheus"
    pool_size = 3
    server = gunicorn_server(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'lumen.db'}",
            "STORAGE_PATH": str(tmp_path / "storage"),
            "LUMEN_PLUGINS": "health,metrics",
            "METRICS_ENABLED": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "DB_POOL_SIZE": str(pool_size),
            "METRICS_FLUSH_SECONDS": "0.2",
        },
        workers=2,
    )
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):  # until both workers served some, bounded
            statuses = list(pool.map(lambda _: get(server.port, "/livez")[0], range(100)))
            assert statuses == [200] * 100
            sent += 100
            time.sleep(0.3)  # each worker writes its counts to its file at least this often
            if len([n for n in served_by_pid(directory).values() if n > 0]) >= 2:
                break
    deadline = time.monotonic() + 10
    while sum(served_by_pid(directory).values()) != sent:
        assert time.monotonic() < deadline, (served_by_pid(directory), sent)
        time.sleep(0.05)
    per_worker = served_by_pid(directory)
    assert len([n for n in per_worker.values() if n > 0]) >= 2, per_worker

    status, body = get(server.port, "/metrics")
    assert status == 200
    text = body.decode()
    assert value(text, "lumen_http_requests_total", route="/livez") == sent
    assert value(text, "lumen_http_request_duration_seconds_count", route="/livez") == sent
    assert value(text, "lumen_db_pool_size") == 2 * pool_size  # livesum over the two workers

    # A worker that exits keeps its counts, and its pool no longer counts (child_exit).
    before = live_pool_files(directory)
    victim = max(per_worker, key=per_worker.get)
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while True:
        after = live_pool_files(directory)
        if len(after) == 2 and after != before:
            break
        assert time.monotonic() < deadline, f"no replacement worker: {after}\n{server.log()}"
        time.sleep(0.1)
    text = get(server.port, "/metrics")[1].decode()
    assert value(text, "lumen_http_requests_total", route="/livez") == sent
    assert value(text, "lumen_db_pool_size") == 2 * pool_size
