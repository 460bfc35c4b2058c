"""The locations plugin: the full cities500 import on PostgreSQL and on SQLite, and city search
latency over realistic prefixes with the LRU off and on, inside the app and over HTTP.

- Import: a fresh database of the run's own (PostgreSQL: lumen_bench_locations_*, created and
  dropped; SQLite: a temporary file), migrated, then cities500 imported twice: into the empty
  tables, and again replacing them. Reading the file, building the rows and writing them are
  timed apart.
- Prefixes: what autocomplete sends while people type city names: a city drawn with weight
  sqrt(population) (big cities are looked for more, small ones still are), its name typed one
  letter at a time, one query per keystroke for the first 1 to 6 letters, as typed (case and
  accents kept); one in ten with the city's country. Fixed seed: every run replays the same.
  Mixed in (--mixed-share, 15 % by default): the qualified, typo and proximity queries of the
  quality benchmark (benchmarks/places_queries.tsv), which cost the most: several readings, the
  typo fallback; their latency is reported apart too.
- Server-side: the search function itself (validation excluded) and the whole request through
  falcon.testing (validation, routing, JSON), one request at a time, in one process; the LRU off
  (LOCATION_CACHE_SIZE=0) and on (1000 entries, one pass over the queries, so hits are the
  repeats a real stream has).
- HTTP: gunicorn with 4 sync workers on the PostgreSQL database, wrk -t2 -c32 cycling through
  the same queries (a Lua script), the LRU off and on, interleaved rounds, medians.

The machine has 2 cores shared by the load generator, the server, PostgreSQL and whatever
else runs at the time (the load average is recorded): compare figures within one run.

    python -m benchmarks.locations_bench [--queries 4000] [--seconds 10] [--rounds 3]
        [--connections 32] [--mixed-share 0.15] [--dataset cities500]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import falcon.testing

from benchmarks.harness import gunicorn, pg_database, write_results
from benchmarks.places_quality import read_queries, request_params
from lumen import migrate
from lumen.app import Lumen, create_app
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from lumen_plugins.locations import gazetteer, importer, locations_of
from lumen_plugins.locations.query import parse_search

DATASET = "cities500"  # --dataset changes it (a smoke run may take cities15000)
CONNECTIONS = 32  # --connections
MIXED_KINDS = ("qualified", "typo1", "typo2", "proximity")
BERLIN = 2950159


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)], 3)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def typed_prefixes(records: list[dict], count: int, seed: int = 500) -> list[dict]:
    """Query parameters as autocomplete sends them while people type city names."""
    rng = random.Random(seed)
    weights = [math.sqrt(max(r["population"], 1)) for r in records]
    queries: list[dict] = []
    while len(queries) < count:
        city = rng.choices(records, weights)[0]
        name = city["name"]
        with_country = rng.random() < 0.1
        for length in range(1, min(6, len(name)) + 1):
            prefix = name[:length].strip()
            if not prefix or not _searchable(prefix):
                break
            params = {"q": prefix}
            if with_country:
                params["country"] = city["countrycode"]
            queries.append(params)
    return queries[:count]


def mixed_in(queries: list[dict], share: float, seed: int = 16) -> list[dict]:
    """``queries`` with the quality benchmark's costlier queries spread among them, so they
    make ``share`` of the whole; each carries its kind under "_kind" (not sent)."""
    extra = [
        {**request_params(row), "_kind": "typo" if row["kind"].startswith("typo") else row["kind"]}
        for row in read_queries()
        if row["kind"] in MIXED_KINDS
    ]
    for params in extra:
        params.pop("limit")  # the default, as for the prefixes
    rng = random.Random(seed)
    count = round(share * len(queries) / (1 - share)) if share < 1 else len(extra)
    mixed = list(queries)
    for index in range(count):
        mixed.insert(rng.randrange(len(mixed) + 1), extra[index % len(extra)])
    return mixed


def kind_of(params: dict) -> str:
    return params.get("_kind") or f"prefix_{min(len(params['q']), 6)}"


def sent(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "_kind"}


def _searchable(prefix: str) -> bool:
    try:
        parse_search({"q": prefix})
    except falcon.HTTPError:
        return False
    return True


# --- import ------------------------------------------------------------------------------------


def migrated(url: str, cache_size: int = 0) -> Lumen:
    settings = load_settings(
        {
            "DATABASE_URL": url,
            "LUMEN_PLUGINS": "locations",
            "LOCATION_CACHE_SIZE": str(cache_size),
            "LOCATIONS_AUTO_IMPORT": "false",
            "LOG_LEVEL": "WARNING",
        }
    )
    lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
    lumen.start()
    migrate.upgrade(lumen)
    return lumen


def time_import(lumen: Lumen) -> dict:
    """The dataset (cities500) into the empty tables, then again over the imported data."""
    runs = []
    for _ in range(2):
        load = time.perf_counter()
        records = gazetteer.read_dataset(DATASET)
        build = time.perf_counter()
        built = gazetteer.build(records, DATASET)
        write = time.perf_counter()
        importer.write(lumen.engine, built)
        done = time.perf_counter()
        runs.append(
            {
                "read_s": round(build - load, 2),
                "build_s": round(write - build, 2),
                "write_s": round(done - write, 2),
                "total_s": round(done - load, 2),
                "load_average": load_average(),
            }
        )
    return {
        "cities": len(built.cities),
        "names": len(built.names),
        "precomputed_prefixes": len({(row[0], row[1]) for row in built.top_cities}),
        "typo_keys": len(built.typo_keys),
        "first_import": runs[0],
        "reimport": runs[1],
    }


# --- server-side latency -----------------------------------------------------------------------


def time_server_side(url: str, queries: list[dict]) -> dict:
    """Two apps in this process, the LRU off and on (1000 entries), timed query by query
    side by side (which goes first alternates), so both meet the same load."""
    apps = {}
    for name, cache_size in (("cache_off", 0), ("cache_on", 1000)):
        settings = load_settings(
            {
                "DATABASE_URL": url,
                "LUMEN_PLUGINS": "locations",
                "LOCATION_CACHE_SIZE": str(cache_size),
                "LOG_LEVEL": "WARNING",
            }
        )
        apps[name] = create_app(settings)
    parsed = [parse_search(sent(q)) for q in queries]
    for app in apps.values():
        for query in parsed[:200]:  # warm the pool and the database's buffers
            locations_of(app.lumen).answer(query)
        locations_of(app.lumen).clear_cache()

    function_ms = {name: [] for name in apps}
    by_kind: dict[str, dict[str, list]] = {name: {} for name in apps}
    for index, (params, query) in enumerate(zip(queries, parsed, strict=True)):
        for name in list(apps)[:: 1 if index % 2 else -1]:
            locations = locations_of(apps[name].lumen)
            started = time.perf_counter()
            locations.answer(query)  # what the API sends: the answer's JSON
            elapsed = (time.perf_counter() - started) * 1000
            function_ms[name].append(elapsed)
            by_kind[name].setdefault(kind_of(params), []).append(elapsed)
    hits = {name: locations_of(app.lumen).cache_info().hits for name, app in apps.items()}

    request_ms = {name: [] for name in apps}
    clients = {name: falcon.testing.TestClient(app) for name, app in apps.items()}
    for app in apps.values():
        locations_of(app.lumen).clear_cache()
    for index, params in enumerate(queries):
        for name in list(apps)[:: 1 if index % 2 else -1]:
            started = time.perf_counter()
            result = clients[name].simulate_get("/api/v1/locations", params=sent(params))
            request_ms[name].append((time.perf_counter() - started) * 1000)
            assert result.status_code == 200, result.text
    for app in apps.values():
        app.lumen.shutdown()
    return {
        name: {
            "search_function": percentiles(function_ms[name]),
            "search_function_by_kind": {
                kind: percentiles(samples) for kind, samples in sorted(by_kind[name].items())
            },
            "whole_request_falcon_simulate": percentiles(request_ms[name]),
            "cache_hit_ratio": round(hits[name] / len(queries), 3),
            "load_average": load_average(),
        }
        for name in apps
    }


# --- HTTP under gunicorn -----------------------------------------------------------------------

WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = (i %% #paths) + 1
  return wrk.format("GET", paths[i])
end
"""


