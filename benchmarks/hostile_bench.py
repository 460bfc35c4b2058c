"""What one hostile request costs a worker at most: the largest image an upload may carry, and
the most expensive city searches, under gunicorn (one sync worker, so the worker's figures are
the request's).

- Uploads: each file goes to a fresh single-worker server; the worker's high-water mark of
  resident memory (VmHWM) and its CPU time (utime + stime from /proc) are read before and after
  the one upload. Files: the review's 344 KB PNG of 9400 x 9400 (refused from its header now),
  the largest accepted PNG (RGB and palette), JPEG and WebP (MAX_IMAGE_MEGAPIXELS, 50 MP by
  default, a quarter of it for WebP), as squares, under the default MAX_UPLOAD_MB.
- Searches: cities500 imported into a PostgreSQL database of the run's own, the LRU off; each
  query sent ``--repeat`` times, the worker's CPU time divided by the count. Queries: the
  review's (``-``, a lone U+0301: refused now), crowded prefixes (precomputed answers), and
  the non-crowded prefix with the most names. As a reference, the in-process cost of what the
  review's query did before it was refused: reading and ranking every name.

The machine has 2 cores shared by the client, the server, PostgreSQL and whatever else runs:
figures move by 20 % and more; the load average is recorded.

    python -m benchmarks.hostile_bench [--repeat 20] [--dataset cities500]
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import io
import math
import os
import time
from operator import itemgetter
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from benchmarks.harness import gunicorn, peak_rss_kb, pg_database, write_results
from benchmarks.locations_bench import load_average, migrated
from benchmarks.upload_bench import login, multipart_file, post
from lumen import images
from lumen_plugins.locations import gazetteer, importer, search

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def solid_png(side: int, mode: str = "RGB") -> bytes:
    """A square of one colour: a few hundred KB however many pixels it has."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).convert(mode).save(out, "PNG", compress_level=9)
    return out.getvalue()


def textured(side: int, fmt: str, quality: int = 80) -> bytes:
    """A square with some texture, as photos have (noise tiled, so it builds fast); a JPEG of
    50 MP is about 17 MB, under the default MAX_UPLOAD_MB."""
    tile = Image.effect_noise((512, 512), 20).convert("RGB")
    image = Image.new("RGB", (side, side))
    for x in range(0, side, 512):
        for y in range(0, side, 512):
            image.paste(tile, (x, y))
    out = io.BytesIO()
    image.save(out, fmt, quality=quality)
    return out.getvalue()


def upload_cost(url: str, label: str, data: bytes, megapixels: float) -> dict:
    body, content_type = multipart_file(data)
    env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "MAX_IMAGE_MEGAPIXELS": str(megapixels)}
    try:
        with gunicorn(env, workers=1) as server:
            (worker,) = server.worker_pids()
            token = login(server.url)
            warm, warm_type = multipart_file(textured(512, "JPEG"))
            post(server.url, warm, warm_type, token)  # the worker's imports, a first decode
            os.unlink(warm)
            memory, cpu, started = peak_rss_kb(worker), cpu_seconds(worker), time.perf_counter()
            status = post(server.url, body, content_type, token)
            elapsed = time.perf_counter() - started
            cpu_after, memory_after = cpu_seconds(worker), peak_rss_kb(worker)
    finally:
        os.unlink(body)
    return {
        "file": label,
        "file_kb": round(len(data) / 1024),
        "status": status,
        "cpu_s": round(cpu_after - cpu, 2),
        "wall_s": round(elapsed, 2),
        "peak_before_mb": round(memory / 1024, 1),
        "peak_after_mb": round(memory_after / 1024, 1),
        "peak_growth_mb": round((memory_after - memory) / 1024, 1),
        "load_average": load_average(),
    }


def get(base: str, path: str) -> int:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def widest_uncrowded_prefix(built: gazetteer.Gazetteer) -> str:
    """The prefix without a precomputed answer that the most names start with (at most
    SHORT_PREFIX_ROWS): the most rows any search reads and ranks per request."""
    crowded = {prefix for scope, prefix, *_ in built.top_cities if scope == ""}
    best, most = "", 0
    for prefix in crowded:  # the children of crowded prefixes are the widest others
        for letter in "abcdefghijklmnopqrstuvwxyz":
            child = prefix + letter
            if child in crowded:
                continue
            lo = bisect.bisect_left(built.names, child, key=itemgetter(0))
            hi = bisect.bisect_left(built.names, child + gazetteer.LAST_CHAR, key=itemgetter(0))
            if hi - lo > most:
                best, most = child, hi - lo
    return best


