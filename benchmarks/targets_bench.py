"""Issue 13's table in one run: every path of Lumen (every plugin on) against the reference app
doing the same database or Redis work, under the same gunicorn settings, with the target each
must meet.

One seeded PostgreSQL database (benchmarks.paths), the machine's Redis under a prefix of the
run's own; the reference app (benchmarks.bare_app) and three Lumen servers (Redis with the city
LRU on, no Redis, Redis with the LRU off), each gunicorn with 4 sync workers, all up side by
side and idle while another is loaded. Metrics are on in multiprocess mode, as a multi-worker
deployment runs them. Every request (to both sides: the load generator's cost is the same)
comes from one of 254 addresses of 203.0.113.0/24 through X-Forwarded-For (127.0.0.1 is the
trusted proxy), and signed-in ones with the token of one of 50 members, each under a rate limit
of 100 a second: nothing is refused and every counter stays as short as a real client's, so
this is the cost of counting, not of refusing. wrk -t2 -c32 loads one server at a time in
interleaved rounds (reference, Lumen, then Lumen, reference, ...), so the machine's noise hits
both sides alike; the medians are reported. City search cycles through prefixes typed from
city names (1 to 6 letters, benchmarks.locations_bench), short ones included. Each worker's
city LRU fills with what that worker is asked, so the LRU path is loaded until its workers
answer 99 % of a 5-second stretch's searches from their LRUs (4 minutes at most), and the
share each of its measured runs got is printed and kept with the results.

A path passes when Lumen's req/s is at least its target share of the reference's, its p99 is
within the target where the issue sets one, and neither side had a non-2xx answer or a socket
error.

    python -m benchmarks.targets_bench [--seconds 10] [--rounds 3] [--photos 3000] [--only LRU]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import tempfile
import time
import urllib.request

from tqdm import tqdm

from benchmarks.harness import gunicorn, median_of, write_results, wrk
from benchmarks.paths import ADDRESSES, CONFIGS, scenario

# The city LRU path is measured with full LRUs: its warm-up goes on, in stretches, until the
# workers answer this share of a stretch's searches from their LRUs, for at most this long.
LRU_FULL_SHARE = 0.99
LRU_WARM_STRETCH_S = 5
LRU_WARM_LIMIT_S = 240
METRICS_LAG_S = 1.5  # the workers write their counts to the metrics every second

SIDES = ("reference", "lumen")


def socket_errors(text: str) -> int:
    """The sum of wrk's "connect N, read N, write N, timeout N"."""
    return sum(int(n) for n in re.findall(r"\d+", text or ""))


# Every request, to the reference and to Lumen alike (the load generator's cost is the same):
# the next path, the next client address, and the next member's token where the path is
# signed in; what -H gives (Accept-Encoding) is kept.
WRK_SCRIPT = """
local paths = {%s}
local addresses = {%s}
local tokens = {%s}
local i = 0
request = function()
  i = i + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Forwarded-For"] = addresses[(i %% #addresses) + 1]
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[(i %% #tokens) + 1] end
  return wrk.format("GET", paths[(i %% #paths) + 1], headers)
end
"""


