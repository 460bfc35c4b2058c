"""Health: what orchestrators and operators read.

``/health`` gathers the checks of every plugin (``lumen_health_checks``), ``/health/database``
and ``/health/redis`` the checks of one component, ``/livez`` says the process answers and
``/readyz`` that it can serve (the database answers). Bodies follow the IETF draft "Health Check
Response Format for HTTP APIs" (``application/health+json``): 200 for pass and warn, 503 for fail.

Checks run in parallel within one time budget (HEALTH_CHECK_TIMEOUT_MS), each at most once at a
time: a check still running at the deadline reports fail and the endpoint answers anyway.
Results are reused for HEALTH_CHECK_INTERVAL seconds, so a flood of probes runs each check at
most once per interval.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from functools import partial
from typing import Any

import falcon
from marshmallow import fields, validate
from sqlalchemy import text as sql
from sqlalchemy.pool import QueuePool

from lumen import (
    Redactor,
    SettingsSchema,
    __version__,
    hookimpl,
    operation,
    positive_int,
    text,
)

log = logging.getLogger(__name__)

MEDIA_HEALTH_JSON = "application/health+json"
STATUSES = ("pass", "warn", "fail")  # from best to worst
# Only the database is critical: without it nothing can be served. Any other failing component
# (Redis, storage, a plugin's data) makes /health warn, since the service still answers.
CRITICAL_COMPONENTS = frozenset({"database"})
NAME = "health"
POOL_BUSY_SHARE = 0.8  # of pool size + max overflow checked out: warn
LOW_SPACE_SHARE = 0.1  # of MAX_STORAGE_GB left free on the disk: warn
SHAPE = ("componentType", "observedUnit")  # kept from a check's last value for its failures


class HealthSettings(SettingsSchema):
    service_id = text("HEALTH_SERVICE_ID", "lumen")
    interval = fields.Float(
        load_default=5.0, validate=validate.Range(min=0), data_key="HEALTH_CHECK_INTERVAL"
    )
    timeout_ms = positive_int("HEALTH_CHECK_TIMEOUT_MS", 1000)


# ---------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------


def health_of(lumen) -> Health:
    return lumen.state[NAME]


@hookimpl
def lumen_settings():
    return HealthSettings


@hookimpl
def lumen_startup(lumen):
    lumen.state[NAME] = Health(lumen, lumen.settings_of(HealthSettings))


@hookimpl
def lumen_health_checks(lumen):
    return {
        "database:connection": partial(check_database_connection, lumen),
        "database:pool": partial(check_database_pool, lumen),
        "redis:connection": partial(check_redis_connection, lumen),
        "storage:free": partial(check_storage_free, lumen),
    }


@hookimpl
def lumen_routes(lumen):
    return list(health_of(lumen).resources.items())


@hookimpl
def lumen_openapi(lumen, spec):
    spec.components.schema("Health", component=HEALTH_SCHEMA)
    body = {MEDIA_HEALTH_JSON: {"schema": {"$ref": "#/components/schemas/Health"}}}
    for path in health_of(lumen).resources:
        responses = operation(spec, path, "get")["responses"]
        responses["200"] = {"description": "pass or warn", "content": body}
        responses["503"] = {"description": "fail", "content": body}


HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": list(STATUSES)},
        "version": {"type": "string"},
        "serviceId": {"type": "string"},
        "output": {"type": "string"},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "object"}},
        },
    },
}


# ---------------------------------------------------------------------------
# The core's checks: each returns one IETF check entry; an exception is a fail
# ---------------------------------------------------------------------------


def check_database_connection(lumen) -> dict:
    """Round trip of ``SELECT 1`` on a pooled connection (pre-ping included)."""
    started = time.perf_counter()
    with lumen.engine.connect() as connection:
        connection.execute(sql("SELECT 1"))
    return _latency("datastore", started, health_of(lumen).timeout)


def check_database_pool(lumen) -> dict:
    """This worker's pool: warn when nearly every connection it may open is checked out."""
    figures = lumen.pool_figures()
    max_overflow = lumen.settings.db_max_overflow if isinstance(lumen.engine.pool, QueuePool) else 0
    capacity = figures["size"] + max_overflow
    entry = {
        "componentType": "datastore",
        "observedValue": {
            "size": figures["size"],
            "max_overflow": max_overflow,
            "checked_out": figures["checked_out"],
            "overflow": figures["overflow"],
        },
        "observedUnit": "connections",
        "status": "pass",
    }
    if figures["checked_out"] >= POOL_BUSY_SHARE * capacity:
        entry["status"] = "warn"
        entry["output"] = f"{figures['checked_out']} of {capacity} connections checked out"
    return entry


