"""Machine instructions per request on each path of issue 13, in process, counted by valgrind's
callgrind: Lumen's WSGI app (every plugin on) and the reference app doing the same database or
Redis work, each called as gunicorn calls it, in a process of its own under callgrind.

Timings on a shared machine move by a third from one run to the next; an instruction count
moves by a tenth of a percent, whatever else the machine is doing, so it shows what a change to
Lumen's own code saved. It is not a time: a cache miss or a system call costs more than its
instructions, and valgrind's CPU has no SHA extensions, so hashing counts for more here than on
the machine. Only the calls are counted: each process first builds its app and makes ``--warm``
calls with the count off (pools, caches and the city LRU filled), then counts ``--calls``.
Servers' own work (PostgreSQL, Redis) is not counted; the client side of each round trip is.

    python -m benchmarks.instructions_bench [--calls 300] [--only "cache hit"]

Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

HANDSHAKE_SECONDS = 600  # a child that takes longer than this to get ready has failed


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + HANDSHAKE_SECONDS
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the counted process exited ({process.returncode})")
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"no {path.name} from the counted process")
        time.sleep(0.05)


def count(spec: dict, folder: Path) -> tuple[float, int]:
    """(instructions per call, non-2xx answers) of one side of one path."""
    for name in ("ready", "go", "done", "exit"):
        (folder / name).unlink(missing_ok=True)
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps({**spec, "folder": str(folder)}))
    out = folder / "callgrind.out"
    for old in glob.glob(f"{out}*"):
        os.unlink(old)
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        # One string hash for every count: sets and dicts then do the same work each run.
        "PYTHONHASHSEED": "0",
    }
    (folder / "metrics").mkdir(exist_ok=True)
    process = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=no",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions_bench",
            "--child",
            str(spec_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "valgrind.log", "wb"),
    )
    try:
        _wait_for(folder / "ready", process)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True
        )
        (folder / "go").touch()
        _wait_for(folder / "done", process)
        subprocess.run(
            ["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True
        )
        (folder / "exit").touch()
        process.wait(timeout=HANDSHAKE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
    total = 0
    for dump in glob.glob(f"{out}*"):
        # A dump's "totals:" line, or its "summary:" (callgrind writes one or both).
        figures = [
            int(line.split()[1])
            for line in Path(dump).read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
        total += max(figures, default=0)
    if total == 0:
        raise RuntimeError(f"callgrind counted nothing: see {folder / 'valgrind.log'}")
    non_2xx = json.loads((folder / "done").read_text())["non_2xx"]
    return total / spec["calls"], non_2xx


def child(spec_file: str) -> None:
    """Inside callgrind: build the app, warm it, count the calls between the handshakes."""
    from benchmarks import bare_app
    from benchmarks.paths import REDIS_URL
    from benchmarks.profile_paths import Caller
    from lumen.app import create_app
    from lumen.config import load_settings

    spec = json.loads(Path(spec_file).read_text())
    folder = Path(spec["folder"])
    if spec["side"] == "reference":
        app, lumen = bare_app.make_app(spec["database_url"], REDIS_URL), None
        caller = Caller(app, tuple(spec["paths"]))
    else:
        app = create_app(load_settings(spec["env"]))
        lumen = app.lumen
        caller = Caller(app, tuple(spec["paths"]), spec["tokens"])
    caller.call(spec["warm"])
    caller.non_2xx = 0
    (folder / "ready").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    caller.call(spec["calls"])
    (folder / "done").write_text(json.dumps({"non_2xx": caller.non_2xx}))
    while not (folder / "exit").exists():
        time.sleep(0.01)
    if lumen is not None:
        lumen.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="counted calls per side")
    parser.add_argument("--warm", type=int, default=300, help="calls before counting")
    parser.add_argument("--lru-warm", type=int, default=6000, help="the same, city LRU on")
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--dataset", default="cities500")
    parser.add_argument("--only", help="only the paths whose label contains this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from benchmarks.harness import write_results
    from benchmarks.paths import scenario

    folder = Path(tempfile.mkdtemp(prefix="lumen-instructions-"))
    rows = {}
    with scenario(args.photos, args.queries, args.dataset) as found:
        paths = [p for p in found.paths if args.only is None or args.only in p.label]
        bar = tqdm(total=2 * len(paths), desc="counted", unit="side")
        for path in paths:
            common = {
                "database_url": found.database_url,
                "calls": args.calls,
                "warm": args.lru_warm if "LRU on" in path.label else args.warm,
            }
            sides = {
                "reference": {**common, "side": "reference", "paths": [path.reference]},
                "lumen": {
                    **common,
                    "side": "lumen",
                    "env": found.env(path.config),
                    "paths": list(path.lumen),
                    "tokens": found.tokens if path.signed_in else [],
                },
            }
            counted = {}
            for side, spec in sides.items():
                counted[side] = count(spec, folder)
                bar.update()
            rows[path.label] = {
                "reference_instructions": round(counted["reference"][0]),
                "lumen_instructions": round(counted["lumen"][0]),
                "ratio": round(counted["reference"][0] / counted["lumen"][0], 3),
                "non_2xx": counted["reference"][1] + counted["lumen"][1],
            }
        bar.close()

    width = max(map(len, rows)) + 2
    print(f"{'path':<{width}} {'reference':>11} {'Lumen':>11} {'ratio':>6} non-2xx")
    for label, r in rows.items():
        print(
            f"{label:<{width}} {r['reference_instructions']:>11,} {r['lumen_instructions']:>11,} "
            f"{r['ratio']:>6.2f} {r['non_2xx']}"
        )
    written = write_results(
        "instructions",
        {
            "method": "callgrind, in process, instructions per WSGI call after warm calls",
            "calls": args.calls,
            "paths": rows,
        },
    )
    print(f"written to {written}")


if __name__ == "__main__":
    main()
