"""`lumen serve` on the embedded default, and gunicorn's start-up checks."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow


def clean_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "LUMEN_", "DATABASE_", "REDIS_", "STORAGE_"))
    }
    return {**env, **extra}


def worker_pids(master_pid: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True
    ).stdout
    return {int(p) for p in out.split()}


def test_lumen_serve_on_the_embedded_default(tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lumen.cli import main; main()",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        env=clean_env(LUMEN_PLUGINS="none"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/photos", timeout=10) as r:
            assert r.status == 200
            assert json.loads(r.read()) == []
            assert r.headers["X-Total-Count"] == "0"
        assert (tmp_path / "lumen.db").exists()  # the embedded database, migrated
        deadline = time.monotonic() + 30  # workers boot one after the other

        def booted() -> bool:
            # Both forked and both apps built: a SIGTERM that reaches gunicorn while it is
            # still spawning a worker can leave that worker behind, and the master waiting.
            ready = (tmp_path / "serve.log").read_text(errors="replace").count("app ready")
            return len(worker_pids(proc.pid)) >= 2 and ready >= 2

        while not booted() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert booted()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_a_bad_setting_stops_gunicorn_with_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:lumen.gunicorn_conf",
            "lumen.wsgi:app",
        ],
        cwd=tmp_path,
        env=clean_env(DB_POOL_SIZE="abc", LUMEN_BIND=f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "lumen: invalid setting DB_POOL_SIZE='abc': not a valid integer" in done.stderr


def test_lumen_serve_stops_on_a_bad_worker_count_with_one_line(tmp_path):
    # gunicorn reads WEB_CONCURRENCY itself when it is imported: `lumen serve` checks it first.
    done = subprocess.run(
        [sys.executable, "-c", "from lumen.cli import main; main()", "serve"],
        cwd=tmp_path,
        env=clean_env(WEB_CONCURRENCY="x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    line = "lumen: invalid setting WEB_CONCURRENCY='x': not a valid integer"
    assert done.stderr.strip().splitlines() == [line]


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("WEB_CONCURRENCY", "0", "must be greater than or equal to 1"),
        ("GUNICORN_WORKER_CLASS", "eventlet", "must be one of: sync, gthread"),
        ("GUNICORN_TIMEOUT", "soon", "not a valid integer"),
        ("PORT", "70000", "must be greater than or equal to 1 and less than or equal to 65535"),
    ],
)
def test_a_bad_server_setting_stops_gunicorn_with_one_line(tmp_path, variable, value, rule):
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "python:lumen.gunicorn_conf"]
        + ["lumen.wsgi:app"],
        cwd=tmp_path,
        env=clean_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lumen: invalid setting {variable}={value!r}: {rule}"
    ]


def test_serve_refuses_a_bad_setting(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from lumen.cli import main; main()", "serve"],
        cwd=tmp_path,
        env=clean_env(ENVIRONMENT="prod"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lumen: invalid setting ENVIRONMENT='prod': "
        "must be one of: development, staging, production"
    )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_tls_straight_from_gunicorn(tmp_path, gunicorn_server, environ, clean_db):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = gunicorn_server(
        {
            **environ,
            "LUMEN_TLS_CERT": str(cert),
            "LUMEN_TLS_KEY": str(key),
        },
        workers=1,
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    url = f"https://127.0.0.1:{server.port}/openapi.json"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.status == 200
        assert json.loads(answer.read())["info"]["title"] == "Lumen"
    photos = f"https://127.0.0.1:{server.port}/api/v1/photos"
    with urllib.request.urlopen(photos, context=context, timeout=10) as answer:
        assert (answer.status, json.loads(answer.read())) == (200, [])  # from PostgreSQL
    with pytest.raises(OSError):  # plain HTTP is not served on that port (no answer)
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/openapi.json", timeout=10)
