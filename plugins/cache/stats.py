"""Cache statistics.

Lookups, misses and invalidations are counted in Redis, per minute, so every worker and host
adds to the same figures, with no round trip of their own. Invalidations are counted by the
transaction that makes them. Lookups and misses, one or two on every read, are counted in the
process and added to their minutes' buckets by the next peek once ``OWED_SECONDS`` have passed
(two commands a second, not two a read), before this process reads the buckets itself, and
when it shuts down; what a round trip that fails carried is lost with it. Errors cannot be
counted in a Redis that is unreachable: they are kept in the process and added once Redis
answers again. Each process also counts into prometheus_client Counters once the metrics
plugin hands it a registry, through ``lumen.tally``.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import Counter, Gauge

from lumen import Tally

# Minute buckets are kept a day: enough for ``lumen cache stats`` and the health check.
BUCKET_TTL_SECONDS = 24 * 3600
# Lookups and misses counted in a process reach Redis at most this late while it serves.
OWED_SECONDS = 1.0
KINDS = ("hits", "misses", "invalidations", "errors")
_DESCRIPTIONS = {
    "hits": "Cache lookups answered from Redis.",
    "misses": "Cache lookups that went to the database.",
    "invalidations": "Domain events that invalidated cache entries.",
    "errors": "Redis calls that failed or timed out.",
}


def current_minute() -> int:
    return int(time.time() // 60)


class Stats:
    def __init__(self, tally: Tally):
        self.tally = tally
        self._counters: dict[str, Counter] = {}
        self._breaker_open: Gauge | None = None
        self._registries: set[int] = set()
        self._lock = threading.Lock()
        self._unreported_errors = 0
        self._owed: dict[tuple[int, str], int] = {}  # (minute, field): not yet in Redis
        self._owed_due = 0.0  # time.monotonic() from which the next peek takes them

    def register(self, registry) -> None:
        """Create the counters on ``registry`` (the metrics plugin's, one per app)."""
        if id(registry) in self._registries:
            return
        self._registries.add(id(registry))
        self._counters = {
            kind: Counter(f"lumen_cache_{kind}", _DESCRIPTIONS[kind], registry=registry)
            for kind in KINDS
        }
        # livesum: the deployment's figure is how many live workers have their breaker open.
        self._breaker_open = Gauge(
            "lumen_cache_breaker_open",
            "1 while this worker's circuit breaker keeps reads away from Redis.",
            multiprocess_mode="livesum",
            registry=registry,
        )

    def count(self, kind: str, amount: int = 1) -> None:
        self.tally.inc(self._counters.get(kind), amount)

    def breaker(self, is_open: bool) -> None:
        if self._breaker_open is not None:
            self._breaker_open.set(int(is_open))

    def error(self) -> None:
        self.count("errors")
        with self._lock:
            self._unreported_errors += 1

    def owe(self, field: str, amount: int = 1) -> None:
        """Count ``amount`` into this minute's ``field`` (lookups, missed) in Redis, later."""
        key = (current_minute(), field)
        with self._lock:
            self._owed[key] = self._owed.get(key, 0) + amount

    def take_owed(self, *, now: bool = False) -> dict[tuple[int, str], int]:
        """The counts owed to Redis, once OWED_SECONDS have passed since they were last taken
        (or ``now``); empty otherwise. Whoever takes them sends them."""
        clock = time.monotonic()
        if not now and clock < self._owed_due:  # the usual case, without taking the lock
            return {}
        with self._lock:
            owed, self._owed = self._owed, {}
            self._owed_due = clock + OWED_SECONDS
        return {key: amount for key, amount in owed.items() if amount}

    def give_back(self, owed: dict[tuple[int, str], int]) -> None:
        """Counts taken for a round trip that was never made."""
        if not owed:
            return
        with self._lock:
            for key, amount in owed.items():
                self._owed[key] = self._owed.get(key, 0) + amount

    def take_unreported_errors(self) -> int:
        if not self._unreported_errors:  # the usual case, without taking the lock
            return 0
        with self._lock:
            errors, self._unreported_errors = self._unreported_errors, 0
        return errors

    def give_back_errors(self, errors: int) -> None:
        with self._lock:
            self._unreported_errors += errors


def totals(buckets: list[dict]) -> dict[str, int]:
    """Sum minute buckets (HGETALL replies) into counts and a hit rate (None without lookups).
    A bucket counts ``lookups`` (every reader's first lookup) and ``missed`` (those the
    database answered): hits are the difference. ``hits`` and ``misses`` are the fields of
    buckets written by earlier releases, still added while they last."""
    out = dict.fromkeys(KINDS, 0)
    for bucket in buckets:
        for kind in KINDS:
            out[kind] += int(bucket.get(kind.encode(), 0))
        lookups, missed = int(bucket.get(b"lookups", 0)), int(bucket.get(b"missed", 0))
        out["hits"] += lookups - missed
        out["misses"] += missed
    lookups = out["hits"] + out["misses"]
    out["lookups"] = lookups
    out["hit_rate"] = round(100 * out["hits"] / lookups, 1) if lookups else None
    return out
