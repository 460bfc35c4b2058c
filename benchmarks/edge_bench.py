"""What the edge plugins cost per request: gunicorn servers that differ only in LUMEN_PLUGINS,
loaded side by side, in a rotated order each round, on /livez and on GET /api/v1/photos/{id}
(and the 20-photo first page, where compression has a body worth encoding).

Every server runs the core and `health` (for /livez); each configuration adds one plugin, and
the last adds them all. Requests carry `Accept-Encoding: gzip`, as browsers and mobile clients
send it. PostgreSQL with a few seeded photos; sync workers, 2 each; wrk -t2 -c32.

Throughput moves with whatever else the machine does, so a steadier figure comes with it: the
microseconds each configuration adds to one call of the WSGI app, in this process (the fastest
of several interleaved repetitions of many calls).

    python -m benchmarks.edge_bench [--rounds 5] [--seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import urllib.request

from tqdm import tqdm

from benchmarks.harness import gunicorn, median_of, migrated_lumen, pg_database, write_results, wrk
from lumen.maintenance import seed
from lumen.plugins import installed_plugins

TARGET_COST = 0.10  # of /livez throughput, all of them together
EDGE = ("security_headers", "compression", "conditional", "ratelimit")


def configurations() -> dict[str, str]:
    present = [name for name in EDGE if name in installed_plugins()]
    configs = {"core + health": "health"}
    for name in present:
        configs[f"+ {name}"] = f"health,{name}"
    configs["+ all of them"] = ",".join(["health", *present])
    return configs


def in_process_us(url: str, storage: str, configs: dict[str, str], paths: dict, calls=2000):
    """Microseconds each configuration adds to one WSGI call of each path: the app called
    directly, as gunicorn calls it (falcon's test client would add its header checks)."""
    import time

    import falcon.testing

    from lumen.app import create_app
    from lumen.config import load_settings

    apps = {}
    for name, plugins in configs.items():
        settings = load_settings(
            {
                "DATABASE_URL": url,
                "STORAGE_PATH": storage,
                "LUMEN_PLUGINS": plugins,
                "RATE_LIMIT_DEFAULT": "100000000/minute",
                "LOG_LEVEL": "WARNING",
            }
        )
        apps[name] = create_app(settings)

    def start_response(status, headers, exc_info=None):
        return None

    best = {name: {label: float("inf") for label in paths} for name in configs}
    for _ in range(5):
        for label, path in paths.items():
            for name, app in apps.items():
                environ = falcon.testing.create_environ(
                    path=path, headers={"Accept-Encoding": "gzip"}
                )
                started = time.perf_counter()
                for _ in range(calls):
                    for _chunk in app(dict(environ), start_response):
                        pass
                elapsed = (time.perf_counter() - started) / calls * 1e6
                best[name][label] = min(best[name][label], elapsed)
    for app in apps.values():
        app.lumen.shutdown()
    base = best["core + health"]
    return {
        name: {label: round(us - base[label], 1) for label, us in by_path.items()}
        for name, by_path in best.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    configs = configurations()
    paths = {"/livez": "/livez", "photo": None, "first page": "/api/v1/photos"}
    runs = {name: {path: [] for path in paths} for name in configs}
    storage = tempfile.mkdtemp(prefix="lumen-bench-storage-")
    headers = {"Accept-Encoding": "gzip"}
    with pg_database("lumen_bench_edge") as url, contextlib.ExitStack() as stack:
        with migrated_lumen(url, STORAGE_PATH=storage) as lumen:
            seed(lumen, users=5, photos=40, progress=False)
        servers = {}
        for name, plugins in configs.items():
            env = {
                "DATABASE_URL": url,
                "STORAGE_PATH": storage,
                "LUMEN_PLUGINS": plugins,
                # Limits far above the load: the plugin's cost, not its refusals.
                "RATE_LIMIT_DEFAULT": "100000000/minute",
            }
            servers[name] = stack.enter_context(gunicorn(env, workers=2))
        some = servers["core + health"].url
        photo_id = json.load(urllib.request.urlopen(f"{some}/api/v1/photos"))[0]["id"]
        paths["photo"] = f"/api/v1/photos/{photo_id}"
        for server in servers.values():  # warm every worker's pool
            wrk(server.url + paths["photo"], seconds=1, headers=headers)
        order = list(servers)
        bar = tqdm(total=args.rounds * len(order), desc="rounds", unit="server")
        for round_number in range(args.rounds):
            rotated = order[round_number % len(order) :] + order[: round_number % len(order)]
            for name in rotated:
                for label, path in paths.items():
                    result = wrk(servers[name].url + path, args.seconds, headers=headers)
                    runs[name][label].append(result)
                bar.update()
        bar.close()
        added_us = in_process_us(url, storage, configs, paths)
    results = {
        name: {label: median_of(per_path) for label, per_path in by_path.items()}
        for name, by_path in runs.items()
    }
    base = results["core + health"]
    for by_path in results.values():
        for label, result in by_path.items():
            result["ratio_to_base"] = round(result["rps"] / base[label]["rps"], 3)
    total = results["+ all of them"]["/livez"]["ratio_to_base"]
    path = write_results(
        "edge",
        {
            "load": f"wrk -t2 -c32 -d{args.seconds}s, gunicorn sync -w 2 per server, PostgreSQL, "
            f"Accept-Encoding: gzip, {args.rounds} rotated rounds, medians",
            "results": results,
            "all_plugins_cost_on_livez": round(1 - total, 3),
            "added_us_per_call_in_process": added_us,
            "target_cost": TARGET_COST,
        },
    )
    width = max(map(len, results)) + 2
    for name, by_path in results.items():
        cells = "  ".join(
            f"{label} {r['rps']:>6.0f} req/s (x{r['ratio_to_base']:.3f}, p99 {r['p99_ms']:.1f} ms)"
            for label, r in by_path.items()
        )
        print(f"{name:<{width}} {cells}")
    print(f"all of them cost {1 - total:.1%} of /livez throughput (target < {TARGET_COST:.0%})")
    for name, by_path in added_us.items():
        print(f"{name:<{width}} adds " + ", ".join(f"{k} {v} us" for k, v in by_path.items()))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
