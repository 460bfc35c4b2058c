"""Where the machine's CPU goes per request on each path of issue 13, under gunicorn and wrk:
the CPU time the server's workers, Redis, PostgreSQL and wrk itself spent during one load,
divided by the requests it answered, for the reference app and for Lumen.

On a machine whose cores are all busy (wrk, the workers and the databases share them),
throughput is the cores divided by the CPU a request costs in all processes together; this
splits that cost, so a gap in targets_bench's table can be traced to the process that pays it.

    python -m benchmarks.cpu_split [--only "cache hit"] [--seconds 8] [--dataset cities15000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile

import psutil

from benchmarks.harness import gunicorn, write_results, wrk
from benchmarks.paths import CONFIGS, scenario
from benchmarks.targets_bench import SIDES, script_for

GROUPS = ("workers", "redis", "postgres", "wrk", "other")


def cpu_by_group(worker_pids: set[int]) -> dict[str, float]:
    """Seconds of CPU (user + system) each group of processes has used so far."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        name = proc.info["name"] or ""
        if proc.info["pid"] in worker_pids:
            group = "workers"
        elif name.startswith("redis"):
            group = "redis"
        elif name.startswith("postgres"):
            group = "postgres"
        elif name == "wrk":
            group = "wrk"
        else:
            group = "other"
        totals[group] += times.user + times.system
    return totals


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(server, url: str, seconds: int, script: str) -> dict:
    """One wrk run with the CPU of every group over it, in µs per request."""
    pids = set(server.worker_pids())
    before, wrk_before = cpu_by_group(pids), _children_cpu()
    result = wrk(url, seconds, script=script)
    after, wrk_after = cpu_by_group(pids), _children_cpu()
    # wrk has exited by now: its CPU is in this process's children's.
    before["wrk"], after["wrk"] = wrk_before, wrk_after
    requests = result["rps"] * seconds
    split = {g: round((after[g] - before[g]) / requests * 1e6, 1) for g in GROUPS}
    split["total"] = round(sum(split.values()), 1)
    return {"rps": result["rps"], "p99_ms": result["p99_ms"], "us_per_request": split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--dataset", default="cities500")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--only", help="only the paths whose label contains this")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="lumen-cpu-")
    with scenario(args.photos, args.queries, args.dataset) as found, contextlib.ExitStack() as up:
        paths = [p for p in found.paths if args.only is None or args.only in p.label]
        servers = {
            "reference": up.enter_context(
                gunicorn(found.reference_env(), args.workers, app="benchmarks.bare_app:app")
            )
        }
        for config in sorted({p.config for p in paths}):
            env = {**found.env(config), "PROMETHEUS_MULTIPROC_DIR": f"{folder}/m-{config}"}
            servers[config] = up.enter_context(gunicorn(env, args.workers))
        rows = {}
        for path in paths:
            row = {}
            for side in SIDES:
                if side == "reference":
                    server, script = servers["reference"], script_for((path.reference,), (), folder)
                else:
                    tokens = found.tokens if path.signed_in else ()
                    server = servers[path.config]
                    script = script_for(path.lumen, tokens, folder)
                wrk(server.url + "/", 2, script=script)  # warm up
                row[side] = measured(server, server.url + "/", args.seconds, script)
            rows[path.label] = row

    print(f"µs of CPU per request ({os.cpu_count()} cores)")
    print(f"{'path':<38} {'side':<10} {'req/s':>7} " + " ".join(f"{g:>9}" for g in GROUPS))
    for label, row in rows.items():
        for side, r in row.items():
            cells = " ".join(f"{r['us_per_request'][g]:>9.1f}" for g in GROUPS)
            total = r["us_per_request"]["total"]
            print(f"{label:<38} {side:<10} {r['rps']:>7.0f} {cells}  = {total}")
    write_results("cpu_split", {"workers": args.workers, "paths": rows})


if __name__ == "__main__":
    assert set(CONFIGS)
    main()