def check_redis_connection(lumen) -> dict:
    """Round trip of PING. Redis is optional: without REDIS_URL the check passes and says so."""
    client = lumen.redis
    if client is None:
        return {
            "componentType": "datastore",
            "observedValue": None,
            "status": "pass",
            "output": "not configured (REDIS_URL is not set)",
        }
    started = time.perf_counter()
    client.ping()
    return _latency("datastore", started, health_of(lumen).timeout)


def check_storage_free(lumen) -> dict:
    """Free bytes on the disk of STORAGE_PATH, against the quota (MAX_STORAGE_GB) and the
    largest upload (MAX_UPLOAD_MB)."""
    free = lumen.storage.free_bytes()
    entry = {
        "componentType": "system",
        "observedValue": free,
        "observedUnit": "bytes",
        "status": "pass",
    }
    if free < lumen.settings.max_upload_mb * 1024**2:
        entry["status"] = "fail"
        entry["output"] = "less free space than one upload of MAX_UPLOAD_MB"
    elif free < LOW_SPACE_SHARE * lumen.storage.max_bytes:
        entry["status"] = "warn"
        entry["output"] = f"less than {LOW_SPACE_SHARE:.0%} of MAX_STORAGE_GB free"
    return entry


def _latency(component_type: str, started: float, timeout: float) -> dict:
    ms = (time.perf_counter() - started) * 1000
    entry = {
        "componentType": component_type,
        "observedValue": round(ms, 3),
        "observedUnit": "ms",
        "status": "pass",
    }
    if ms > timeout * 1000 / 2:
        entry["status"] = "warn"
        entry["output"] = "slower than half of HEALTH_CHECK_TIMEOUT_MS"
    return entry


# ---------------------------------------------------------------------------
# Running the checks
# ---------------------------------------------------------------------------


