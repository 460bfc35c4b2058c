"""Shared fixtures. Every test that touches the database runs twice: on SQLite (the embedded
default) and on the machine's real PostgreSQL, each in a database made for this test session.
Redis tests use their own database number and key prefix, and clean up after themselves."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import falcon.testing
import psycopg2
import pytest
import redis as redis_lib
from PIL import Image
from sqlalchemy import text

from lumen import migrate
from lumen.app import Lumen, create_app
from lumen.config import load_settings
from lumen.db import make_engine
from lumen.plugins import make_plugin_manager

pytest_plugins = ["pytester"]

PG_ADMIN_URL = os.environ.get(
    "LUMEN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("LUMEN_TEST_REDIS", "redis://127.0.0.1:6379/15")
BACKENDS = os.environ.get("LUMEN_TEST_BACKENDS", "sqlite,postgresql").split(",")
# The suite's PostgreSQL runs behind PgBouncer with LUMEN_TEST_DB_POOL_CLASS=null
# (tests/test_reliability_hosts.py): every engine and app of the run gets that pool.
POOL_ENV = (
    {"DB_POOL_CLASS": os.environ["LUMEN_TEST_DB_POOL_CLASS"]}
    if os.environ.get("LUMEN_TEST_DB_POOL_CLASS")
    else {}
)
# Core tables, children first; plugins that own tables clean their own in their tests.
CORE_TABLES = ("tokens", "photos", "users", "maintenance", "owner_photo_counts", "photo_totals")


def pytest_collection_modifyitems(config, items):
    # The ten-minute soak and the long deployments run only when a marker expression names
    # them (pytest -m soak, pytest -m long): the ordinary run stays within its budget.
    for marker in ("soak", "long"):
        if marker in (config.option.markexpr or ""):
            continue
        chosen = [item for item in items if item.get_closest_marker(marker)]
        if chosen:
            config.hook.pytest_deselected(items=chosen)
            items[:] = [item for item in items if item not in chosen]
    for item in items:
        kinds = {"unit", "integration", "browser", "slow"}
        if not kinds & {mark.name for mark in item.iter_markers()}:
            uses_services = {"backend", "redis_url", "redis_client"} & set(item.fixturenames)
            item.add_marker(pytest.mark.integration if uses_services else pytest.mark.unit)


def _pg_database() -> tuple[str, callable]:
    name = f"lumen_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}", pytrace=False)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop():
        conn = psycopg2.connect(PG_ADMIN_URL)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", drop


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, tmp_path_factory):
    """(name, database URL, engine) of a migrated database for this test session."""
    if request.param == "postgresql":
        url, drop = _pg_database()
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "lumen.db")
        drop = None
    settings = load_settings({"DATABASE_URL": url, **POOL_ENV})
    engine = make_engine(settings)
    lumen = Lumen(settings, make_plugin_manager(None), engine)
    migrate.upgrade(lumen)
    yield request.param, url, engine
    engine.dispose()
    if drop:
        drop()


@pytest.fixture(params=BACKENDS)
def fresh_database(request, tmp_path):
    """(name, URL) of an empty database of its own, for tests that migrate, downgrade or
    serve from scratch; dropped afterwards."""
    if request.param == "postgresql":
        url, drop = _pg_database()
        yield request.param, url
        drop()
    else:
        yield request.param, "sqlite:///" + str(tmp_path / "fresh.db")


def service_env(**extra: str) -> dict[str, str]:
    """The process environment without any Lumen setting of the caller's, plus ``extra``."""
    prefixes = ("DB_", "LUMEN_", "DATABASE_", "REDIS_", "STORAGE_", "GUNICORN_", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, **extra}


