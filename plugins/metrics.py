"""Metrics: ``GET /metrics`` in the Prometheus text format, when METRICS_ENABLED is true.

Each app has its own CollectorRegistry, made by the core, which hands it to every plugin
through ``lumen_metrics(lumen, registry)`` when the web app is built. This plugin counts and
times requests by method, route template and status, follows the database pool, and serves the
registry.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes prometheus_client keep every value in files of
the process that wrote it; a scrape, answered by any one worker, merges the files of all workers
so the figures add up. Without it, the answering process's own registry is exposed.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable

import falcon
from falcon.constants import COMBINED_METHODS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from lumen import (
    ConfigError,
    SettingsSchema,
    boolean,
    hookimpl,
    operation,
    positive_number,
    slots,
    status_of,
    text,
)

NAME = "metrics"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KNOWN_METHODS = frozenset(COMBINED_METHODS)
UNMATCHED = "unmatched"  # the route label of a path no route matches: never the raw path
# Reading the pool's figures costs about as much as counting a request: after a request they
# are read at most once a second per worker (and on every scrape by the worker that answers it).
POOL_UPDATE_SECONDS = 1.0


class MetricsSettings(SettingsSchema):
    enabled = boolean("METRICS_ENABLED", False)
    multiprocess_dir = text("PROMETHEUS_MULTIPROC_DIR")
    flush_seconds = positive_number("METRICS_FLUSH_SECONDS", 1.0, maximum=60.0)


def _enabled(lumen) -> bool:
    return lumen.settings_of(MetricsSettings).enabled


# ---------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------


@hookimpl
def lumen_settings():
    return MetricsSettings


@hookimpl
def lumen_startup(lumen):
    if _enabled(lumen):
        multiprocess_dir(lumen)  # a bad setting stops start-up, before any worker serves


@hookimpl
def lumen_metrics(lumen, registry):
    # Only with the web app: a process that never serves (the gunicorn master, a CLI command)
    # creates no metrics and so writes no files.
    if _enabled(lumen):
        lumen.state[NAME] = Metrics(lumen, registry)


@hookimpl
def lumen_shutdown(lumen):
    if NAME in lumen.state:
        lumen.state[NAME].close()  # what the worker counted reaches the files before it exits


@hookimpl
def lumen_middleware(lumen):
    if NAME not in lumen.state:
        return []
    return [(slots.OUTERMOST, RequestMetricsMiddleware(lumen.state[NAME]))]


@hookimpl
def lumen_routes(lumen):
    if NAME not in lumen.state:
        return []
    return [("/metrics", MetricsResource(lumen.state[NAME]))]


@hookimpl
def lumen_openapi(lumen, spec):
    if NAME in lumen.state:
        operation(spec, "/metrics", "get")["responses"]["200"] = {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }


def multiprocess_dir(lumen) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR, checked and made if missing (gunicorn's on_starting empties
    it; ``lumen serve`` starts the plugins before that). prometheus_client reads the variable
    from the process environment when first imported, so it must be there too."""
    directory = lumen.settings_of(MetricsSettings).multiprocess_dir
    if directory is None:
        return None
    writes_files = values.ValueClass is not values.MutexValue
    if not writes_files or os.environ.get("PROMETHEUS_MULTIPROC_DIR") != directory:
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR",
            directory,
            "must be in the process environment before the process starts",
        )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR", directory, f"must be a directory ({exc.strerror})"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR", directory, "must be writable")
    return directory


# ---------------------------------------------------------------------------
# The metrics of one app
# ---------------------------------------------------------------------------


