"""The lumen command: config check, plugins, db, users, seed, storage check."""

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lumen.cli import Context, cli


@pytest.fixture
def run(environ, monkeypatch, clean_db):
    """Run a lumen command in-process with the test environment (plus overrides)."""

    def invoke(*args, input=None, **env):
        for name in [n for n in os.environ if n.startswith(("DB_", "LUMEN_", "REDIS_"))]:
            monkeypatch.delenv(name)
        for name, value in {**environ, **env}.items():
            monkeypatch.setenv(name, value)
        return CliRunner().invoke(cli, list(args), obj=Context(), input=input)

    return invoke


def test_config_check_shows_every_section(run):
    result = run(
        "config",
        "check",
        LUMEN_PLUGINS="cors,cache,locations",
        CORS_MAX_AGE="120",
        WEB_CONCURRENCY="3",
    )
    assert result.exit_code == 0, result.output
    sections, current = {}, None
    for line in result.output.splitlines():
        if line.startswith("# "):
            current = sections.setdefault(line[2:], {})
        elif current is not None:  # lines before the first section are the plugins' logs
            current[line.split()[0]] = line.split()[1:]
    assert set(sections) == {"core", "serve", "cors", "cache", "locations"}
    assert sections["cors"]["CORS_MAX_AGE"] == ["120"]
    assert sections["serve"]["WEB_CONCURRENCY"] == ["3"]
    assert "CACHE_KEY_PREFIX" in sections["cache"] and "LOCATIONS_DATASET" in sections["locations"]
    assert "DB_POOL_SIZE" in sections["core"] and "CACHE_TTL_DAYS" not in sections["core"]


def test_config_check_stops_on_a_bad_server_setting(run):
    result = run("config", "check", WEB_CONCURRENCY="x")
    assert result.exit_code == 2
    assert (
        result.output.strip() == "lumen: invalid setting WEB_CONCURRENCY='x': not a valid integer"
    )


def test_config_check_masks_secrets(run, backend):
    result = run(
        "config", "check", REDIS_URL="redis://:sesame99@127.0.0.1:6379/0", REDIS_PASSWORD="sesame99"
    )
    assert result.exit_code == 0, result.output
    assert "sesame99" not in result.output
    assert "REDIS_PASSWORD" in result.output and "********" in result.output
    assert "DB_POOL_SIZE" in result.output


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_SIZE", "0"),
        ("ENVIRONMENT", "prod"),
        ("LUMEN_PLUGINS", "nosuchplugin"),
    ],
)
def test_config_check_fails_with_one_line(run, variable, value):
    result = run("config", "check", **{variable: value})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"lumen: invalid setting {variable}={value!r}:")


def test_users_create_works_with_registration_closed(run, app):
    result = run(
        "users",
        "create",
        "root_admin",
        "--password-stdin",
        input="long-password\n",
        LUMEN_OPEN_REGISTRATION="false",
    )
    assert result.exit_code == 0, result.output
    assert "created user root_admin" in result.output
    again = run("users", "create", "root_admin", "--password-stdin", input="long-password\n")
    assert again.exit_code == 1 and "already taken" in again.output
    short = run("users", "create", "other", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "password" in short.output


def test_seed_and_storage_check(run, app):
    result = run("seed", "--users", "2", "--photos", "12")
    assert result.exit_code == 0, result.output
    assert "created 2 users and 12 photos" in result.output
    import falcon.testing

    client = falcon.testing.TestClient(app)
    photos = client.simulate_get("/api/v1/photos", params={"limit": 100})
    assert 0 < int(photos.headers["x-total-count"]) <= 12
    assert client.simulate_get(photos.json[0]["urls"]["thumbnail"]).status_code == 200

    clean = run("storage", "check")
    assert clean.exit_code == 0 and "found 0 orphan files" in clean.output
    root = Path(app.lumen.settings.storage_path)
    stray = root / "ab" / "cd" / ("ab" * 32)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"orphan")
    young = root / "cd" / "ef" / ("cd" * 32)  # may be an upload in progress: left alone
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"in flight")
    two_hours_ago = time.time() - 7200
    os.utime(stray, (two_hours_ago, two_hours_ago))
    sha = photos.json[0]["sha256"]
    lost = root / sha[:2] / sha[2:4] / sha
    lost.unlink()
    dirty = run("storage", "check")
    assert dirty.exit_code == 1
    assert "found 1 orphan files" in dirty.output and photos.json[0]["id"] in dirty.output
    fixed = run("storage", "check", "--fix")
    # The stray file, and the thumbnail of the photo whose original was lost.
    assert fixed.exit_code == 0 and "removed 2 orphan files" in fixed.output
    assert "removed 1 photos with missing files" in fixed.output
    assert not stray.exists() and young.exists()
    assert client.simulate_get(f"/api/v1/photos/{photos.json[0]['id']}").status_code == 404
    assert run("storage", "check").exit_code == 0


def test_db_current_and_unmigrated_database(run, tmp_path):
    empty = f"sqlite:///{tmp_path}/empty.db"
    assert "base" in run("db", "current", DATABASE_URL=empty).output
    upgraded = run("db", "upgrade", DATABASE_URL=empty)
    assert upgraded.exit_code == 0 and "core_0005" in upgraded.output
    assert "core_0005" in run("db", "current", DATABASE_URL=empty).output


def test_plugins_lists_what_each_registers(run):
    result = run("plugins", LUMEN_PLUGINS="health")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("health") and "enabled" in line for line in lines)
    assert any(line.startswith("cors") and "disabled" in line for line in lines)
    assert "route:  /health" in result.output
