"""The cache plugin: GET /api/v1/photos/{id} and the anonymous first page of GET /api/v1/photos
served from Redis against the same with the cache off, and what a request pays while Redis is
down (the breaker open), in one run.

Three gunicorn servers (sync, 4 workers each) on one seeded PostgreSQL database of the
benchmark's own run side by side, idle while another is measured; wrk loads one at a time,
in interleaved rounds (the order rotates each round), and the medians are reported:
- cache: REDIS_URL set (the machine's Redis, a prefix of the run's own);
- off: no REDIS_URL (the plugin passes every read to the database);
- down: REDIS_URL pointing at a port where nothing listens (the breaker opens, reads go to the
  database).
Then, in one process, the cost of one ``lumen.cached`` call with the breaker open against the
plugin without Redis: the latency Redis being down adds to a request.

    python benchmarks/cache_bench.py [--seconds 8] [--rounds 3] [--photos 3000]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import insert

from benchmarks.harness import free_port, gunicorn, median_of, pg_database, write_results, wrk
from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.db import make_engine
from lumen.models import Photo, User
from lumen.plugins import make_plugin_manager
from lumen_plugins.cache import cache_of

REDIS_URL = "redis://127.0.0.1:6379/15"
CONFIGS = ("cache", "off", "down")


def seed(url: str, photos: int, users: int = 50) -> list[str]:
    """Migrate and fill the database; the ids of the public photos."""
    settings = load_settings({"DATABASE_URL": url, "LUMEN_PLUGINS": "none"})
    engine = make_engine(settings)
    migrate.upgrade(Lumen(settings, make_plugin_manager([]), engine))
    rng = random.Random(7)
    now = datetime.now(UTC)
    user_rows = [
        {"id": uuid.uuid4(), "username": f"bench{i}", "password_hash": "x", "display_name": None}
        for i in range(users)
    ]
    photo_rows = []
    for i in range(photos):
        sha = uuid.uuid4().hex * 2
        photo_rows.append(
            {
                "id": uuid.uuid4(),
                "owner_id": rng.choice(user_rows)["id"],
                "caption": f"photo {i} " + "lorem ipsum " * rng.randrange(1, 8),
                "visibility": "public" if rng.random() < 0.9 else "private",
                "width": 4000,
                "height": 3000,
                "content_type": "image/jpeg",
                "size_bytes": 2_500_000,
                "sha256": sha,
                "thumb_sha256": sha[::-1],
                "thumb_content_type": "image/jpeg",
                "thumb_size_bytes": 40_000,
                "created_at": now - timedelta(minutes=photos - i),
                "updated_at": now - timedelta(minutes=photos - i),
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(User), user_rows)
        conn.execute(insert(Photo), photo_rows)
    engine.dispose()
    return [str(r["id"]) for r in photo_rows if r["visibility"] == "public"]


def breaker_open_overhead(url: str, photo_id: str, calls: int = 20000) -> dict:
    """Microseconds per ``lumen.cached`` call: plugin without Redis, and breaker open."""

    def lumen_with(**env) -> Lumen:
        settings = load_settings({"DATABASE_URL": url, "LUMEN_PLUGINS": "cache", **env})
        lumen = Lumen(settings, make_plugin_manager(["cache"]))
        lumen.start()
        return lumen

    off = lumen_with()
    down = lumen_with(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CACHE_BREAKER_COOLDOWN_S="3600"
    )
    key, tags, value = f"photo:{photo_id}", (f"photo:{photo_id}", "cities"), {"photo": {}}
    while cache_of(down).store.breaker.state != "open":
        down.cached(key, tags, lambda: value)
    samples = {"off": [], "down": []}
    for _ in range(5):  # interleaved
        for name, lumen in (("off", off), ("down", down)):
            started = time.perf_counter()
            for _ in range(calls):
                lumen.cached(key, tags, lambda: value)
            samples[name].append((time.perf_counter() - started) / calls * 1e6)
    for lumen in (off, down):
        lumen.shutdown()
    us = {name: sorted(values)[2] for name, values in samples.items()}
    return {
        "off_us": round(us["off"], 2),
        "down_us": round(us["down"], 2),
        "added_us": round(us["down"] - us["off"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    prefix = f"lumenbench:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    with pg_database("lumen_bench_cache") as url:
        public = seed(url, args.photos)
        photo_path = f"/api/v1/photos/{random.Random(1).choice(public)}"
        paths = {"photo": photo_path, "list": "/api/v1/photos"}
        base = {"DATABASE_URL": url, "LUMEN_PLUGINS": "cache"}
        envs = {
            "cache": {**base, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix},
            "off": base,
            "down": {**base, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        }
        runs = {(c, e): [] for c in CONFIGS for e in paths}
        single = {"off": [], "down": []}
        try:
            with (
                gunicorn(envs["cache"], args.workers) as cache_url,
                gunicorn(envs["off"], args.workers) as off_url,
                gunicorn(envs["down"], args.workers) as down_url,
            ):
                urls = {"cache": cache_url.url, "off": off_url.url, "down": down_url.url}
                for config in CONFIGS:  # warm pools, caches and breakers
                    for path in paths.values():
                        wrk(urls[config] + path, seconds=2)
                for round_number in range(args.rounds):
                    order = CONFIGS[round_number % 3 :] + CONFIGS[: round_number % 3]
                    for endpoint, path in paths.items():
                        for config in order:
                            result = wrk(urls[config] + path, seconds=args.seconds)
                            runs[(config, endpoint)].append(result)
                            print(
                                f"round {round_number + 1} {endpoint:<5} {config:<5} "
                                f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                                f"p99 {result['p99_ms']:.2f} ms  non-2xx {result['non_2xx']}",
                                flush=True,
                            )
                # One connection, no queueing: what Redis being down adds to one request.
                for round_number in range(args.rounds):
                    order = ("off", "down") if round_number % 2 == 0 else ("down", "off")
                    for config in order:
                        result = wrk(urls[config] + paths["photo"], args.seconds, 1, 1)
                        single[config].append(result)
                        print(
                            f"round {round_number + 1} photo, one connection, {config:<5} "
                            f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms",
                            flush=True,
                        )
            stats = {}
            for key in client.scan_iter(f"{prefix}:stats:*"):
                for kind, count in client.hgetall(key).items():
                    stats[kind.decode()] = stats.get(kind.decode(), 0) + int(count)
            overhead = breaker_open_overhead(url, public[0])
        finally:
            for key in client.scan_iter(f"{prefix}:*"):
                client.unlink(key)

    figures = {f"{c}/{e}": median_of(runs[(c, e)]) for c in CONFIGS for e in paths}
    ratios = {
        endpoint: {
            "cache_over_off_rps": round(
                figures[f"cache/{endpoint}"]["rps"] / figures[f"off/{endpoint}"]["rps"], 2
            ),
            "down_over_off_rps": round(
                figures[f"down/{endpoint}"]["rps"] / figures[f"off/{endpoint}"]["rps"], 3
            ),
            "down_minus_off_p50_ms": round(
                figures[f"down/{endpoint}"]["p50_ms"] - figures[f"off/{endpoint}"]["p50_ms"], 3
            ),
        }
        for endpoint in paths
    }
    lookups = stats.get("hits", 0) + stats.get("misses", 0)
    result = {
        "setup": {
            "photos": args.photos,
            "workers": args.workers,
            "worker_class": "sync",
            "wrk": "-t2 -c32",
            "seconds": args.seconds,
            "rounds": args.rounds,
            "endpoints": paths,
        },
        "figures": figures,
        "ratios": ratios,
        "cache_hit_rate_percent": round(100 * stats.get("hits", 0) / lookups, 2)
        if lookups
        else None,
        "breaker_open_per_call": overhead,
        "one_connection_photo": {config: median_of(single[config]) for config in ("off", "down")},
        "caveats": "2-core machine shared with the load generator and possibly other work; "
        "medians of interleaved rounds; absolute figures move between runs, compare ratios.",
    }
    one = result["one_connection_photo"]
    added = one["down"]["p50_ms"] - one["off"]["p50_ms"]
    result["one_connection_photo"]["down_minus_off_p50_ms"] = round(added, 3)
    print(f"one connection, p50 down - off: {added:.3f} ms")
    print(f"per call, breaker open vs no Redis: {overhead}")
    print(f"ratios: {ratios}")
    print(f"written to {write_results('cache_bench', result)}")


if __name__ == "__main__":
    main()