class Health:
    """One app's checks, their last results, and the reports the endpoints answer with."""

    def __init__(self, lumen, section):
        self.lumen = lumen
        self.service_id = section.service_id
        self.timeout = section.timeout_ms / 1000
        self.interval = section.interval
        self._redact = Redactor(lumen.settings.environ)
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}
        self._kept: dict[str, tuple[float, list[dict]]] = {}  # name -> (monotonic, entries)
        self._shapes: dict[str, dict] = {}  # name -> componentType and observedUnit last seen
        self.resources = {
            "/health": HealthResource(self, component=None),
            "/health/database": HealthResource(self, component="database"),
            "/health/redis": HealthResource(self, component="redis"),
            "/livez": LivenessResource(self),
            "/readyz": ReadinessResource(self),
        }

    @property
    def checks(self) -> dict[str, Callable[[], Any]]:
        """Every plugin's checks, as the core gathered them at start-up."""
        return self.lumen.health_checks

    def names(self, component: str | None) -> list[str]:
        return [name for name in self.checks if component in (None, _component(name))]

    def results(self, names: Iterable[str]) -> dict[str, list[dict]]:
        """The entries of each named check: kept ones if younger than the interval, else from a
        run, started now unless one is still going. Returns by the deadline, whatever runs."""
        names = list(names)
        asked = time.monotonic()
        found: dict[str, list[dict]] = {}
        waiting: dict[str, Future] = {}
        with self._lock:
            for name in names:
                kept = self._kept.get(name)
                if kept is not None and asked - kept[0] < self.interval:
                    found[name] = kept[1]
                    continue
                run = self._running.get(name)
                if run is None or run.done():
                    run = self._running[name] = self._start(name)
                waiting[name] = run
        wait(waiting.values(), timeout=max(0.0, asked + self.timeout - time.monotonic()))
        for name, run in waiting.items():
            found[name] = run.result() if run.done() else self._timed_out(name, asked)
        return {name: found[name] for name in names}

    def report(self, names: list[str], whole_service: bool) -> dict:
        """The health+json document for the named checks. For the whole service only a
        critical component's failure is a fail; for one component any failure is."""
        checks = self.results(names)
        worst_by_check = {
            name: _worst(e["status"] for e in entries) for name, entries in checks.items()
        }
        counted = [
            "warn"
            if whole_service and worst == "fail" and _component(name) not in CRITICAL_COMPONENTS
            else worst
            for name, worst in worst_by_check.items()
        ]
        document = self.document(_worst(counted))
        failing = [f"{name}: {worst}" for name, worst in worst_by_check.items() if worst != "pass"]
        if failing:
            document["output"] = "; ".join(failing)
        document["checks"] = checks
        return document

    def document(self, status: str) -> dict:
        return {"status": status, "version": __version__, "serviceId": self.service_id}

    def _start(self, name: str) -> Future:
        # A daemon thread per run: a check that never returns cannot hold up the worker's exit,
        # and since a check has at most one run at a time, hung runs never pile up.
        run: Future = Future()
        threading.Thread(
            target=lambda: run.set_result(self._run(name)), name=f"health {name}", daemon=True
        ).start()
        return run

    def _run(self, name: str) -> list[dict]:
        try:
            entries = _entries(self.checks[name]())
        except Exception as exc:
            # The detail goes to the log (redacted there); the public body names only the kind.
            log.warning(
                "health check failed",
                extra={"check": name, "error": f"{type(exc).__name__}: {exc}"},
            )
            entries = [self._failure(name, f"{type(exc).__name__} (details in the log)")]
        if entries is None:
            entries = [self._failure(name, "the check returned no valid result")]
        observed = _now()
        for entry in entries:
            entry.setdefault("time", observed)
            self._scrub(entry)
        with self._lock:
            self._kept[name] = (time.monotonic(), entries)
            if entries[0].get("observedValue") is not None:
                self._shapes[name] = {k: entries[0][k] for k in SHAPE if k in entries[0]}
        return entries

    def _timed_out(self, name: str, asked: float) -> list[dict]:
        entries = [self._failure(name, f"timed out after {round(self.timeout * 1000)} ms")]
        with self._lock:
            kept = self._kept.get(name)
            if kept is None or kept[0] < asked:  # unless a run finished meanwhile
                self._kept[name] = (time.monotonic(), entries)
        return entries

    def _failure(self, name: str, output: str) -> dict:
        """A fail entry in the check's shape as last observed; its value is unknown."""
        shape = self._shapes.get(name, {})
        return {**shape, "observedValue": None, "status": "fail", "output": output, "time": _now()}

    def _scrub(self, entry: dict) -> None:
        for key, value in entry.items():
            if isinstance(value, str) and key != "status":
                entry[key] = self._redact(value)


def _entries(outcome: Any) -> list[dict] | None:
    """A check's return value as a list of entries, or None when it is malformed."""
    entries = outcome if isinstance(outcome, list) else [outcome]
    if not entries or not all(
        isinstance(entry, dict) and entry.get("status") in STATUSES for entry in entries
    ):
        return None
    return [dict(entry) for entry in entries]


def _component(name: str) -> str:
    return name.split(":", 1)[0]


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=STATUSES.index, default="pass")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------
# Web
# ---------------------------------------------------------------------------


def answer(resp: falcon.Response, document: dict) -> None:
    status = falcon.HTTP_503 if document["status"] == "fail" else falcon.HTTP_200
    send(resp, status, json.dumps(document, default=str).encode())


def send(resp: falcon.Response, status: str, body: bytes) -> None:
    resp.status = status
    resp.content_type = MEDIA_HEALTH_JSON
    resp.set_header("Cache-Control", "no-store")
    resp.data = body


class HealthResource:
    authenticate = False  # probes answer whatever Authorization says, and open no session

    def __init__(self, health: Health, component: str | None):
        self.health, self.component = health, component

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Health checks in the IETF health+json format; 503 when one fails."""
        names = self.health.names(self.component)
        answer(resp, self.health.report(names, whole_service=self.component is None))

    on_head = on_get


class LivenessResource:
    authenticate = False

    def __init__(self, health: Health):
        self.health = health
        # The same document every time: encoded once.
        self.body = json.dumps(health.document("pass")).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The process answers (touches no dependency)."""
        send(resp, falcon.HTTP_200, self.body)

    on_head = on_get


class ReadinessResource:
    authenticate = False

    def __init__(self, health: Health):
        self.health = health

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The process can serve: the database answers; 503 while it does not."""
        answer(resp, self.health.report(["database:connection"], whole_service=False))

    on_head = on_get
