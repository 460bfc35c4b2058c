"""What the metrics plugin costs per request: /livez throughput with METRICS_ENABLED off and on.

Three gunicorn servers (sync, 2 workers each, SQLite, health and metrics plugins installed)
run side by side: metrics off, metrics on in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as
deployed under gunicorn), and metrics on with a per-process registry. Each round loads each
server in turn, in a rotated order, so the machine's noise hits all alike. The load generator
is wrk (-t2 -c32) when installed, else a Python thread pool opening a connection per request.

    python -m benchmarks.metrics_bench [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.harness import gunicorn, write_results, wrk

TARGET_COST = 0.10  # of /livez throughput
CONNECTIONS = 32


def python_load(url: str, seconds: float, connections: int = CONNECTIONS) -> dict:
    """Requests/s from a thread pool, a new connection per request (as a sync worker closes
    each one anyway). Bounded by ``seconds``."""
    parts = urlsplit(url)
    deadline = time.monotonic() + seconds
    counts = {"ok": 0, "other": 0}
    lock = threading.Lock()

    def client() -> None:
        ok = other = 0
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            try:
                connection.request("GET", parts.path, headers={"Connection": "close"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    ok += 1
                else:
                    other += 1
            except OSError:
                other += 1
            finally:
                connection.close()
        with lock:
            counts["ok"] += ok
            counts["other"] += other

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        for _ in range(connections):
            pool.submit(client)
    elapsed = time.monotonic() - started
    return {"rps": counts["ok"] / elapsed, "non_2xx": counts["other"]}


def load(url: str, seconds: int) -> dict:
    if shutil.which("wrk"):
        return wrk(url, seconds=seconds, connections=CONNECTIONS, threads=2)
    return python_load(url, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lumen-metrics-bench-"))
    base = {
        "DATABASE_URL": f"sqlite:///{workdir / 'lumen.db'}",
        "LUMEN_PLUGINS": "health,metrics",
    }
    configs = {
        "off": {**base, "METRICS_ENABLED": "false"},
        "on_multiprocess": {
            **base,
            "METRICS_ENABLED": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        },
        "on_per_process": {**base, "METRICS_ENABLED": "true"},
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        with contextlib.ExitStack() as stack:
            urls = {
                name: stack.enter_context(gunicorn(env, workers=2)).url + "/livez"
                for name, env in configs.items()
            }
            for url in urls.values():
                load(url, 1)  # warm-up
            names = list(configs)
            for round_number in range(args.rounds):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    result = load(urls[name], args.seconds)
                    runs[name].append(result)
                    print(f"round {round_number + 1} {name:>16}: {result['rps']:9.0f} req/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
    costs = {}
    for name in ("on_multiprocess", "on_per_process"):
        # Paired by round: each "on" run against the "off" run of the same round.
        ratios = [on["rps"] / off["rps"] for on, off in zip(runs[name], runs["off"], strict=True)]
        costs[name] = {
            "median_ratio_to_off": round(statistics.median(ratios), 4),
            "cost_share": round(1 - statistics.median(ratios), 4),
            "ratios_by_round": [round(r, 4) for r in ratios],
        }
    verdict = costs["on_multiprocess"]["cost_share"] < TARGET_COST
    for name, median in medians.items():
        print(f"{name:>16}: median {median:9.0f} req/s")
    for name, cost in costs.items():
        print(f"{name:>16}: costs {cost['cost_share']:.1%} of /livez throughput")
    print(f"target: under {TARGET_COST:.0%} in multiprocess mode: {'met' if verdict else 'MISSED'}")
    path = write_results(
        "metrics_bench",
        {
            "what": "GET /livez, gunicorn sync -w 2, metrics off vs on, interleaved rounds",
            "load_generator": "wrk -t2 -c32" if shutil.which("wrk") else "python threads (32)",
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "runs": runs,
            "median_rps": {name: round(m, 1) for name, m in medians.items()},
            "cost": costs,
            "target_cost_share": TARGET_COST,
            "target_met": verdict,
            "caveats": "2 cores shared by the load generator, 3 idle-or-busy gunicorn servers and "
            "any other work on the machine; compare ratios within this run, not absolute figures.",
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
