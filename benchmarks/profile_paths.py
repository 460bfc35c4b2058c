"""Per-request CPU cost of each path of issue 13, in process: Lumen's WSGI app and the reference
app doing the same database or Redis work, both called the way gunicorn calls them, in the same
process, in interleaved rounds (the order alternates), so a busy machine slows both alike and
their ratio holds where wall-clock throughput would not.

For each path: microseconds of this process's CPU per request (``time.process_time``; the
database's and Redis's own work happens in their processes and is left out, the client side of
each round trip is in) and of wall time, medians over the rounds, and reference / Lumen: the
share of the reference's throughput Lumen would reach if CPU were all that counted.
``--profile`` also writes a pyinstrument profile of Lumen's calls per path (text and HTML) to
benchmarks/results/profiles/.

    python -m benchmarks.profile_paths [--calls 2000] [--rounds 5] [--profile]
"""

from __future__ import annotations

import os
import tempfile

# Metrics in multiprocess mode, as under gunicorn: prometheus_client reads it when imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="lumen-prof-metrics-"))

import argparse  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import falcon.testing  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import bare_app  # noqa: E402
from benchmarks.harness import RESULTS, write_results  # noqa: E402
from benchmarks.paths import ADDRESSES, CONFIGS, REDIS_URL, scenario  # noqa: E402
from lumen.app import create_app  # noqa: E402
from lumen.config import load_settings  # noqa: E402


class Caller:
    """Calls a WSGI app with prepared environs (cycled), counting non-2xx answers. Requests
    come from the addresses of benchmarks.paths in turn, and with ``tokens`` from each member
    in turn, as under targets_bench."""

    def __init__(self, app, paths: tuple[str, ...], tokens: list[str] | tuple = ()):
        self.app = app
        self.environs = []
        for n in range(max(len(paths), len(ADDRESSES), len(tokens))):
            path = paths[n % len(paths)]
            headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"} if tokens else None
            self.environs.append(
                falcon.testing.create_environ(
                    path=path.partition("?")[0],
                    query_string=path.partition("?")[2],
                    headers=headers,
                    remote_addr=ADDRESSES[n % len(ADDRESSES)],
                )
            )
        self.cycle = itertools.cycle(self.environs)
        self.non_2xx = 0

    def _start_response(self, status, headers, exc_info=None):
        if not status.startswith("2"):
            self.non_2xx += 1

    def call(self, times: int) -> None:
        for _ in range(times):
            body = self.app(dict(next(self.cycle)), self._start_response)
            for _chunk in body:
                pass
            if hasattr(body, "close"):
                body.close()

    def measure(self, times: int) -> tuple[float, float]:
        """(CPU µs, wall µs) per call over ``times`` calls."""
        cpu, wall = time.process_time(), time.perf_counter()
        self.call(times)
        return (
            (time.process_time() - cpu) / times * 1e6,
            (time.perf_counter() - wall) / times * 1e6,
        )


def profile(caller: Caller, label: str, times: int) -> Path:
    from pyinstrument import Profiler

    folder = RESULTS / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
    profiler = Profiler(interval=0.0001)
    with profiler:
        caller.call(times)
    (folder / f"{name}.txt").write_text(profiler.output_text(unicode=False, color=False))
    (folder / f"{name}.html").write_text(profiler.output_html())
    return folder / f"{name}.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--dataset", default="cities500")
    parser.add_argument("--only", help="only the paths whose label contains this")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles of Lumen")
    args = parser.parse_args()

    with scenario(args.photos, args.queries, args.dataset) as found:
        apps = {config: create_app(load_settings(found.env(config))) for config in CONFIGS}
        reference = bare_app.make_app(found.database_url, REDIS_URL)
        paths = [p for p in found.paths if args.only is None or args.only in p.label]
        rows = {}
        bar = tqdm(total=len(paths) * args.rounds, desc="rounds", unit="path")
        for path in paths:
            sides = {
                "reference": Caller(reference, (path.reference,)),
                "lumen": Caller(
                    apps[path.config], path.lumen, found.tokens if path.signed_in else ()
                ),
            }
            for caller in sides.values():  # warm pools, caches and the LRU
                caller.call(min(args.calls, 500))
            samples = {side: [] for side in sides}
            for round_number in range(args.rounds):
                order = list(sides) if round_number % 2 == 0 else list(sides)[::-1]
                for side in order:
                    samples[side].append(sides[side].measure(args.calls))
                bar.update()
            cpu = {s: statistics.median(c for c, _ in v) for s, v in samples.items()}
            wall = {s: statistics.median(w for _, w in v) for s, v in samples.items()}
            rows[path.label] = {
                "reference": path.reference if len(path.reference) < 40 else "/blob/...",
                "reference_cpu_us": round(cpu["reference"], 1),
                "lumen_cpu_us": round(cpu["lumen"], 1),
                "cpu_ratio": round(cpu["reference"] / cpu["lumen"], 3),
                "reference_wall_us": round(wall["reference"], 1),
                "lumen_wall_us": round(wall["lumen"], 1),
                "wall_ratio": round(wall["reference"] / wall["lumen"], 3),
                "target": path.target,
                "non_2xx": sides["lumen"].non_2xx + sides["reference"].non_2xx,
            }
            if args.profile:
                rows[path.label]["profile"] = str(profile(sides["lumen"], path.label, args.calls))
        bar.close()
        for app in apps.values():
            app.lumen.shutdown()

    width = max(map(len, rows)) + 2
    print(
        f"{'path':<{width}} {'ref CPU':>9} {'Lumen CPU':>10} {'ratio':>6} "
        f"{'ref wall':>9} {'Lumen wall':>11} {'ratio':>6} {'target':>6} non-2xx"
    )
    for label, r in rows.items():
        print(
            f"{label:<{width}} {r['reference_cpu_us']:>7.1f}us {r['lumen_cpu_us']:>8.1f}us "
            f"{r['cpu_ratio']:>6.2f} {r['reference_wall_us']:>7.1f}us {r['lumen_wall_us']:>9.1f}us "
            f"{r['wall_ratio']:>6.2f} {r['target']:>6.2f} {r['non_2xx']}"
        )
    written = write_results(
        "profile_paths",
        {
            "method": "in process, WSGI calls, interleaved rounds, medians; CPU of this process",
            "calls": args.calls,
            "rounds": args.rounds,
            "load_average": os.getloadavg()[0],
            "paths": rows,
        },
    )
    print(f"written to {written}")


if __name__ == "__main__":
    main()
