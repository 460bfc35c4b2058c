"""What the metrics plugin costs per request: /livez throughput with METRICS_ENABLED off and on.

Three gunicorn servers (sync, 2 workers each, SQLite, health and metrics plugins installed)
run side by side: metrics off, metrics on in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as
deployed under gunicorn), and metrics on with a per-process registry. Each round loads each
server in turn, in a rotated order, so the machine's noise hits all alike. The load generator
is wrk (-t2 -c32) when installed, else a Python thread pool opening a connection per request.

Other work on the machine moves throughput a lot from one run to the next, so two steadier
figures come with it:
- the CPU time the server's workers spent per request (from /proc). ``1 - cpu_off / cpu_on``
  is what the metrics would cost in throughput if the workers alone used the cores: an upper
  bound, since wrk and the kernel share them;
- the microseconds the metrics add to one call of the WSGI app for /livez, in a process of its
  own per mode (the fastest of many paired repetitions).

    python -m benchmarks.metrics_bench [--rounds 9] [--seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.harness import Server, gunicorn, write_results, wrk

TARGET_COST = 0.10  # of /livez throughput
CONNECTIONS = 32


# ---------------------------------------------------------------------------
# Under gunicorn
# ---------------------------------------------------------------------------


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
                ok, other = (ok + 1, other) if response.status == 200 else (ok, other + 1)
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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def load(server: Server, seconds: int) -> dict:
    """One run against /livez, with the workers' CPU time per request in microseconds."""
    url = server.url + "/livez"
    workers = server.worker_pids()
    before = cpu_seconds(workers)
    if shutil.which("wrk"):
        result = wrk(url, seconds=seconds, connections=CONNECTIONS, threads=2)
    else:
        result = python_load(url, seconds)
    used = cpu_seconds(workers) - before
    result["worker_cpu_us_per_request"] = used / (result["rps"] * seconds) * 1e6
    return result


def under_gunicorn(rounds: int, seconds: int) -> dict[str, list[dict]]:
    workdir = Path(tempfile.mkdtemp(prefix="lumen-metrics-bench-"))
    base = {"DATABASE_URL": f"sqlite:///{workdir / 'lumen.db'}", "LUMEN_PLUGINS": "health,metrics"}
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
            servers = {
                name: stack.enter_context(gunicorn(env, workers=2)) for name, env in configs.items()
            }
            for server in servers.values():
                load(server, 1)  # warm-up
            names = list(configs)
            for round_number in range(rounds):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    result = load(servers[name], seconds)
                    runs[name].append(result)
                    print(
                        f"round {round_number + 1} {name:>16}: {result['rps']:7.0f} req/s, "
                        f"workers {result['worker_cpu_us_per_request']:6.1f} us CPU/request"
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


# ---------------------------------------------------------------------------
# In one process, without the server
# ---------------------------------------------------------------------------


def in_process(mode: str, repetitions: int = 30, calls: int = 5000) -> dict[str, float]:
    """Microseconds per /livez call of the WSGI app, metrics off and on, the fastest of
    ``repetitions`` alternating batches. Run in a fresh process: prometheus_client picks
    multiprocess mode when first imported."""
    workdir = tempfile.mkdtemp(prefix="lumen-metrics-micro-")
    environ = {
        "DATABASE_URL": f"sqlite:///{workdir}/lumen.db",
        "STORAGE_PATH": workdir,
        "LUMEN_PLUGINS": "health,metrics",
    }
    if mode == "multiprocess":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = environ["PROMETHEUS_MULTIPROC_DIR"] = workdir
    from falcon.testing import create_environ

    from lumen.app import create_app
    from lumen.config import load_settings
    from lumen.plugins import make_plugin_manager

    apps = {}
    for name, enabled in (("off", "false"), ("on", "true")):
        settings = load_settings({**environ, "METRICS_ENABLED": enabled})
        apps[name] = create_app(settings, make_plugin_manager(settings.enabled_plugins))
    request = create_environ(path="/livez")

    def start_response(status, headers, exc_info=None):
        pass

    best = {name: float("inf") for name in apps}
    for _ in range(repetitions):
        for name, app in apps.items():
            started = time.perf_counter()
            for _ in range(calls):
                b"".join(app(dict(request), start_response))
            best[name] = min(best[name], (time.perf_counter() - started) / calls * 1e6)
    shutil.rmtree(workdir, ignore_errors=True)
    return best


def in_fresh_process(mode: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.metrics_bench", "--in-process", mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--in-process", choices=("per_process", "multiprocess"))
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(in_process(args.in_process)))
        return

    runs = under_gunicorn(args.rounds, args.seconds)
    micro = {mode: in_fresh_process(mode) for mode in ("multiprocess", "per_process")}

    medians = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
    cpu = {
        name: statistics.median(r["worker_cpu_us_per_request"] for r in rs)
        for name, rs in runs.items()
    }
    costs = {}
    for name, mode in (("on_multiprocess", "multiprocess"), ("on_per_process", "per_process")):
        # Paired by round: each "on" run against the "off" run of the same round.
        ratios = [on["rps"] / off["rps"] for on, off in zip(runs[name], runs["off"], strict=True)]
        costs[name] = {
            "throughput_cost_share_paired_median": round(1 - statistics.median(ratios), 4),
            "throughput_ratios_by_round": [round(r, 4) for r in ratios],
            "worker_cpu_us_per_request_added": round(cpu[name] - cpu["off"], 2),
            "cost_share_upper_bound_from_cpu": round(1 - cpu["off"] / cpu[name], 4),
            "wsgi_app_us_per_request": {k: round(v, 2) for k, v in micro[mode].items()},
            "wsgi_app_us_added": round(micro[mode]["on"] - micro[mode]["off"], 2),
        }
    verdict = costs["on_multiprocess"]["cost_share_upper_bound_from_cpu"] < TARGET_COST

    for name in runs:
        print(f"{name:>16}: median {medians[name]:7.0f} req/s, {cpu[name]:6.1f} us CPU/request")
    for name, cost in costs.items():
        print(
            f"{name:>16}: throughput cost {cost['throughput_cost_share_paired_median']:.1%} "
            f"(paired median); workers +{cost['worker_cpu_us_per_request_added']} us CPU/request, "
            f"cost at most {cost['cost_share_upper_bound_from_cpu']:.1%}; "
            f"WSGI app +{cost['wsgi_app_us_added']} us/request"
        )
    print(f"target: under {TARGET_COST:.0%} in multiprocess mode: {'met' if verdict else 'MISSED'}")
    path = write_results(
        "metrics_bench",
        {
            "what": "GET /livez, gunicorn sync -w 2, metrics off vs on, interleaved rounds",
            "load_generator": "wrk -t2 -c32" if shutil.which("wrk") else "python threads (32)",
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "median_rps": {name: round(m, 1) for name, m in medians.items()},
            "median_worker_cpu_us_per_request": {name: round(c, 2) for name, c in cpu.items()},
            "cost": costs,
            "target_cost_share": TARGET_COST,
            "target_met_by_cpu_upper_bound": verdict,
            "runs": runs,
            "caveats": "2 cores shared by wrk, three gunicorn servers and any other work on the "
            "machine (other sessions' test suites ran meanwhile): throughput moves by tens of "
            "percent between runs of one configuration; compare ratios within this run.",
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
