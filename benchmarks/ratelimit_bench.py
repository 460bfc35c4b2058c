"""What the ratelimit plugin costs per request: /livez (exempt: the plugin only looks at the
route) and GET /api/v1/photos/{id} (limited: one Redis round trip), with the plugin off, on
with Redis, and on in memory (no REDIS_URL).

Three gunicorn servers (sync, 2 workers each, PostgreSQL, the health plugin) run side by side;
each round loads each server in turn, in a rotated order, so the machine's noise hits all alike.
wrk (-t2 -c32) sends every request with an X-Forwarded-For from 203.0.113.0/24 (the servers
trust 127.0.0.1 as their proxy), so the load looks like 254 clients, each under the default
limit of 600/minute, and nothing is refused: the figures are the cost of counting, not of
refusing. With the throughput comes the CPU time the workers spent per request (from /proc),
a steadier figure on a shared machine.

    python -m benchmarks.ratelimit_bench [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from benchmarks.cache_bench import seed
from benchmarks.harness import gunicorn, pg_database, write_results, wrk
from benchmarks.metrics_bench import cpu_seconds

REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECTIONS = 32
# One of 254 client addresses per request, as a proxy in front would report them.
WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  wrk.headers["X-Forwarded-For"] = "203.0.113." .. (counter % 254 + 1)
  return wrk.format(nil)
end
"""


def load(server, path: str, seconds: int, script: str) -> dict:
    workers = server.worker_pids()
    before = cpu_seconds(workers)
    result = wrk(server.url + path, seconds=seconds, connections=CONNECTIONS, script=script)
    used = cpu_seconds(workers) - before
    result["worker_cpu_us_per_request"] = round(used / (result["rps"] * seconds) * 1e6, 1)
    return result


def in_process(configs: dict[str, dict], paths: dict[str, str], repetitions=15, calls=500):
    """Microseconds per call of the WSGI app, by target and configuration: the fastest of
    ``repetitions`` alternating batches (no server, no load generator: the plugin's own cost)."""
    from falcon.testing import create_environ

    from lumen.app import create_app
    from lumen.config import load_settings
    from lumen.plugins import make_plugin_manager

    apps = {}
    for name, env in configs.items():
        settings = load_settings({**env, "STORAGE_PATH": tempfile.mkdtemp()})
        apps[name] = create_app(settings, make_plugin_manager(settings.enabled_plugins))

    def start_response(status, headers, exc_info=None):
        pass

    best = {(target, name): float("inf") for target in paths for name in apps}
    for _ in range(repetitions):
        for target, path in paths.items():
            environs = [
                create_environ(path=path, headers={"X-Forwarded-For": f"203.0.113.{n % 254 + 1}"})
                for n in range(calls)
            ]
            for name, app in apps.items():
                started = time.perf_counter()
                for environ in environs:
                    b"".join(app(dict(environ), start_response))
                elapsed = (time.perf_counter() - started) / calls * 1e6
                best[(target, name)] = min(best[(target, name)], elapsed)
    for app in apps.values():
        app.lumen.shutdown()
    return {f"{t} {n}": round(us, 1) for (t, n), us in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lumen-ratelimit-bench-"))
    script = workdir / "forwarded.lua"
    script.write_text(WRK_SCRIPT)
    prefix = f"lumen-bench:ratelimit:{uuid.uuid4().hex[:8]}"
    runs: dict[tuple[str, str], list[dict]] = {}
    with pg_database("lumen_bench_ratelimit") as url:
        photo = seed(url, photos=50)[0]
        targets = {"/livez": "/livez", "photo": f"/api/v1/photos/{photo}"}
        base = {"DATABASE_URL": url, "TRUSTED_PROXIES": "127.0.0.1/32"}
        configs = {
            "off": {**base, "LUMEN_PLUGINS": "health"},
            "on_redis": {
                **base,
                "LUMEN_PLUGINS": "health,ratelimit",
                "REDIS_URL": REDIS_URL,
                "RATE_LIMIT_KEY_PREFIX": prefix,
            },
            "on_memory": {**base, "LUMEN_PLUGINS": "health,ratelimit"},
        }
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(gunicorn(env, 2)) for name, env in configs.items()}
            for server in servers.values():
                for path in targets.values():
                    wrk(server.url + path, seconds=1, script=str(script))  # warm-up
            names = list(configs)
            for round_number in range(args.rounds):
                shift = round_number % len(names)
                for target, path in targets.items():
                    for name in names[shift:] + names[:shift]:
                        result = load(servers[name], path, args.seconds, str(script))
                        runs.setdefault((target, name), []).append(result)
                        print(
                            f"round {round_number + 1} {target:>6} {name:>9}: "
                            f"{result['rps']:7.0f} req/s, p99 {result['p99_ms']:6.1f} ms, "
                            f"{result['worker_cpu_us_per_request']:6.1f} us CPU/request, "
                            f"non-2xx {result['non_2xx']}"
                        )
        micro = in_process(configs, targets)
        for key, us in micro.items():
            print(f"in one process, {key}: {us} us per call")
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()

    summary = {}
    for target in targets:
        off = runs[(target, "off")]
        entry = {}
        for name in ("off", "on_redis", "on_memory"):
            mine = runs[(target, name)]
            ratios = [m["rps"] / o["rps"] for m, o in zip(mine, off, strict=True)]
            entry[name] = {
                "median_rps": round(statistics.median(r["rps"] for r in mine), 1),
                "median_p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 2),
                "median_worker_cpu_us_per_request": round(
                    statistics.median(r["worker_cpu_us_per_request"] for r in mine), 1
                ),
                "throughput_ratio_to_off_paired_median": round(statistics.median(ratios), 4),
                "non_2xx": sum(r["non_2xx"] for r in mine),
            }
        summary[target] = entry
        for name, figures in entry.items():
            print(
                f"{target:>6} {name:>9}: median {figures['median_rps']:7.0f} req/s "
                f"(x{figures['throughput_ratio_to_off_paired_median']:.3f} of off), "
                f"p99 {figures['median_p99_ms']} ms, "
                f"{figures['median_worker_cpu_us_per_request']} us CPU/request"
            )
    path = write_results(
        "ratelimit_bench",
        {
            "what": "GET /livez and GET /api/v1/photos/{id}, gunicorn sync -w 2, PostgreSQL, "
            "ratelimit off / on with Redis / on in memory, interleaved rounds",
            "load_generator": f"wrk -t2 -c{CONNECTIONS}, X-Forwarded-For from 254 addresses",
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "summary": summary,
            "wsgi_app_us_per_call": micro,
            "runs": {f"{t} {n}": r for (t, n), r in runs.items()},
            "caveats": "2 cores shared by wrk, three gunicorn servers, Redis, PostgreSQL and "
            "other sessions' test suites: compare ratios within this run.",
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
