"""List latency as the library grows: the same lists at a small and a large size, no cache.

Each size gets a PostgreSQL database of its own, filled with ``lumen seed --bulk``; one
gunicorn server per size (cache plugin off: LUMEN_PLUGINS=none, no REDIS_URL). For the
anonymous list and a signed-in member's list (public photos and their own private ones), wrk
measures the first page, a deep page reached by cursor (page 5,000, or the last page where
the list is shorter), and the deepest offset the API allows (10,000). The ratio large / small
of each p50 and p99 is the figure to watch: the target is at most 1.5.

    python -m benchmarks.scale_bench [--photos 1000,1000000] [--seconds 5]
    python -m benchmarks.scale_bench --photos 1000,20000 --seconds 1   # a smoke run, < 1 min
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request

from tqdm import tqdm

from benchmarks.harness import gunicorn, migrated_lumen, pg_database, write_results, wrk
from lumen import photo_lists
from lumen.bulk_seed import SEED_PASSWORD, bulk_seed
from lumen.models import User
from lumen.resources.paging import MAX_OFFSET, Cursor, Page

PER_PAGE = 20
DEEP_PAGE = 5000
TARGET_RATIO = 1.5


def users_for(photos: int) -> int:
    # 200 photos per user (so a pool of 200 image files, made in a second or two), 10 users
    # at the least.
    return max(10, photos // 200)


def deep_cursor(lumen, viewer, photos_seen: int) -> tuple[str | None, int]:
    """The cursor of page DEEP_PAGE of the list ``viewer`` sees (or of its last page when it
    is shorter), and the page's number. Read once, in the set-up, by offset."""
    with lumen.Session() as session:
        total = int(session.scalar(photo_lists.total_query(viewer)))
        page_number = min(DEEP_PAGE, max(1, (total - 1) // PER_PAGE + 1))
        skip = (page_number - 1) * PER_PAGE
        if skip == 0:
            return None, 1
        # A row of the photos table (the lists read Core rows, not entities).
        before = session.execute(photo_lists.page_query(viewer, Page(1, skip - 1))).first()
    return Cursor(before.created_at, before.id).encode(), page_number


def prepare(url: str, storage: str, photos: int) -> dict:
    """Seed, then find a signed-in member and the deep cursors of both lists."""
    with migrated_lumen(url, STORAGE_PATH=storage) as lumen:
        started = time.monotonic()
        users, _ = bulk_seed(lumen, users_for(photos), photos)
        seeded_s = time.monotonic() - started
        with lumen.Session() as session:
            member = session.query(User).order_by(User.username).first()
            session.expunge(member)
        anonymous = deep_cursor(lumen, None, photos)
        signed_in = deep_cursor(lumen, member, photos)
    return {
        "users": users,
        "seed_s": round(seeded_s, 1),
        "member": member.username,
        "cursors": {"anonymous": anonymous, "signed in": signed_in},
    }


def token_for(base: str, username: str) -> str:
    body = json.dumps({"username": username, "password": SEED_PASSWORD}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/tokens", body, {"Content-Type": "application/json"}
    )
    return json.load(urllib.request.urlopen(request))["token"]


def measure(base: str, setup: dict, seconds: int, connections: int) -> dict:
    headers = {"signed in": {"Authorization": f"Bearer {token_for(base, setup['member'])}"}}
    out = {}
    for who in ("anonymous", "signed in"):
        cursor, page_number = setup["cursors"][who]
        first = f"{base}/api/v1/photos?limit={PER_PAGE}"
        targets = {
            "first page": first,
            f"deep page by cursor (page {page_number})": f"{first}&cursor={cursor}"
            if cursor
            else first,
            f"offset {MAX_OFFSET} (the bound)": f"{first}&offset={MAX_OFFSET}",
        }
        for where, target in targets.items():
            wrk(target, seconds=1, connections=connections, headers=headers.get(who))  # warm
            result = wrk(target, seconds, connections=connections, headers=headers.get(who))
            out[f"{who}: {where}"] = result
    return out


def position(name: str) -> str:
    """A row's name without the page number, to pair the sizes up."""
    return name.split(" (page")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="1000,1000000", help="the small and large sizes")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    small, large = (int(n) for n in args.photos.split(","))

    results: dict[int, dict] = {}
    setups: dict[int, dict] = {}
    bar = tqdm(total=2, desc="sizes", unit="size")
    for size in (small, large):
        storage = tempfile.mkdtemp(prefix=f"lumen-scale-{size}-")
        with pg_database(f"lumen_bench_scale_{size}") as url:
            setups[size] = prepare(url, storage, size)
            env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "STORAGE_PATH": storage}
            with gunicorn(env, workers=args.workers) as server:
                results[size] = measure(server.url, setups[size], args.seconds, args.connections)
        bar.update()
    bar.close()

    ratios = {}
    large_by_position = {position(name): r for name, r in results[large].items()}
    print(f"{'list and page':<52} {small:>9} p50/p99 ms {large:>9} p50/p99 ms  ratio p50/p99")
    for name, r_small in results[small].items():
        r_large = large_by_position[position(name)]
        ratio = {
            "p50": round(r_large["p50_ms"] / r_small["p50_ms"], 2),
            "p99": round(r_large["p99_ms"] / r_small["p99_ms"], 2),
        }
        ratios[position(name)] = ratio
        print(
            f"{position(name):<52} {r_small['p50_ms']:>9.2f} / {r_small['p99_ms']:<8.2f}"
            f" {r_large['p50_ms']:>9.2f} / {r_large['p99_ms']:<8.2f}"
            f"  {ratio['p50']:.2f} / {ratio['p99']:.2f}"
            f"{'' if ratio['p50'] <= TARGET_RATIO else '  (over the 1.5x target)'}"
            f"  non-2xx {r_small['non_2xx'] + r_large['non_2xx']}"
        )
    for size, setup in setups.items():
        print(f"{size} photos: {setup['users']} users, seeded in {setup['seed_s']} s")
    path = write_results(
        "scale",
        {
            "load": f"wrk -t2 -c{args.connections} -d{args.seconds}s, gunicorn sync "
            f"-w {args.workers}, PostgreSQL, lumen seed --bulk, no cache",
            "sizes": {str(size): setups[size] | {"results": results[size]} for size in setups},
            "ratio_large_to_small": ratios,
            "target_ratio": TARGET_RATIO,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