def lru_counts(url: str) -> tuple[float, float]:
    """(searches, LRU hits) counted so far by the server's workers, from its /metrics."""
    time.sleep(METRICS_LAG_S)
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    totals = {"lumen_location_searches_total": 0.0, "lumen_location_cache_hits_total": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in totals:
            totals[name] += float(value)
    return totals["lumen_location_searches_total"], totals["lumen_location_cache_hits_total"]


def lru_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    searches = after[0] - before[0]
    return (after[1] - before[1]) / searches if searches else 0.0


def lua_list(values) -> str:
    return ",".join(f'"{value}"' for value in values)


def script_for(paths: tuple[str, ...], tokens, folder: str) -> str:
    """A wrk script file cycling through ``paths``, the addresses and ``tokens``."""
    body = WRK_SCRIPT % (lua_list(paths), lua_list(ADDRESSES), lua_list(tokens))
    script = os.path.join(folder, f"load-{hashlib.sha1(body.encode()).hexdigest()[:12]}.lua")
    with open(script, "w") as file:
        file.write(body)
    return script


def verdict(row: dict) -> str:
    ok = row["ratio"] >= row["target"] and row["non_2xx"] == 0 and row["socket_errors"] == 0
    if row["p99_target_ms"] is not None:
        ok = ok and row["lumen_p99_ms"] <= row["p99_target_ms"]
    return "pass" if ok else "FAIL"


def print_table(rows: dict[str, dict]) -> None:
    print(
        "| path | reference | reference req/s | Lumen req/s | ratio | target | reference p99 "
        "| Lumen p99 | non-2xx | socket errors | |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        p99_target = f" (<= {r['p99_target_ms']:g})" if r["p99_target_ms"] is not None else ""
        print(
            f"| {label} | {r['reference']} | {r['reference_rps']:,.0f} | {r['lumen_rps']:,.0f} "
            f"| {r['ratio']:.2f} | >= {r['target']:.2f} | {r['reference_p99_ms']:.1f} ms "
            f"| {r['lumen_p99_ms']:.1f} ms{p99_target} "
            f"| {r['non_2xx']} | {r['socket_errors']} | {r['verdict']} |"
        )


REFERENCE_NAMES = {
    "/static": "bare Falcon, static JSON",
    "/blob": "a pre-serialised blob from Redis",
    "/row": "one primary-key row, SQLAlchemy Core",
    "/page": "a count and 20 rows, SQLAlchemy Core",
}


def reference_name(path: str) -> str:
    return REFERENCE_NAMES["/" + path.split("/")[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--dataset", default="cities500")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip")
    parser.add_argument("--only", help="only the paths whose label contains this")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="lumen-targets-")
    common = {"Accept-Encoding": "gzip"} if args.gzip else {}
    with scenario(args.photos, args.queries, args.dataset) as found, contextlib.ExitStack() as up:
        found.paths = [p for p in found.paths if args.only is None or args.only in p.label]
        reference = gunicorn(found.reference_env(), args.workers, app="benchmarks.bare_app:app")
        servers = {"reference": up.enter_context(reference)}
        for config in CONFIGS:
            metrics = os.path.join(folder, f"metrics-{config}")
            env = {**found.env(config), "PROMETHEUS_MULTIPROC_DIR": metrics}
            servers[config] = up.enter_context(gunicorn(env, args.workers))

        def load(path, side: str, seconds: int) -> dict:
            if side == "reference":
                url, script = servers["reference"].url, script_for((path.reference,), (), folder)
            else:
                tokens = found.tokens if path.signed_in else ()
                url, script = servers[path.config].url, script_for(path.lumen, tokens, folder)
            return wrk(url + "/", seconds, headers=common, script=script)

        for path in found.paths:  # warm pools, caches, LRUs and the database's buffers
            for side in SIDES:
                load(path, side, path.warm_s)
            if path.fills_lru:
                url, share, started = servers[path.config].url, 0.0, time.monotonic()
                while share < LRU_FULL_SHARE and time.monotonic() - started < LRU_WARM_LIMIT_S:
                    before = lru_counts(url)
                    load(path, "lumen", LRU_WARM_STRETCH_S)
                    share = lru_share(before, lru_counts(url))
                print(f"{path.label}: warmed to {share:.1%} LRU hits", flush=True)
        runs = {(path.label, side): [] for path in found.paths for side in SIDES}
        bar = tqdm(total=args.rounds * len(found.paths), desc="rounds", unit="path")
        for round_number in range(args.rounds):
            order = SIDES if round_number % 2 == 0 else SIDES[::-1]
            for path in found.paths:
                for side in order:
                    counted = path.fills_lru and side == "lumen"
                    before = lru_counts(servers[path.config].url) if counted else None
                    run = load(path, side, args.seconds)
                    if counted:
                        after = lru_counts(servers[path.config].url)
                        run["lru_hit_share"] = round(lru_share(before, after), 4)
                    runs[(path.label, side)].append(run)
                bar.update()
        bar.close()

    rows = {}
    for path in found.paths:
        reference = median_of(runs[(path.label, "reference")])
        lumen = median_of(runs[(path.label, "lumen")])
        both = runs[(path.label, "reference")] + runs[(path.label, "lumen")]
        rows[path.label] = {
            "reference": reference_name(path.reference),
            "reference_rps": reference["rps"],
            "lumen_rps": lumen["rps"],
            "ratio": round(lumen["rps"] / reference["rps"], 3),
            "target": path.target,
            "reference_p99_ms": reference["p99_ms"],
            "lumen_p50_ms": lumen["p50_ms"],
            "lumen_p99_ms": lumen["p99_ms"],
            "p99_target_ms": path.p99_ms,
            "non_2xx": reference["non_2xx"] + lumen["non_2xx"],
            "socket_errors": sum(socket_errors(r["socket_errors"]) for r in both),
            "runs": {side: runs[(path.label, side)] for side in SIDES},
        }
        if path.fills_lru:
            shares = [r["lru_hit_share"] for r in runs[(path.label, "lumen")]]
            rows[path.label]["lru_hit_share_min"] = min(shares)
        rows[path.label]["verdict"] = verdict(rows[path.label])
    written = write_results(
        "targets",
        {
            "load": f"wrk -t2 -c32 -d{args.seconds}s, gunicorn sync -w {args.workers} per server, "
            f"PostgreSQL, {args.photos} photos, {args.dataset}, every plugin on, metrics "
            f"multiprocess, {args.rounds} interleaved rounds, medians"
            + (", Accept-Encoding: gzip" if args.gzip else ""),
            "load_average": os.getloadavg()[0],
            "paths": rows,
        },
    )
    print_table(rows)
    for label, row in rows.items():
        if "lru_hit_share_min" in row:
            print(f"{label}: at least {row['lru_hit_share_min']:.1%} LRU hits in each run")
    passed = sum(r["verdict"] == "pass" for r in rows.values())
    print(f"{passed} of {len(rows)} paths meet their target; written to {written}")


if __name__ == "__main__":
    main()
