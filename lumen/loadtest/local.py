"""The local deployment ``lumen loadtest`` tests when it is given no URL: gunicorn with every
plugin, on a fresh database of its own (PostgreSQL and Redis when they answer, else SQLite and
no Redis), migrated and prepared, stopped and dropped at the end.

All Locust users come from 127.0.0.1, so the ``ratelimit`` plugin (on, like every plugin) would
answer most of them 429 at its default limits: this deployment sets limits far above what the
run can spend, knowingly. The plugin still does its full work on every request (one Redis
round trip), so its cost is in the figures."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_ADMIN_ENV = "LUMEN_LOADTEST_PG"
REDIS_ENV = "LUMEN_LOADTEST_REDIS"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
ORIGIN = "http://localhost:3000"  # allowed below, for the CORS scenario
LOAD_TEST_LIMITS = {
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_UPLOAD": "1000000/hour",
    "RATE_LIMIT_AUTH": "100000/minute",
}
# Settings of the caller's shell that would make this deployment something else than fresh.
_NOT_INHERITED = ("DB_", "LUMEN_", "DATABASE_", "REDIS_", "STORAGE_", "GUNICORN_", "CACHE_")
_NOT_INHERITED_NAMES = {"PORT", "ALLOWED_ORIGINS", "ENVIRONMENT", "CORS_ORIGIN_REGEX"}


class DeploymentError(Exception):
    """The local deployment could not be made (the message says which step, with its output)."""


@dataclass
class Deployment:
    url: str
    database: str  # "postgresql" or "sqlite"
    redis: bool
    data_path: Path


def _postgres_answers(admin_url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(admin_url, connect_timeout=2).close()
    except psycopg2.Error:
        return False
    return True


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lumen(*args: str, env: dict, log, timeout: float = 600) -> None:
    """Run a ``lumen`` command with the deployment's settings; its output goes to the log."""
    command = [sys.executable, "-c", "from lumen.cli import main; main()", *args]
    log.write(f"$ lumen {' '.join(args)}\n".encode())
    log.flush()
    done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        raise DeploymentError(f"`lumen {' '.join(args)}` failed (exit {done.returncode})")


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(f"gunicorn exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise DeploymentError(f"gunicorn did not answer /readyz within {timeout:.0f} s")


@contextlib.contextmanager
def deployment(
    folder: Path, members: int, photos: int, server_workers: int, echo=print
) -> Deployment:
    """Start the local deployment (its logs in ``folder``), yield it, then stop it and drop
    its database and Redis keys."""
    admin_url = os.environ.get(PG_ADMIN_ENV, PG_ADMIN_DEFAULT)
    redis_url = os.environ.get(REDIS_ENV, REDIS_DEFAULT)
    name = f"lumen_loadtest_{uuid.uuid4().hex[:10]}"
    prefix = f"lumen-loadtest:{name}"
    scratch = Path(tempfile.mkdtemp(prefix="lumen-loadtest-"))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_NOT_INHERITED) and key not in _NOT_INHERITED_NAMES
    }
    port = _free_port()
    env.update(
        LUMEN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(server_workers),
        STORAGE_PATH=str(scratch / "storage"),
        PROMETHEUS_MULTIPROC_DIR=str(scratch / "metrics"),
        ENVIRONMENT="development",
        ALLOWED_ORIGINS=ORIGIN,
        # Registration closed, as on many deployments: the members come from `prepare`.
        LUMEN_OPEN_REGISTRATION="false",
        LOCATIONS_AUTO_IMPORT="false",  # imported by `prepare`, before the run starts
        LOCATIONS_DATASET=os.environ.get("LOCATIONS_DATASET", "cities15000"),
        CACHE_KEY_PREFIX=f"{prefix}:cache",
        RATE_LIMIT_KEY_PREFIX=f"{prefix}:ratelimit",
        **LOAD_TEST_LIMITS,
    )
    postgres = _postgres_answers(admin_url)
    if postgres:
        import psycopg2

        connection = psycopg2.connect(admin_url, connect_timeout=5)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        env["DATABASE_URL"] = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{scratch / 'lumen.db'}"
    redis = _redis_answers(redis_url)
    if redis:
        env["REDIS_URL"] = redis_url
    data_path = scratch / "loadtest-data.json"
    log_path = Path(folder) / "server.log"
    Path(folder).mkdir(parents=True, exist_ok=True)
    echo(
        f"local deployment: gunicorn ({server_workers} workers), "
        f"{'PostgreSQL' if postgres else 'SQLite'}, {'Redis' if redis else 'no Redis'}, "
        f"every plugin, {env['LOCATIONS_DATASET']}; log in {log_path}"
    )
    proc = None
    with open(log_path, "wb") as log:
        try:
            _lumen("db", "upgrade", env=env, log=log)
            _lumen(
                "loadtest",
                "prepare",
                "--members",
                str(members),
                "--photos",
                str(photos),
                "--origin",
                ORIGIN,
                "--out",
                str(data_path),
                env=env,
                log=log,
            )
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:lumen.gunicorn_conf",
                "lumen.wsgi:app",
            ]
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc)
            yield Deployment(url, "postgresql" if postgres else "sqlite", redis, data_path)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _clean_up(
                admin_url if postgres else None, name, redis_url if redis else None, prefix, scratch
            )


def _clean_up(admin_url, name, redis_url, prefix, scratch: Path) -> None:
    """Drop what the deployment made: its database, its Redis keys (only those under its own
    prefix: the Redis may be shared), its files."""
    if admin_url:
        import psycopg2

        connection = psycopg2.connect(admin_url, connect_timeout=5)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    shutil.rmtree(scratch, ignore_errors=True)
