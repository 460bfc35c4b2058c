"""Running Locust headless on the scenarios, alone or as a master with worker processes
(Locust's own distributed mode), with its HTML report and CSV files in one folder.

Locust runs in processes of its own (its CLI): it monkey-patches the standard library with
gevent, which must not happen to the process that also runs the local deployment, and its
master and workers are then exactly what an operator starts by hand on several machines."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "LUMEN_LOADTEST_DATA"  # read by loadtests/locustfile.py
REPORT_NAME = "report.html"
CSV_PREFIX = "locust"
STATS_JSON = "locust"  # Locust adds ".json"
FAILURES_JSON = "failures.json"
FAILURES_ENV = "LUMEN_LOADTEST_FAILURES"  # read by loadtests/locustfile.py


class LocustError(Exception):
    """Locust did not run to the end (the message names the log to read)."""


@dataclass
class Run:
    folder: Path

    @property
    def html(self) -> Path:
        return self.folder / REPORT_NAME

    @property
    def stats_json(self) -> Path:
        return self.folder / f"{STATS_JSON}.json"

    @property
    def failures_json(self) -> Path:
        return self.folder / FAILURES_JSON


def seconds(run_time: str) -> int:
    """Locust's time string (``90``, ``90s``, ``2m``, ``1h30m``) in seconds."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", run_time.strip())
    if not run_time.strip() or match is None:
        raise ValueError("must be a time such as 90s, 2m or 1h30m")
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _locust(locustfile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(locustfile), *args]


def run(
    locustfile: Path,
    host: str,
    data_path: Path,
    folder: Path,
    users: int,
    spawn_rate: float,
    run_time: str,
    workers: int,
    user_classes: list[str],
    env: dict,
) -> Run:
    """Run the scenarios for ``run_time``; return where the report and CSV files are."""
    folder.mkdir(parents=True, exist_ok=True)
    result = Run(folder)
    for stale in (result.html, result.stats_json, result.failures_json):
        stale.unlink(missing_ok=True)
    env = {**env, DATA_ENV: str(Path(data_path).resolve())}
    master_env = {**env, FAILURES_ENV: str(result.failures_json.resolve())}
    headless = [
        "--host", host,
        "--headless",
        "--users", str(users),
        "--spawn-rate", str(spawn_rate),
        "--run-time", run_time,
        "--html", str(result.html),
        "--csv", str(folder / CSV_PREFIX),
        "--json-file", str(folder / STATS_JSON),
        "--only-summary",
        # Users finish the request in flight at the end: none is cut off and counted as failed.
        "--stop-timeout", "10",
    ]  # fmt: skip
    timeout = seconds(run_time) + 120
    procs = []
    try:
        if workers <= 0:
            master = _start(
                _locust(locustfile, *headless, *user_classes), folder / "locust.log", master_env
            )
            procs.append(master)
        else:
            port = _free_port()
            master_args = [
                "--master",
                "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port),
                "--expect-workers", str(workers),
                "--expect-workers-max-wait", "120",
            ]  # fmt: skip
            master = _start(
                _locust(locustfile, *headless, *master_args, *user_classes),
                folder / "locust-master.log",
                master_env,
            )
            procs.append(master)
            worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            for number in range(workers):
                procs.append(
                    _start(
                        _locust(locustfile, *worker_args, *user_classes),
                        folder / f"locust-worker-{number + 1}.log",
                        env,
                    )
                )
        try:
            code = master.wait(timeout=timeout + 120)
        except subprocess.TimeoutExpired:
            raise LocustError(f"Locust did not finish within {timeout + 120} s") from None
        for worker in procs[1:]:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.terminate()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.log_file.close()
    # Locust's own exit code says only "there were failures"; the thresholds judge those.
    if not result.stats_json.exists():
        raise LocustError(f"Locust stopped without statistics (exit {code}): see {folder}")
    return result


def _start(command: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    proc.log_file = log_file
    return proc
