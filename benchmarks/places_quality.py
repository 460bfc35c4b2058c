"""Place search quality: top-1 and top-3 accuracy of city search over the full cities500
gazetteer, per kind of query, on SQLite and on PostgreSQL.

The queries are in benchmarks/places_queries.tsv: what a person types (plain names, prefixes,
qualified names in several orders and separators, one and two typos, other scripts and
transliterations, ambiguous names with the client's position), the parameters sent with it,
and the GeoNames id of the city meant, written from knowledge of the places, not from the
search's answers. A query counts as found at 1 (at 3) when that id is the first (among the
first three) of the answer. Each query goes through the same validation and search as the API
(query.parse_search, then the plugin's search with the LRU off).

Accuracy is not a timing: the figures do not depend on the machine's load.

    python -m benchmarks.places_quality [--backends sqlite,postgresql]
        [--sqlite-url URL] [--postgresql-url URL]   # reuse a database with cities500 imported
        [--show-misses]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl

from benchmarks.harness import pg_database, write_results
from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from lumen_plugins.locations import locations_of
from lumen_plugins.locations.query import parse_search

QUERIES = Path(__file__).with_name("places_queries.tsv")
DATASET = "cities500"
# The targets: top-1 on full and qualified names, and on typos.
TARGETS = {"full": 0.95, "qualified": 0.95, "typo1": 0.90, "typo2": 0.90}


def read_queries(path: Path = QUERIES) -> list[dict]:
    """The rows of the query file: kind, query, params (a query string), geonameid."""
    with path.open(encoding="utf-8", newline="") as file:
        lines = [line for line in file if not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    for row in rows:
        row["geonameid"] = int(row["geonameid"])
    return rows


def request_params(row: dict) -> dict:
    return {"q": row["query"], "limit": "10", **dict(parse_qsl(row["params"]))}


def lumen_on(url: str) -> Lumen:
    settings = load_settings(
        {
            "DATABASE_URL": url,
            "LUMEN_PLUGINS": "locations",
            "LOCATION_CACHE_SIZE": "0",
            "LOCATIONS_AUTO_IMPORT": "false",
        }
    )
    lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
    lumen.start()
    migrate.upgrade(lumen)
    return lumen


def ensure_imported(lumen: Lumen) -> float | None:
    """Import cities500 unless it is there; the seconds the import took, None if skipped."""
    locations = locations_of(lumen)
    status = locations.status() or {}
    if status.get("dataset") == DATASET and not status.get("min_population"):
        return None
    started = time.perf_counter()
    locations.import_gazetteer(DATASET, 0, progress=True)
    return round(time.perf_counter() - started, 1)


def evaluate(lumen: Lumen, queries: list[dict]) -> tuple[dict, list]:
    """Accuracy per kind, and the misses at 1 (query, expected, what came first)."""
    locations = locations_of(lumen)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, top1, top3
    misses = []
    for row in queries:
        answer = locations.search(parse_search(request_params(row)))
        ids = [city["id"] for city in answer]
        counts = tally[row["kind"]]
        counts[0] += 1
        counts[1] += ids[:1] == [row["geonameid"]]
        counts[2] += row["geonameid"] in ids[:3]
        if ids[:1] != [row["geonameid"]]:
            first = answer[0]["label"] if answer else None
            misses.append((row["kind"], row["query"], row["params"], row["target"], first))
    table = {
        kind: {"n": n, "top1": round(top1 / n, 3), "top3": round(top3 / n, 3)}
        for kind, (n, top1, top3) in tally.items()
    }
    n = sum(entry[0] for entry in tally.values())
    table["all"] = {
        "n": n,
        "top1": round(sum(entry[1] for entry in tally.values()) / n, 3),
        "top3": round(sum(entry[2] for entry in tally.values()) / n, 3),
    }
    return table, misses


@contextlib.contextmanager
def database(backend: str, url: str | None):
    if url:
        yield url
    elif backend == "postgresql":
        with pg_database("lumen_bench_places") as fresh:
            yield fresh
    else:
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/places.db"


def markdown(results: dict) -> str:
    backends = [b for b in ("sqlite", "postgresql") if b in results]
    kinds = list(next(iter(results.values()))["accuracy"])
    header = "| kind | n | " + " | ".join(f"{b} top-1 / top-3" for b in backends) + " |"
    lines = [header, "|---|---|" + "---|" * len(backends)]
    for kind in kinds:
        n = results[backends[0]]["accuracy"][kind]["n"]
        cells = []
        for b in backends:
            entry = results[b]["accuracy"][kind]
            cells.append(f"{entry['top1']:.1%} / {entry['top3']:.1%}")
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sqlite-url")
    parser.add_argument("--postgresql-url")
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    queries = read_queries()
    results = {}
    for backend in args.backends.split(","):
        with database(backend, getattr(args, f"{backend}_url")) as url:
            lumen = lumen_on(url)
            try:
                imported = ensure_imported(lumen)
                table, misses = evaluate(lumen, queries)
            finally:
                lumen.shutdown()
        results[backend] = {"import_seconds": imported, "accuracy": table, "misses": misses}
        print(f"{backend}: {table['all']}", flush=True)
        if args.show_misses:
            for miss in misses:
                print("  miss", *miss, sep="\t")
    print(markdown(results))
    write_results("places_quality", {"dataset": DATASET, "queries": len(queries), **results})


if __name__ == "__main__":
    main()
