"""gunicorn worker classes on Lumen's database path: sync against gthread, interleaved in one
run, on GET /api/v1/photos/{id} (PostgreSQL, no cache). The default in gunicorn.conf.py comes
from this measurement.

    python -m benchmarks.workers_bench [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import urllib.request

from tqdm import tqdm

from benchmarks.harness import (
    gunicorn,
    median_of,
    pg_database,
    print_results,
    write_results,
    wrk,
)
from benchmarks.photos_bench import prepare

CONFIGS = {
    "sync -w 4": ({"GUNICORN_WORKER_CLASS": "sync"}, 4),
    "sync -w 2": ({"GUNICORN_WORKER_CLASS": "sync"}, 2),
    "gthread -w 2 --threads 8": ({"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "8"}, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="lumen-bench-storage-")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with pg_database("lumen_bench_workers") as url:
        prepare(url, storage, 200)
        base_env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "STORAGE_PATH": storage}
        bar = tqdm(total=args.rounds * len(CONFIGS), desc="worker classes", unit="run")
        for _ in range(args.rounds):
            for name, (env, workers) in CONFIGS.items():
                with gunicorn({**base_env, **env}, workers=workers) as server:
                    page = json.load(urllib.request.urlopen(f"{server.url}/api/v1/photos"))
                    one = f"{server.url}/api/v1/photos/{page[0]['id']}"
                    wrk(one, seconds=2)
                    runs[name].append(wrk(one, args.seconds))
                bar.update()
        bar.close()
    results = {name: median_of(r) for name, r in runs.items()}
    path = write_results(
        "workers",
        {
            "endpoint": "GET /api/v1/photos/{id}, PostgreSQL, no cache",
            "load": f"wrk -t2 -c32 -d{args.seconds}s",
            "results": results,
        },
    )
    print_results(results)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
