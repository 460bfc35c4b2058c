"""The Locust scenarios run against a real server and pass the release thresholds."""

import json
import subprocess
import sys

import pytest

from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.maintenance import seed
from lumen.plugins import make_plugin_manager

pytestmark = pytest.mark.slow


def test_locust_scenarios_run_clean(tmp_path, gunicorn_server):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/load.db", "STORAGE_PATH": str(tmp_path / "st"),
           "LUMEN_PLUGINS": "none"}
    lumen = Lumen(load_settings(env), make_plugin_manager([]))
    migrate.upgrade(lumen)
    seed(lumen, users=3, photos=30, progress=False)
    lumen.engine.dispose()
    server = gunicorn_server(env, workers=2)
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--host", server.url,
         "--headless", "-u", "6", "-r", "6", "-t", "8s", "--json", "--only-summary"],
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert stats["/api/v1/photos"]["num_requests"] > 0
    assert sum(entry["num_failures"] for entry in stats.values()) == 0
    assert stats["/api/v1/photos/{id}"]["num_requests"] > 0
