"""GET /api/v1/photos/{id} and GET /api/v1/photos (first page) under load, against a bare Falcon
app under the same gunicorn settings, interleaved in one run, on PostgreSQL with seeded photos.

    python -m benchmarks.photos_bench [--photos 2000] [--rounds 3] [--seconds 10]
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
    migrated_lumen,
    pg_database,
    print_results,
    write_results,
    wrk,
)
from lumen.maintenance import seed


def prepare(url: str, storage: str, photos: int) -> None:
    with migrated_lumen(url, STORAGE_PATH=storage) as lumen:
        seed(lumen, users=50, photos=photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    storage = tempfile.mkdtemp(prefix="lumen-bench-storage-")
    runs: dict[str, list[dict]] = {
        "bare falcon static JSON": [],
        "GET /api/v1/photos/{id}": [],
        "GET /api/v1/photos (20 per page)": [],
    }
    with pg_database("lumen_bench_photos") as url:
        prepare(url, storage, args.photos)
        env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "STORAGE_PATH": storage}
        bar = tqdm(total=args.rounds * 2, desc="rounds", unit="server")
        for _ in range(args.rounds):
            bare_env = {"LUMEN_PLUGINS": "none", "DATABASE_URL": url}
            with gunicorn(bare_env, workers=args.workers, app="benchmarks.bare_app:app") as bare:
                runs["bare falcon static JSON"].append(wrk(f"{bare.url}/static", args.seconds))
            bar.update()
            with gunicorn(env, workers=args.workers) as server:
                page = json.load(urllib.request.urlopen(f"{server.url}/api/v1/photos"))
                one = f"{server.url}/api/v1/photos/{page[0]['id']}"
                wrk(one, seconds=2)
                runs["GET /api/v1/photos/{id}"].append(wrk(one, args.seconds))
                runs["GET /api/v1/photos (20 per page)"].append(
                    wrk(f"{server.url}/api/v1/photos", args.seconds)
                )
            bar.update()
        bar.close()
    results = {name: median_of(r) for name, r in runs.items()}
    ceiling = results["bare falcon static JSON"]["rps"]
    for r in results.values():
        r["ratio_to_bare"] = round(r["rps"] / ceiling, 2)
    path = write_results(
        "photos",
        {
            "load": f"wrk -t2 -c32 -d{args.seconds}s, gunicorn sync -w {args.workers}, PostgreSQL, "
            f"{args.photos} photos, no cache",
            "results": results,
        },
    )
    print_results(results)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
