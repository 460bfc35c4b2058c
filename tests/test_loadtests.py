"""The Locust scenarios run against a real server and pass the release thresholds."""

import json
import os
import subprocess
import sys

import pytest

from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.maintenance import seed
from lumen.plugins import make_plugin_manager

pytestmark = pytest.mark.slow


def run_locust(url: str, thresholds: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(thresholds))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--host",
            url,
            "--headless",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "8s",
            "--json",
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "LUMEN_LOAD_THRESHOLDS": str(path)},
    )


def test_locust_scenarios_run_clean_and_thresholds_gate(tmp_path, gunicorn_server):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/load.db",
        "STORAGE_PATH": str(tmp_path / "st"),
        "LUMEN_PLUGINS": "none",
    }
    lumen = Lumen(load_settings(env), make_plugin_manager([]))
    migrate.upgrade(lumen)
    seed(lumen, users=3, photos=30, progress=False)
    lumen.engine.dispose()
    server = gunicorn_server(env, workers=2)
    # Latency on a shared 2-core test machine says nothing: only failures are held to zero here.
    done = run_locust(server.url, {"max_failure_ratio": 0, "max_p95_ms": 60_000}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert stats["/api/v1/photos"]["num_requests"] > 0
    assert sum(entry["num_failures"] for entry in stats.values()) == 0
    assert stats["/api/v1/photos/{id}"]["num_requests"] > 0
    # A threshold no run can meet turns the exit code to 1: the gate works.
    gated = run_locust(server.url, {"max_failure_ratio": 0, "max_p95_ms": 0}, tmp_path)
    assert gated.returncode == 1
    assert "release threshold broken: p95" in gated.stderr
