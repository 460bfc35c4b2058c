"""A real install: the wheel built from this checkout, installed (not editable) into a fresh
virtualenv outside it, migrates an empty database and serves, with every plugin, its
migrations and its data coming from the wheel alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import free_port, service_env, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.long]

ROOT = Path(__file__).resolve().parent.parent
BUILT = ("build", "dist", "*.egg-info", "__pycache__", ".coverage*", ".git", ".pytest_cache")


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ of a fresh virtualenv holding the wheel (and its dependencies) only."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building leaves build/ and egg-info behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILT))
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(work / "dist"),
        str(source),
    )
    (wheel,) = (work / "dist").glob("lumen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("plugins/")]
    for shipped in (
        "lumen/migrations/env.py",
        "lumen/migrations/script.py.mako",
        "lumen/migrations/versions/core_0001_users_tokens_photos.py",
        "lumen/gunicorn_conf.py",
        "lumen_plugins/locations/migrations/locations_0001_gazetteer.py",
        "lumen_plugins/locations/migrations/locations_0002_typo_keys.py",
    ):
        assert shipped in names
    venv = work / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel), cwd=work)
    return venv / "bin"


def test_the_installed_wheel_claims_no_top_level_plugins_package(installed, tmp_path):
    probe = (
        "import importlib.util, json, lumen, lumen_plugins.locations;"
        "print(json.dumps([lumen.__file__, lumen_plugins.locations.__file__,"
        " importlib.util.find_spec('plugins') is not None]))"
    )
    done = run(str(installed / "python"), "-c", probe, cwd=tmp_path, env=service_env())
    core, plugin, has_plugins = json.loads(done.stdout)
    venv = str(installed.parent)
    assert core.startswith(venv) and plugin.startswith(venv)  # not this checkout
    assert has_plugins is False


def first_cities(url: str, timeout: float = 60) -> list[dict]:
    """The search's results once the first start's import (in the background) is there: 503
    until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.loads(answer.read())["results"]
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and time.monotonic() < deadline, exc
            exc.close()
            time.sleep(0.2)


def test_the_installed_wheel_migrates_and_serves(installed, fresh_database, tmp_path):
    _, url = fresh_database
    env = service_env(
        DATABASE_URL=url,
        STORAGE_PATH=str(tmp_path / "storage"),
        LOCATIONS_DATASET="cities15000",
        LOCATIONS_MIN_POPULATION="1000000",  # a small import, from the installed data
    )
    up = run(str(installed / "lumen"), "db", "upgrade", cwd=tmp_path, env=env)
    assert up.stdout.strip() == "database at: core_0005, locations_0004"
    listed = run(str(installed / "lumen"), "plugins", cwd=tmp_path, env=env).stdout
    for name in ("cache", "cors", "health", "locations", "metrics"):
        assert f"{name:<12} enabled" in listed

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [str(installed / "lumen"), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=120, proc=server)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/api/v1/photos", timeout=10) as answer:
            assert (answer.status, json.loads(answer.read())) == (200, [])
        results = first_cities(f"{base}/api/v1/locations?q=berlin")
        assert results[0]["name"] == "Berlin" and results[0]["country_code"] == "DE"
        with urllib.request.urlopen(f"{base}/health/database", timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "pass"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert '"path":"/api/v1/photos","status":200' in (tmp_path / "serve.log").read_text()