def search_costs(lumen, url: str, dataset: str, repeat: int) -> dict:
    started = time.perf_counter()
    built = gazetteer.build(gazetteer.read_dataset(dataset), dataset)
    importer.write(lumen.engine, built)
    imported_s = time.perf_counter() - started
    widest = widest_uncrowded_prefix(built)
    # The reference: what "q=-" cost before the fix, in this process (no HTTP, no JSON).
    with lumen.engine.connect() as conn:
        statement, params = search.matching_names("", None)
        cpu = time.process_time()
        ranked = search.rank_matches(conn.execute(statement.limit(None), params), "")
        every_name_cpu_s = time.process_time() - cpu
    queries = {
        "q=- (review)": "/api/v1/locations?q=-",
        "q=%CC%81 (review)": "/api/v1/locations?q=%CC%81",
        "q=a (crowded)": "/api/v1/locations?q=a&limit=50",
        "q=s&country=US (crowded)": "/api/v1/locations?q=s&country=US&limit=50",
        f"q={widest} (widest uncrowded)": f"/api/v1/locations?q={widest}&limit=50",
    }
    env = {
        "DATABASE_URL": url,
        "LUMEN_PLUGINS": "locations",
        "LOCATIONS_AUTO_IMPORT": "false",
        "LOCATION_CACHE_SIZE": "0",
    }
    rows = []
    with gunicorn(env, workers=1) as server:
        (worker,) = server.worker_pids()
        get(server.url, "/api/v1/locations?q=berl")  # warm: imports, crowded prefixes
        for label, path in queries.items():
            cpu = cpu_seconds(worker)
            statuses = {get(server.url, path) for _ in range(repeat)}
            rows.append(
                {
                    "query": label,
                    "statuses": sorted(statuses),
                    "cpu_ms_per_request": round(1000 * (cpu_seconds(worker) - cpu) / repeat, 2),
                }
            )
    return {
        "dataset": dataset,
        "cities": len(built.cities),
        "names": len(built.names),
        "import_s": round(imported_s, 1),
        "every_name_ranked": {"names": len(ranked), "cpu_s": round(every_name_cpu_s, 2)},
        "requests": rows,
        "repeat": repeat,
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dataset", default="cities500", choices=gazetteer.DATASETS)
    parser.add_argument(
        "--megapixels", type=float, default=50.0, help="the server's MAX_IMAGE_MEGAPIXELS"
    )
    args = parser.parse_args()
    side = math.isqrt(int(args.megapixels * 1e6))
    webp_side = math.isqrt(int(args.megapixels * 1e6) // images.WEBP_SHARE)
    files = [
        ("PNG 9400x9400, one colour (the review's)", solid_png(9400)),
        (f"PNG {side}x{side}, one colour", solid_png(side)),
        (f"PNG {side}x{side}, palette, one colour", solid_png(side, "P")),
        (f"JPEG {side}x{side}, textured", textured(side, "JPEG")),
        (f"WebP {webp_side}x{webp_side}, textured", textured(webp_side, "WEBP", 50)),
    ]
    with pg_database("lumen_bench_hostile") as url:
        lumen = migrated(url)  # the core's tables and the locations plugin's
        try:
            uploads = [upload_cost(url, label, data, args.megapixels) for label, data in files]
            searches = search_costs(lumen, url, args.dataset, args.repeat)
        finally:
            lumen.engine.dispose()
    path = write_results("hostile", {"uploads": uploads, "searches": searches})
    for row in uploads:
        print(
            f"{row['file']:<50} {row['file_kb']:>6} KB  status {row['status']}  "
            f"cpu {row['cpu_s']} s  wall {row['wall_s']} s  "
            f"worker peak +{row['peak_growth_mb']} MB (to {row['peak_after_mb']} MB)"
        )
    every = searches["every_name_ranked"]
    print(
        f"{searches['dataset']}: {searches['names']} names; ranking every one (q=- before the "
        f"fix) costs {every['cpu_s']} s of CPU in-process"
    )
    for row in searches["requests"]:
        print(f"{row['query']:<40} {row['statuses']}  {row['cpu_ms_per_request']} ms CPU/request")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
