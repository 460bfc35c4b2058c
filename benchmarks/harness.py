"""Shared pieces of the benchmarks: a PostgreSQL database of their own, Lumen under gunicorn
from a given environment, and wrk runs parsed into requests/s and latency percentiles.

Everything targets 127.0.0.1, is bounded in time, and stops by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager

PG_ADMIN_URL = os.environ.get(
    "LUMEN_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def pg_database(prefix: str = "lumen_bench") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def migrated_lumen(url: str, **env: str) -> Iterator[Lumen]:
    """The core's app object on ``url`` with its schema migrated (no plugins); the engine is
    disposed afterwards so no connection outlives the set-up."""
    lumen = Lumen(load_settings({"DATABASE_URL": url, **env}), make_plugin_manager([]))
    migrate.upgrade(lumen)
    try:
        yield lumen
    finally:
        lumen.engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    pid: int  # the gunicorn master

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]


def peak_rss_kb(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str],
    workers: int = 4,
    app: str = "lumen.wsgi:app",
    extra_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """Serve ``app`` under Lumen's gunicorn settings."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lumen-bench-")
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "LUMEN_", "REDIS_"))},
        "STORAGE_PATH": os.path.join(workdir, "storage"),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),  # benchmarks.bare_app
        **env,
        "LUMEN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_ACCESS_LOG": "",
    }
    log = open(os.path.join(workdir, "gunicorn.log"), "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:lumen.gunicorn_conf",
            *extra_args,
            app,
        ],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(Path(log.name).read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("gunicorn did not start") from None
                time.sleep(0.2)
        server = Server(f"http://127.0.0.1:{port}", proc.pid)
        # Workers fork only after the master's start-up work (migrations, data imports).
        deadline = time.monotonic() + 600
        while len(server.worker_pids()) < workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("workers did not start:\n" + Path(log.name).read_text())
            time.sleep(0.2)
        time.sleep(1.0)  # let every worker finish importing the app
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(
    url: str,
    seconds: int = 10,
    connections: int = 32,
    threads: int = 2,
    headers: dict[str, str] | None = None,
    script: str | None = None,
) -> dict:
    """One wrk run: requests/s, p50/p90/p99 in ms, and non-2xx/3xx and socket errors.
    ``script``: a wrk Lua script (``-s``), e.g. one that varies a header per request."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    percentiles = dict(re.findall(r"^ +(50|90|99)% +(\S+) *$", out, re.M))
    if len(percentiles) != 3:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(percentiles["50"]),
        "p90_ms": _ms(percentiles["90"]),
        "p99_ms": _ms(percentiles["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def median_of(runs: list[dict]) -> dict:
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms")
    out = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in keys}
    out["runs"] = len(runs)
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    return out


def print_results(results: dict[str, dict]) -> None:
    """One line per configuration: req/s, p50, p99 (and the ratio to a baseline if given)."""
    width = max(map(len, results)) + 2
    for name, r in results.items():
        ratio = f"  x{r['ratio_to_bare']} of bare" if "ratio_to_bare" in r else ""
        print(
            f"{name:<{width}} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms{ratio}  (non-2xx {r['non_2xx']})"
        )


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        **data,
    }
    path.write_text(json.dumps(data, indent=2))
    return path