def run_lumen(*args: str, env: dict[str, str], cwd, timeout: float = 120):
    """Run the ``lumen`` command in a process of its own (no state of this process changes)."""
    return subprocess.run(
        [sys.executable, "-c", "from lumen.cli import main; main()", *args],
        env=env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def environ(backend, tmp_path, redis_prefix) -> dict[str, str]:
    """The environment a test's app is built from; tests add to it before building the app."""
    return {
        "DATABASE_URL": backend[1],
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "none",
        "LOCATION_CACHE_SIZE": "0",
        # With REDIS_URL: the token cache's key, beside the test's prefix (not under it, where
        # the cache plugin's tests count their own keys); redis_client removes it.
        "TOKEN_CACHE_KEY": f"{redis_prefix}-tokens",
        **POOL_ENV,
    }


@pytest.fixture
def clean_db(backend):
    yield backend[2]
    with backend[2].begin() as conn:
        for table in CORE_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def make_app(environ, backend, clean_db):
    """Build an app from ``environ`` plus overrides, on the session's engine; plugin objects
    given as arguments (test-only plugins) are registered too."""
    apps = []

    def build(*extra_plugins, **overrides):
        settings = load_settings({**environ, **overrides})
        pm = make_plugin_manager(settings.enabled_plugins)
        for number, plugin in enumerate(extra_plugins):
            pm.register(plugin, name=f"extra{number}")
        app = create_app(settings, pm, engine=backend[2])
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.lumen.shutdown()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return falcon.testing.TestClient(app)


class Api:
    """A few steps most API tests need, through the public API."""

    def __init__(self, client):
        self.client = client
        self._count = 0

    def user(self, username=None, password="correct horse", display_name=None):
        self._count += 1
        username = username or f"user{self._count}_{uuid.uuid4().hex[:6]}"
        body = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        created = self.client.simulate_post("/api/v1/users", json=body)
        assert created.status_code == 201, created.text
        token = self.client.simulate_post(
            "/api/v1/tokens", json={"username": username, "password": password}
        )
        assert token.status_code == 201, token.text
        user = created.json
        user["token"] = token.json["token"]
        user["headers"] = {"Authorization": f"Bearer {user['token']}"}
        return user

    def upload(self, user, image: bytes | None = None, expect=201, **fields):
        image = image if image is not None else jpeg()
        body, content_type = multipart({"file": ("photo.jpg", image), **fields})
        result = self.client.simulate_post(
            "/api/v1/photos",
            body=body,
            headers={**user["headers"], "Content-Type": content_type},
        )
        assert result.status_code == expect, result.text
        return result.json


@pytest.fixture
def api(client):
    return Api(client)


def multipart(parts: dict) -> tuple[bytes, str]:
    """Encode form fields; a (filename, bytes) tuple is a file part."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in parts.items():
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data = value
            out.write(
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(str(value).encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


_seq = iter(range(1, 10**9))


def jpeg(width=64, height=48, exif=None, color=None, fmt="JPEG") -> bytes:
    """A real image; each call differs (colour) unless ``color`` is given."""
    n = next(_seq)
    color = color or (n % 256, (n // 256) % 256, (n * 7) % 256)
    image = Image.new("RGB", (width, height), color)
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(out, fmt, **kwargs)
    return out.getvalue()


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url():
    client = redis_lib.Redis.from_url(REDIS_TEST_URL, socket_timeout=2)
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: {exc}", pytrace=False)
    return REDIS_TEST_URL


@pytest.fixture
def redis_prefix():
    return f"lumentest:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_client(redis_url, redis_prefix):
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{redis_prefix}*", count=1000):
        client.delete(key)
    client.close()


# --- gunicorn --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _global_state_restored():
    """In-process CLI runs configure the root logger; the next test starts with it as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    added = [h for h in root.handlers if h not in handlers]
    for handler in [h for h in added if not type(h).__module__.startswith("_pytest")]:
        root.removeHandler(handler)
    root.setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc=None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


class Server:
    def __init__(self, proc, port, log_path, host="127.0.0.1"):
        self.proc, self.port, self.log_path, self.host = proc, port, log_path, host
        self.url = f"http://{host}:{port}"

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def gunicorn_server(tmp_path):
    """Start Lumen under gunicorn with a given environment; stopped after the test."""
    servers = []

    def start(
        env: dict[str, str], workers: int = 2, args=(), netns: str | None = None, host=None
    ) -> Server:
        """The access log is on, as it is by default. With ``PORT`` in ``env`` gunicorn binds
        where that setting says; otherwise LUMEN_BIND names a free port on 127.0.0.1. With
        ``netns``, gunicorn runs in that network namespace, bound to ``host``:8000."""
        port = 8000 if netns else int(env["PORT"]) if "PORT" in env else free_port()
        host = host or "127.0.0.1"
        log_path = tmp_path / f"gunicorn-{host}-{port}.log"
        full_env = {**service_env(), **env, "WEB_CONCURRENCY": str(workers)}
        if "PORT" not in env:
            full_env["LUMEN_BIND"] = f"{host}:{port}"
        cmd = [
            *(["ip", "netns", "exec", netns] if netns else []),
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:lumen.gunicorn_conf",
            *args,
            "lumen.wsgi:app",
        ]
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(tmp_path)
        )
        server = Server(proc, port, log_path, host)
        servers.append((server, log_file))
        try:
            wait_for_port(port, proc=proc, host=host)
        except Exception:
            raise RuntimeError("gunicorn did not start:\n" + server.log()) from None
        return server

    yield start
    for server, log_file in servers:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
        log_file.close()
