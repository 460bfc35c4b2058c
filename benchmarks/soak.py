"""Soak: Lumen under gunicorn (PostgreSQL, the Redis cache on) driven by Locust for a long run,
with every worker's resident memory and the database's connection count sampled every few
seconds. Fails (exit 1) when memory or connections grow past the stated bounds.

    python -m benchmarks.soak                      # 10 minutes
    python -m benchmarks.soak --duration 30        # a smoke run

Bounds: after a warm-up (a tenth of the run, at least 5 s), each worker's RSS at the end (the
median of the last three samples) may exceed its level after the warm-up (the median of the
first three) by at most --max-rss-growth-mb; the database never holds more connections than the
pools allow (workers x (DB_POOL_SIZE + DB_MAX_OVERFLOW)), and at the end no more than they keep
(workers x DB_POOL_SIZE); no request may fail. Locust is driven through its command line only
(-f, --host, --headless, -u, -r, -t, --only-summary, --json), on the data `lumen loadtest
prepare` makes; --driver loop uses a small request loop instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg2
from tqdm import tqdm

from benchmarks.harness import PG_ADMIN_URL, gunicorn, pg_database, write_results
from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.loadtest.prepare import default_origin, prepare, write
from lumen.plugins import make_plugin_manager

POOL_SIZE, MAX_OVERFLOW = 3, 2
# What the release gate's scenarios use besides the core: search, CORS preflights, the probes.
SCENARIO_PLUGINS = {
    "LUMEN_PLUGINS": "locations,cors,health",
    "LOCATIONS_DATASET": "cities15000",
    "LOCATIONS_AUTO_IMPORT": "false",
}


def _prepared(env: dict[str, str], photos: int) -> dict:
    """A migrated database with the gazetteer's big cities (the Searcher types cities of a
    million people and more) and `lumen loadtest prepare`'s members and photos."""
    settings = load_settings(env)
    lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
    lumen.start()
    try:
        migrate.upgrade(lumen)
        lumen.state["locations"].import_gazetteer("cities15000", min_population=500_000)
        return prepare(lumen, 10, photos, default_origin(env), progress=False)
    finally:
        lumen.shutdown()


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def db_connections(database: str) -> int:
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def locust(url: str, users: int, seconds: int, data: Path, workdir: str) -> subprocess.Popen:
    """Locust headless on the release gate's scenarios, with the data `lumen loadtest prepare`
    makes; the statistics as JSON on standard output."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(root / "loadtests" / "locustfile.py"),
         "--host", url, "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
         "--only-summary", "--json"],
        env={**os.environ, "LUMEN_LOADTEST_DATA": str(data)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir,
    )  # fmt: skip


class RequestLoop:
    """The fallback driver: threads reading the feed, a photo and a profile."""

    def __init__(self, url: str, threads: int, seconds: float):
        self.url, self.threads, self.deadline = url, threads, time.monotonic() + seconds
        self.sent = self.failed = 0
        self._lock = threading.Lock()

    def _work(self) -> None:
        while time.monotonic() < self.deadline:
            ok = True
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/photos?limit=20", timeout=30) as r:
                    feed = json.loads(r.read())
                if feed:
                    photo = feed[int(time.monotonic() * 1000) % len(feed)]
                    for path in (
                        f"/api/v1/photos/{photo['id']}",
                        f"/api/v1/users/{photo['owner_id']}",
                    ):
                        urllib.request.urlopen(self.url + path, timeout=30).read()
            except OSError:
                ok = False
            with self._lock:
                self.sent += 1
                self.failed += not ok

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for thread in threads:
            thread.start()
        return threads


def soak(seconds: int, workers: int, users: int, interval: float, driver: str) -> dict:
    redis_url = os.environ.get("LUMEN_SOAK_REDIS", "redis://127.0.0.1:6379/15")
    prefix = f"lumensoak:{uuid.uuid4().hex[:8]}"
    workdir = tempfile.mkdtemp(prefix="lumen-soak-")
    storage = os.path.join(workdir, "storage")
    with pg_database("lumen_soak") as url:
        database = url.rsplit("/", 1)[1]
        data = Path(workdir) / "loadtest-data.json"
        base = {"DATABASE_URL": url, "STORAGE_PATH": storage, **SCENARIO_PLUGINS}
        write(_prepared(base, 200 if seconds >= 120 else 40), data)
        env = {
            **base,
            "LUMEN_PLUGINS": f"cache,{SCENARIO_PLUGINS['LUMEN_PLUGINS']}",
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": prefix,
            "DB_POOL_SIZE": str(POOL_SIZE),
            "DB_MAX_OVERFLOW": str(MAX_OVERFLOW),
        }
        samples: list[dict] = []
        with gunicorn(env, workers=workers) as server:
            pids = server.worker_pids()
            loop = None
            if driver == "locust":
                load = locust(server.url, users, seconds, data, workdir)
            else:
                loop = RequestLoop(server.url, users, seconds)
                loop.start()
            started = time.monotonic()
            with tqdm(total=seconds, desc="soak", unit="s", disable=None) as bar:
                while time.monotonic() - started < seconds:
                    samples.append(
                        {
                            "t": round(time.monotonic() - started, 1),
                            "rss_mb": {pid: rss_mb(pid) for pid in pids},
                            "connections": db_connections(database),
                        }
                    )
                    time.sleep(interval)
                    bar.n = min(seconds, int(time.monotonic() - started))
                    bar.refresh()
            failures: dict[str, int] = {}
            if loop is not None:
                sent, failed = loop.sent, loop.failed
            else:
                out, errors = load.communicate(timeout=120)
                if load.returncode not in (0, 1) or not out.strip():
                    raise RuntimeError(f"locust failed: {errors[-2000:]}")
                stats = json.loads(out)
                sent = sum(entry["num_requests"] for entry in stats)
                failed = sum(entry["num_failures"] for entry in stats)
                failures = {
                    f"{e['method']} {e['name']}": e["num_failures"]
                    for e in stats
                    if e["num_failures"]
                }
            restarted = [pid for pid in pids if rss_mb(pid) is None]
            samples.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mb": {pid: rss_mb(pid) for pid in pids},
                    "connections": db_connections(database),
                }
            )
        _clean_redis(redis_url, prefix)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "samples": samples,
        "workers": pids,
        "restarted": restarted,
        "sent": sent,
        "failed": failed,
        "failures": failures,
    }


def _clean_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


def judge(run: dict, seconds: int, workers: int, max_rss_growth_mb: float) -> dict:
    """The figures of a run and the bounds it broke (none: it passed)."""
    warm = max(5.0, seconds / 10)
    after = [s for s in run["samples"] if s["t"] >= warm]
    if len(after) < 6:
        raise SystemExit("soak: too few samples after the warm-up; run longer or sample faster")
    growth = {}
    for pid in run["workers"]:
        first = statistics.median(s["rss_mb"][pid] for s in after[:3] if s["rss_mb"][pid])
        last = statistics.median(s["rss_mb"][pid] for s in after[-3:] if s["rss_mb"][pid])
        growth[pid] = round(last - first, 1)
    peak_connections = max(s["connections"] for s in run["samples"])
    final_connections = run["samples"][-1]["connections"]
    problems = []
    if run["failed"]:
        problems.append(f"{run['failed']} of {run['sent']} requests failed: {run['failures']}")
    if run["restarted"]:
        problems.append(f"workers gone during the run: {run['restarted']}")
    for pid, grew in growth.items():
        if grew > max_rss_growth_mb:
            problems.append(f"worker {pid} grew {grew} MB (bound {max_rss_growth_mb} MB)")
    if peak_connections > workers * (POOL_SIZE + MAX_OVERFLOW):
        problems.append(f"{peak_connections} connections, more than the pools allow")
    if final_connections > workers * POOL_SIZE:
        problems.append(f"{final_connections} connections at the end, more than the pools keep")
    return {
        "rss_growth_mb": growth,
        "rss_mb_end": {pid: run["samples"][-1]["rss_mb"][pid] for pid in run["workers"]},
        "peak_connections": peak_connections,
        "final_connections": final_connections,
        "problems": problems,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds (default 600)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=8, help="Locust users or loop threads")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-rss-growth-mb", type=float, default=25.0)
    parser.add_argument("--driver", choices=("locust", "loop"), default="locust")
    parser.add_argument("--output", help="name of the results file in benchmarks/results/")
    args = parser.parse_args(argv)
    run = soak(args.duration, args.workers, args.users, args.interval, args.driver)
    verdict = judge(run, args.duration, args.workers, args.max_rss_growth_mb)
    summary = {**verdict, "duration_s": args.duration, "driver": args.driver}
    summary.update({k: run[k] for k in ("sent", "failed")})
    print(json.dumps({k: v for k, v in summary.items()}, indent=2, default=str))
    if args.output:
        write_results(args.output, {**summary, "samples": run["samples"]})
    return 1 if verdict["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