def wrk_paths(paths: list[str], url: str, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ",".join(f'"{p}"' for p in paths))
    try:
        cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
        cmd += ["-s", script.name, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    finally:
        os.unlink(script.name)
    found = dict(re.findall(r"^ +(50|90|99)% +(\S+) *$", out, re.M))
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return round(float(number) * units[unit], 3)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms(found["50"]),
        "p90_ms": ms(found["90"]),
        "p99_ms": ms(found["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "load_average": load_average(),
    }


def time_over_http(url: str, queries: list[dict], seconds: int, rounds: int) -> dict:
    """The search with the LRU off and on, beside two references measured in the same rounds:
    the framework's ceiling (static JSON) and one city by id (one primary-key read)."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    paths = ["/api/v1/locations?" + urlencode(sent(q)) for q in queries]
    env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "locations", "LOCATIONS_AUTO_IMPORT": "false"}
    runs: dict[str, list[dict]] = {
        "static_ceiling": [],
        "city_by_id": [],
        "search_cache_off": [],
        "search_cache_on": [],
    }
    with (
        gunicorn({"LUMEN_PLUGINS": "none"}, workers=4, app="benchmarks.bare_app:app") as bare,
        gunicorn({**env, "LOCATION_CACHE_SIZE": "0"}, workers=4) as off,
        gunicorn({**env, "LOCATION_CACHE_SIZE": "1000"}, workers=4) as on,
    ):
        loads = {
            "static_ceiling": (bare.url, ["/static"]),
            "city_by_id": (off.url, [f"/api/v1/locations/{BERLIN}"]),
            "search_cache_off": (off.url, paths),
            "search_cache_on": (on.url, paths),
        }
        for base, load_paths in loads.values():  # warm up
            wrk_paths(load_paths, base, 2)
        names = list(loads)
        for round_number in range(rounds):
            shift = round_number % len(names)  # each round starts with another
            for name in names[shift:] + names[:shift]:
                base, load_paths = loads[name]
                runs[name].append(wrk_paths(load_paths, base, seconds))
    medians = {}
    for name, results in runs.items():
        medians[name] = {
            key: sorted(r[key] for r in results)[len(results) // 2]
            for key in ("rps", "p50_ms", "p90_ms", "p99_ms")
        }
        medians[name]["non_2xx"] = sum(r["non_2xx"] for r in results)
        medians[name]["runs"] = results
    ceiling = medians["static_ceiling"]["rps"]
    for name in ("city_by_id", "search_cache_off", "search_cache_on"):
        medians[name]["ratio_to_static"] = round(medians[name]["rps"] / ceiling, 3)
    return {"workers": 4, "worker_class": "sync", "wrk": f"-t2 -c{CONNECTIONS}", **medians}


def main() -> None:
    global DATASET, CONNECTIONS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--mixed-share", type=float, default=0.15)
    parser.add_argument("--dataset", default=DATASET, choices=gazetteer.DATASETS)
    args = parser.parse_args()
    DATASET, CONNECTIONS = args.dataset, args.connections

    records = list(gazetteer.read_dataset(DATASET))
    queries = mixed_in(typed_prefixes(records, args.queries), args.mixed_share)
    kinds: dict[str, int] = {}
    for params in queries:
        kinds[kind_of(params)] = kinds.get(kind_of(params), 0) + 1
    results: dict = {
        "dataset": DATASET,
        "queries": len(queries),
        "query_mix": dict(sorted(kinds.items())),
        "with_country": sum(1 for q in queries if "country" in q),
        "load_average_at_start": load_average(),
    }
    print(f"{len(queries)} queries, e.g. {[q['q'] for q in queries[:12]]}", flush=True)

    with pg_database("lumen_bench_locations") as pg_url:
        lumen = migrated(pg_url)
        results["import_postgresql"] = time_import(lumen)
        lumen.shutdown()
        print("import, PostgreSQL:", results["import_postgresql"], flush=True)
        results["server_side_postgresql"] = time_server_side(pg_url, queries)
        for name, figures in results["server_side_postgresql"].items():
            print(f"server-side, PostgreSQL, {name}:", figures["search_function"], flush=True)
        results["http_postgresql"] = time_over_http(pg_url, queries, args.seconds, args.rounds)
        for name, figures in results["http_postgresql"].items():
            if isinstance(figures, dict):
                shown = {k: v for k, v in figures.items() if k != "runs"}
                print(f"HTTP, PostgreSQL, {name}:", shown, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="lumen-bench-locations-"))
    try:
        sqlite_url = f"sqlite:///{workdir}/lumen.db"
        lumen = migrated(sqlite_url)
        results["import_sqlite"] = time_import(lumen)
        lumen.shutdown()
        print("import, SQLite:", results["import_sqlite"], flush=True)
        results["server_side_sqlite"] = time_server_side(sqlite_url, queries)
        for name, figures in results["server_side_sqlite"].items():
            print(f"server-side, SQLite, {name}:", figures["search_function"], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    results["load_average_at_end"] = load_average()
    path = write_results("locations_bench", results)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
