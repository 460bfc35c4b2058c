"""Release thresholds (loadtests/thresholds.toml) and their verdict on a Locust run.

The file has a ``[total]`` table (the whole run), an ``[every_request]`` table (each request
name of the run) and ``[requests."METHOD name"]`` tables that override it for one request, e.g.
``[requests."POST /api/v1/photos"]``. Each table may hold any of the LIMITS below."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

# key -> (what it bounds, the measured figure of a stats row, True for a lower bound)
LIMITS = {
    "max_failure_ratio": "failure ratio",
    "max_p95_ms": "p95",
    "max_p99_ms": "p99",
    "min_requests_per_s": "requests/s",
    "min_requests": "requests",
}
TABLES = ("total", "every_request", "requests")


class ThresholdsError(Exception):
    """The thresholds file is missing or malformed (the message names the file and the key)."""


@dataclass
class Row:
    """The figures of one request name, or of the whole run (``total``)."""

    key: str  # "GET /api/v1/photos", or "total"
    requests: int
    failures: int
    requests_per_s: float
    p95_ms: float | None
    p99_ms: float | None

    def measured(self, limit: str) -> float | None:
        if limit == "max_failure_ratio":
            return self.failures / self.requests if self.requests else None
        return {
            "max_p95_ms": self.p95_ms,
            "max_p99_ms": self.p99_ms,
            "min_requests_per_s": self.requests_per_s,
            "min_requests": float(self.requests),
        }[limit]


@dataclass
class Check:
    key: str
    limit: str
    bound: float
    value: float | None

    @property
    def passed(self) -> bool:
        if self.value is None:  # nothing measured: only a minimum can be missed
            return not self.limit.startswith("min_") or self.bound <= 0
        if self.limit.startswith("min_"):
            return self.value >= self.bound
        return self.value <= self.bound

    @property
    def name(self) -> str:
        return f"{self.key} {LIMITS[self.limit]}"

    def show(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.limit == "max_failure_ratio":
            return f"{value:.2%}"
        if self.limit.endswith("_ms"):
            return f"{value:.0f} ms"
        return f"{value:.1f}" if self.limit == "min_requests_per_s" else f"{value:.0f}"

    @property
    def wanted(self) -> str:
        return ("≥ " if self.limit.startswith("min_") else "≤ ") + self.show(self.bound)

    @property
    def problem(self) -> str:
        if self.value is None:
            return f"{self.name}: nothing measured, wanted {self.wanted}"
        return f"{self.name} {self.show(self.value)}, wanted {self.wanted}"


def load(path: Path) -> dict:
    """The thresholds of ``path``, checked: unknown tables and keys and values that are not
    non-negative numbers are refused, naming the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThresholdsError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"{path}: {exc}") from None
    for table in data:
        if table not in TABLES:
            raise ThresholdsError(f"{path}: unknown table [{table}]; use {', '.join(TABLES)}")
    tables = {"total": data.get("total", {}), "every_request": data.get("every_request", {})}
    for key, table in data.get("requests", {}).items():
        tables[f'requests."{key}"'] = table
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ThresholdsError(f"{path}: [{name}] must be a table")
        for key, value in table.items():
            if key not in LIMITS:
                raise ThresholdsError(f"{path}: [{name}] {key}: unknown; use {', '.join(LIMITS)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ThresholdsError(f"{path}: [{name}] {key}: must be a number >= 0")
    return {
        "total": tables["total"],
        "every_request": tables["every_request"],
        "requests": data.get("requests", {}),
    }


def percentile(response_times: dict, count: int, share: float) -> float | None:
    """Locust's own percentile of its response-time buckets (``calculate_response_time_
    percentile``), so the figure is the one its report shows; Locust itself is not imported
    here, as it patches the standard library with gevent on import."""
    if not count:
        return None
    wanted, seen = int(count * share), 0
    for response_time in sorted(response_times, key=float, reverse=True):
        seen += response_times[response_time]
        if count - seen <= wanted:
            return float(response_time)
    return 0.0


def _row(key: str, entries: list[dict]) -> Row:
    requests = sum(e["num_requests"] for e in entries)
    buckets: dict[str, int] = {}
    for entry in entries:
        for response_time, count in entry["response_times"].items():
            buckets[response_time] = buckets.get(response_time, 0) + count
    started = min((e["start_time"] for e in entries), default=0)
    last = max((e["last_request_timestamp"] or 0 for e in entries), default=0)
    return Row(
        key=key,
        requests=requests,
        failures=sum(e["num_failures"] for e in entries),
        requests_per_s=requests / (last - started) if last > started else 0.0,
        p95_ms=percentile(buckets, requests, 0.95),
        p99_ms=percentile(buckets, requests, 0.99),
    )


def read_stats(json_path: Path) -> tuple[Row, list[Row]]:
    """(the whole run, one row per request name) from Locust's ``--json-file``: its final
    statistics, written after the last request (the CSV files are written once a second)."""
    entries = json.loads(Path(json_path).read_text(encoding="utf-8"))
    rows = [_row(f"{entry['method']} {entry['name']}", [entry]) for entry in entries]
    return _row("total", entries), rows


def judge(thresholds: dict, total: Row, rows: list[Row]) -> list[Check]:
    """Every threshold against its measured value: the total's, then each request name's
    (names the file lists but the run never made count as nothing measured)."""
    checks = [
        Check("total", limit, bound, total.measured(limit))
        for limit, bound in thresholds["total"].items()
    ]
    by_key = {row.key: row for row in rows}
    for key in sorted(set(by_key) | set(thresholds["requests"])):
        limits = {**thresholds["every_request"], **thresholds["requests"].get(key, {})}
        row = by_key.get(key)
        for limit, bound in limits.items():
            checks.append(Check(key, limit, bound, row.measured(limit) if row else None))
    return checks


def table(checks: list[Check]) -> str:
    """The verdict as a plain-text table: threshold, limit, measured value, pass or FAIL."""
    lines = [("threshold", "limit", "measured", "result")]
    lines += [(c.name, c.wanted, c.show(c.value), "pass" if c.passed else "FAIL") for c in checks]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def failure_reasons(json_path: Path, most: int = 10) -> list[str]:
    """The commonest failures of the run (written by the locustfile when Locust quits), most
    frequent first."""
    if not Path(json_path).exists():
        return []
    failures = json.loads(Path(json_path).read_text(encoding="utf-8"))
    failures.sort(key=lambda failure: -failure["count"])
    return [f"{f['count']:>6} x {f['method']} {f['name']}: {f['error']}" for f in failures[:most]]