class Metrics:
    """The app's registry, the request and pool metrics, and the scrape."""

    def __init__(self, lumen, registry: CollectorRegistry):
        self.lumen = lumen
        self.directory = multiprocess_dir(lumen)
        self.registry = registry
        if self.directory is None:
            # What prometheus_client's default registry has (not available across processes).
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "lumen_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "lumen_http_request_duration_seconds",
            "Time from the first middleware to the response, by method, route template and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # livesum: the deployment's figure is the sum over the workers alive now.
        self.pool_size = self._pool_gauge("size", "Connections the pool keeps open.")
        self.pool_checked_out = self._pool_gauge("checked_out", "Connections in use.")
        self.pool_overflow = self._pool_gauge("overflow", "Connections open beyond the pool size.")
        self._pool_seen: dict | None = None
        self.pool_update_seconds = POOL_UPDATE_SECONDS
        self._pool_due = 0.0
        self.update_pool()
        self.tallies = RequestTallies(
            self.requests,
            self.latency,
            lumen.settings_of(MetricsSettings).flush_seconds,
            also=lumen.tally.flush,  # the other plugins' counters, on the same schedule
        )

    def _pool_gauge(self, figure: str, documentation: str) -> Gauge:
        return Gauge(
            f"lumen_db_pool_{figure}",
            documentation + " Summed over the live workers.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )

    def update_pool_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._pool_due:
            self._pool_due = now + self.pool_update_seconds
            self.update_pool()

    def update_pool(self) -> None:
        figures = self.lumen.pool_figures()
        if figures == self._pool_seen:  # mostly nothing changed: skip the writes
            return
        self.pool_size.set(figures["size"])
        self.pool_checked_out.set(figures["checked_out"])
        self.pool_overflow.set(figures["overflow"])
        self._pool_seen = figures

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.tallies.add((method, route, status), seconds)

    def close(self) -> None:
        self.tallies.close()

    def route_of(self, req: falcon.Request) -> str:
        """The matched route template. A request answered before routing (a preflight, a
        rate-limit refusal) is matched against the app's own router."""
        if req.uri_template is not None:
            return req.uri_template
        return self.lumen.route_template(req.path) or UNMATCHED

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        self.update_pool()
        self.tallies.flush()  # this worker's own figures are exact; the others' at most a flush old
        encode, content_type = choose_encoder(accept)
        if self.directory is None:
            return encode(self.registry), content_type
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.directory)
        return encode(merged), content_type


class RequestTallies:
    """Requests counted and timed in the worker's memory, and written to the request metrics
    (in multiprocess mode, to the worker's files) at most every ``flush_seconds`` by a thread
    of the worker's own, on a scrape that this worker answers, and when the app shuts down.

    A metric update in multiprocess mode takes a lock and writes to a memory-mapped file: three
    of them per request (the counter, the histogram's sum and bucket) were a fifth of the
    instructions of a ``/livez``. Adding to a dict under one lock costs a fraction of that; what
    the other workers counted reaches a scrape at most ``flush_seconds`` late, well inside a
    scrape interval.
    """

    def __init__(
        self,
        requests: Counter,
        latency: Histogram,
        flush_seconds: float,
        also: Callable[[], None] = lambda: None,
    ):
        self.requests = requests
        self.also = also
        self.latency = latency
        self.flush_seconds = flush_seconds
        # The histogram's upper bounds, +Inf last: a value goes to the first bound it does not
        # exceed, as Histogram.observe puts it.
        self.bounds = (*LATENCY_BUCKETS, float("inf"))
        self._pending: dict[tuple[str, str, int], list] = {}
        self._children: dict[tuple[str, str, int], tuple] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def add(self, key: tuple[str, str, int], seconds: float) -> None:
        bucket = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            tally = self._pending.get(key)
            if tally is None:
                tally = self._pending[key] = [0, 0.0, [0] * len(self.bounds)]
            tally[0] += 1
            tally[1] += seconds
            tally[2][bucket] += 1
        if self._flusher is None:
            self._start()

    def _start(self) -> None:
        # Started by the first request, so in the worker that serves it (never before a fork).
        with self._lock:
            if self._flusher is not None or self._stop.is_set():
                return
            self._flusher = threading.Thread(
                target=self._flush_until_stopped, name="lumen-metrics-flush", daemon=True
            )
            self._flusher.start()  # under the lock: close() never joins a thread not started

    def _flush_until_stopped(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        self.also()
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, (count, total, buckets) in pending.items():
            counter, histogram = self._children_of(key)
            counter.inc(count)
            # prometheus_client has no call for n observations at once: the histogram's own
            # values are added to, as ``observe`` does one at a time (tests/plugins/
            # test_metrics.py compares both ways).
            histogram._sum.inc(total)
            for value, n in zip(histogram._buckets, buckets, strict=True):
                if n:
                    value.inc(n)

    def _children_of(self, key: tuple[str, str, int]) -> tuple:
        children = self._children.get(key)
        if children is None:
            labels = (key[0], key[1], str(key[2]))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        return children

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        self.flush()


# ---------------------------------------------------------------------------
# Web
# ---------------------------------------------------------------------------


class RequestMetricsMiddleware:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:  # refused before any middleware ran
            return
        method = req.method if req.method in KNOWN_METHODS else "other"
        elapsed = time.perf_counter() - started
        self.metrics.observe(method, self.metrics.route_of(req), status_of(resp), elapsed)
        self.metrics.update_pool_when_due()


class MetricsResource:
    authenticate = False  # the scraper sends no token; keep /metrics reachable by it alone

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Every metric, in the Prometheus text format."""
        body, content_type = self.metrics.exposition(req.get_header("Accept"))
        resp.data = body
        resp.content_type = content_type
