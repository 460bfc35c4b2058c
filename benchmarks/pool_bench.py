"""Pooled engine (QueuePool + pre-ping) against NullPool on a primary-key read, under gunicorn.

GET /api/v1/users/{id} on PostgreSQL, sync workers, wrk on loopback; the two configurations
run in interleaved rounds in one run so the machine's noise hits both alike.

    python -m benchmarks.pool_bench [--rounds 3] [--seconds 10] [--workers 4]
"""

from __future__ import annotations

import argparse

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
from lumen.users import create_user


def prepare(url: str) -> str:
    with migrated_lumen(url) as lumen, lumen.unit_of_work() as session:
        user = create_user(session, "benchmark", "benchmark-password")
    return str(user.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    configs = {"QueuePool(10) + pre-ping": "queue", "NullPool": "null"}
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    with pg_database("lumen_bench_pool") as url:
        user_id = prepare(url)
        bar = tqdm(total=args.rounds * len(configs), desc="pool benchmark", unit="run")
        for _ in range(args.rounds):
            for name, pool_class in configs.items():
                env = {"DATABASE_URL": url, "LUMEN_PLUGINS": "none", "DB_POOL_CLASS": pool_class}
                with gunicorn(env, workers=args.workers) as server:
                    base = server.url
                    wrk(f"{base}/api/v1/users/{user_id}", seconds=2, connections=args.connections)
                    runs[name].append(
                        wrk(
                            f"{base}/api/v1/users/{user_id}",
                            seconds=args.seconds,
                            connections=args.connections,
                        )
                    )
                bar.update()
        bar.close()
    results = {name: median_of(r) for name, r in runs.items()}
    pooled, null = results["QueuePool(10) + pre-ping"], results["NullPool"]
    summary = {
        "endpoint": "GET /api/v1/users/{id} (primary-key read), PostgreSQL 15, trust auth",
        "load": f"wrk -t2 -c{args.connections} -d{args.seconds}s, gunicorn sync -w {args.workers}",
        "results": results,
        "throughput_ratio": round(pooled["rps"] / null["rps"], 2),
        "p50_reduction_pct": round(100 * (1 - pooled["p50_ms"] / null["p50_ms"]), 1),
    }
    path = write_results("pool", summary)
    print_results(results)
    print(
        f"pooled/NullPool throughput: {summary['throughput_ratio']}x; "
        f"p50 {summary['p50_reduction_pct']} % lower; written to {path}"
    )


if __name__ == "__main__":
    main()
