"""Faults under load: a bounded request loop (threads, a few seconds) against a real gunicorn
with two workers while Redis stops, stalls and comes back empty, PostgreSQL goes away behind a
proxy, a worker is SIGKILLed mid-upload, the disk fills mid-upload and the database role is at
its connection limit. Each test prints its figures (docs/reliability.md quotes them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from urllib.parse import urlsplit

import psutil
import psycopg2
import pytest

from tests.conftest import PG_ADMIN_URL, run_lumen, service_env
from tests.faults import (
    Captions,
    Loop,
    OwnRedis,
    TcpProxy,
    connections,
    json_request,
    photo_rows,
    quick_user,
    referenced_files,
    request,
    stored_files,
    temporary_files,
    until,
    upload,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
postgresql_only = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def figures(name: str, answers, **extra) -> None:
    """One line per fault, for docs/reliability.md."""
    if answers:
        failed = sum(a.status == 0 or a.status >= 500 for a in answers)
        slowest = max(a.elapsed for a in answers)
        extra = {"sent": len(answers), "failed": failed, "max_s": f"{slowest:.3f}", **extra}
    print(f"\nFIGURES {name}: " + " ".join(f"{k}={v}" for k, v in extra.items()))


def access_log(server) -> list[dict]:
    """The server's JSON access lines."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith('{"remote"')]


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# --- Redis --------------------------------------------------------------------------------------

REDIS_TIMEOUT_MS = 50
# What a request may take beyond REDIS_TIMEOUT_MS while Redis stalls, on a busy 2-core machine:
# a request makes a few Redis calls before the breaker opens, each cut at the timeout.
SLOW_REDIS_BOUND_S = 1.5


@postgresql_only
def test_redis_stopped_stalled_and_restarted_empty_fails_no_request_and_serves_nothing_stale(
    backend, clean_db, own_redis, gunicorn_server, environ, redis_prefix
):
    server = gunicorn_server(
        {
            **environ,
            "LUMEN_PLUGINS": "cache",
            "REDIS_URL": own_redis.url,
            "REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
            "CACHE_KEY_PREFIX": redis_prefix,
            "CACHE_BREAKER_FAILURES": "3",
            "CACHE_BREAKER_COOLDOWN_S": "0.5",
        },
        workers=2,
    )
    base = ("127.0.0.1", server.port)
    owner = quick_user(backend[2])
    ids = [upload(base, owner, caption="v0")[2]["id"] for _ in range(3)]
    captions = Captions(base, owner, ids)
    loop = Loop(
        {
            "write": captions.write,
            "photo": captions.read_one,
            "list": captions.read_list,
            "photo again": captions.read_one,
        },
        threads=6,
    ).start()
    windows: dict[str, tuple[float, float]] = {}

    def fault(name: str, begin, end=None, seconds: float = 3.0) -> None:
        started = time.monotonic()
        begin()
        time.sleep(seconds)
        if end:
            end()
        windows[name] = (started, time.monotonic())
        time.sleep(2.0)  # settle, under load

    def debug_sleep():
        # DEBUG SLEEP blocks the server itself: every client waits, CLIENT PAUSE or not.
        threading.Thread(
            target=lambda: own_redis.client().execute_command("DEBUG", "SLEEP", "2.5"),
            daemon=True,
        ).start()

    try:
        time.sleep(2.0)
        fault("stopped", own_redis.kill, own_redis.start)  # restarted with its data lost
        fault("debug sleep", debug_sleep)
        fault("client pause", lambda: own_redis.client().client_pause(2500, all=True))
        time.sleep(1.0)
    finally:
        loop.stop()
    # Once Redis answers again (plus the renewal of a writer that lost a purge), nothing stale.
    settle = 1.0
    late_stale = [
        t
        for t in captions.stale
        if not any(start <= t < end + settle for start, end in windows.values())
    ]
    answers = loop.answers
    assert {a.status for a in answers} == {200}, [
        (a.label, a.status) for a in answers if a.status != 200
    ][:10]
    assert late_stale == []
    for name in ("debug sleep", "client pause"):
        slow = loop.between(*windows[name])
        assert slow
        worst = max(a.elapsed for a in slow)
        assert worst < REDIS_TIMEOUT_MS / 1000 + SLOW_REDIS_BOUND_S, (name, worst)
    # The last writes are read back, through both workers (each photo four times).
    stale_before = len(captions.stale)
    for photo in ids * 4:
        started = time.monotonic()
        _, _, body = request(base, "GET", f"/api/v1/photos/{photo}")
        captions.check(started, body)
    assert len(captions.stale) == stale_before
    for name, (start, end) in windows.items():
        during = loop.between(start, end)
        figures(
            f"redis {name}",
            during,
            stale_in_window=sum(start <= t < end + settle for t in captions.stale),
        )
    figures("redis whole run", answers, stale_after=len(late_stale), writes=captions.version)


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def pg_behind_proxy(backend):
    """The session's PostgreSQL database through a proxy the test cuts, under an
    application_name of its own (to find its connections in pg_stat_activity)."""
    url = urlsplit(backend[1])
    proxy = TcpProxy((url.hostname, url.port or 5432))
    name = f"lumen-rel-{uuid.uuid4().hex[:8]}"
    database_url = f"postgresql://postgres@127.0.0.1:{proxy.port}{url.path}?application_name={name}"
    yield proxy, database_url, name, PG_ADMIN_URL
    proxy.close()


@postgresql_only
def test_postgresql_away_is_503_with_retry_after_only_while_away_and_the_pool_recovers(
    backend, clean_db, pg_behind_proxy, gunicorn_server, environ
):
    proxy, database_url, name, admin = pg_behind_proxy
    connect_timeout, pool_size, workers = 2, 2, 2
    server = gunicorn_server(
        {
            **environ,
            "DATABASE_URL": database_url,
            "DB_POOL_SIZE": str(pool_size),
            "DB_MAX_OVERFLOW": "2",
            "DB_CONNECT_TIMEOUT": str(connect_timeout),
        },
        workers=workers,
    )
    base = ("127.0.0.1", server.port)
    owner = quick_user(backend[2])
    ids = [upload(base, owner, caption="v0")[2]["id"] for _ in range(2)]
    captions = Captions(base, owner, ids)
    loop = Loop(
        {"write": captions.write, "photo": captions.read_one, "list": captions.read_list},
        threads=6,
    ).start()
    windows = {}
    try:
        time.sleep(2.0)
        for name_, begin in (("down", proxy.refuse), ("not answering", proxy.cut)):
            started = time.monotonic()
            begin()
            time.sleep(4.0)
            proxy.restore()
            windows[name_] = (started, time.monotonic())
            time.sleep(3.0)
    finally:
        loop.stop()

    answers = loop.answers
    # A request overlapping a window (begun before it ends, answered after it began) may meet
    # the fault; every other one must not.
    inside = [
        a
        for a in answers
        if any(a.started < e and a.started + a.elapsed >= s for s, e in windows.values())
    ]
    outside = [a for a in answers if a not in inside]
    assert {a.status for a in inside} <= {200, 503}
    assert all(a.headers.get("retry-after") == "5" for a in inside if a.status == 503)
    assert any(a.status == 503 for a in inside)
    # Recovery: the first checkout after the restore pre-pings and reconnects.
    recovery = {}
    for window, (_, end) in windows.items():
        after = [a for a in outside if end <= a.started < end + 3.0]
        failed_after = [a.started - end for a in after if a.status != 200]
        recovery[window] = max(failed_after, default=0.0)
        assert recovery[window] < 1.5, (window, failed_after)
    assert all(a.status == 200 for a in outside if a.started < windows["down"][0])
    # A server that takes the connection and never answers costs a request DB_CONNECT_TIMEOUT,
    # not the worker's timeout (what a client waits adds its turn in the queue of two workers).
    worst_503_s = max(
        entry["duration_us"] / 1e6 for entry in access_log(server) if entry["status"] == 503
    )
    assert connect_timeout - 0.1 < worst_503_s < connect_timeout + 1.0
    assert captions.stale == []
    # Back to idle: no connection left checked out or in a transaction, none beyond the pools.
    until(
        lambda: all(state == "idle" for state, _ in connections(admin, name)),
        f"connections not idle: {connections(admin, name)}",
        timeout=10,
    )
    left = connections(admin, name)
    assert 1 <= len(left) <= workers * pool_size
    for window, (start, end) in windows.items():
        during = loop.between(start, end)
        figures(
            f"postgresql {window}",
            during,
            answered_503=sum(a.status == 503 for a in during),
            recovery_s=f"{recovery[window]:.2f}",
        )
    figures(
        "postgresql whole run",
        answers,
        connections_after=len(left),
        slowest_503_in_server_s=f"{worst_503_s:.2f}",
    )


@pytest.fixture
def limited_role():
    """A role of the test's own with CONNECTION LIMIT 2, owning a fresh database (the shared
    server's max_connections is untouched)."""
    role = f"lumen_rel_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 2')
        cur.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgres@", f"{role}@")
    yield role, f"{base}/{role}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)')
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
    admin.close()


def test_at_the_connection_limit_requests_are_503s_with_a_clear_log_line_never_a_hang(
    limited_role, gunicorn_server, tmp_path
):
    role, url = limited_role
    env = {"DATABASE_URL": url, "STORAGE_PATH": str(tmp_path / "storage"), "LUMEN_PLUGINS": "none"}
    migrated = run_lumen("db", "upgrade", env=service_env(**env), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    pool_timeout = 1.0
    # 2 workers x (2 pooled + 2 overflow) = 8 connections wanted, 2 allowed.
    server = gunicorn_server(
        {
            **env,
            "GUNICORN_WORKER_CLASS": "gthread",
            "GUNICORN_THREADS": "4",
            "DB_POOL_SIZE": "2",
            "DB_MAX_OVERFLOW": "2",
            "DB_POOL_TIMEOUT": str(pool_timeout),
        },
        workers=2,
    )
    base = ("127.0.0.1", server.port)
    loop = Loop({"list": lambda: request(base, "GET", "/api/v1/photos")}, threads=10).run(6.0)
    answers = loop.answers
    assert {a.status for a in answers} <= {200, 503}
    assert any(a.status == 503 for a in answers) and any(a.status == 200 for a in answers)
    assert all(a.headers.get("retry-after") == "5" for a in answers if a.status == 503)
    slowest = max(a.elapsed for a in answers)
    assert slowest < pool_timeout + 2.0
    log = server.log()
    # The line names the cause in the server's words.
    assert 'database unavailable: connection to server at "127.0.0.1", port 5432 failed' in log
    assert f'too many connections for role "{role}"' in log
    figures("connection limit", answers, answered_503=sum(a.status == 503 for a in answers))


# --- uploads: a worker killed, the disk full ------------------------------------------------------


def noise_jpeg(side: int = 300, seed: int = 0) -> bytes:
    """A JPEG that does not compress: about 3 bytes a pixel at quality 95."""
    import io

    from PIL import Image

    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def worker_holding(server, client_port: int) -> list[int]:
    """The pid of the gunicorn worker whose socket is the other end of ``client_port``."""
    for child in psutil.Process(server.proc.pid).children():
        try:
            for conn in child.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == client_port:
                    return [child.pid]
        except psutil.NoSuchProcess:
            continue
    return []


def storage_check_fix(env, cwd) -> str:
    """``lumen storage check --fix`` once the grace period has passed for what is left."""
    for path in temporary_files(env["STORAGE_PATH"]) + [
        p for p in (cwd / "storage").glob("??/??/*")
    ]:
        old = time.time() - 7200
        os.utime(path, (old, old))
    fixed = run_lumen("storage", "check", "--fix", env=service_env(**env), cwd=cwd)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    return fixed.stdout


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"], indirect=True)
def test_a_worker_killed_mid_upload_leaves_no_photo_and_no_orphan_after_the_check(
    backend, clean_db, gunicorn_server, environ, tmp_path
):
    server = gunicorn_server(environ, workers=2)
    base = ("127.0.0.1", server.port)
    owner, other = quick_user(backend[2]), quick_user(backend[2])
    loop = Loop({"upload": lambda: upload(base, other, noise_jpeg(64))}, threads=3).start()
    try:
        image = noise_jpeg(600)
        from tests.conftest import multipart

        body, content_type = multipart({"file": ("slow.jpg", image), "caption": "never"})
        slow = socket.create_connection(base, timeout=30)
        head = (
            f"POST /api/v1/photos HTTP/1.1\r\nHost: x\r\n{_auth(owner)}"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        slow.sendall(head.encode() + body[: len(body) // 2])
        # A worker takes it and streams the file into a temporary file: kill it right then.
        holder = []
        until(
            lambda: holder.extend(worker_holding(server, slow.getsockname()[1])) or holder,
            "no worker took the upload",
        )
        time.sleep(0.5)
        os.kill(holder[0], signal.SIGKILL)
        with pytest.raises(OSError):
            slow.sendall(body[len(body) // 2 :])
            if not slow.recv(1):
                raise ConnectionResetError
        slow.close()
        time.sleep(2.0)  # uploads go on on the other worker and the one gunicorn starts anew
    finally:
        loop.stop()
    answers = loop.answers
    assert {a.status for a in answers} == {201}
    assert photo_rows(backend[2]) == len(answers)  # the killed upload made no row
    _, headers, page = request(
        base, "GET", f"/api/v1/users/{owner['id']}/photos", headers=owner["headers"]
    )
    assert page == [] and headers["x-total-count"] == "0"
    left_before = len(temporary_files(environ["STORAGE_PATH"]))
    assert stored_files(environ["STORAGE_PATH"]) == referenced_files(backend[2])
    report = storage_check_fix(environ, tmp_path)
    assert temporary_files(environ["STORAGE_PATH"]) == []
    assert stored_files(environ["STORAGE_PATH"]) == referenced_files(backend[2])
    assert photo_rows(backend[2]) == len(answers)
    figures(
        f"worker SIGKILL mid-upload ({backend[0]})",
        answers,
        temporary_left=left_before,
        rows_lost=0,
        check=report.strip().splitlines()[-1] if report.strip() else "",
    )


def _auth(user) -> str:
    return f"Authorization: {user['headers']['Authorization']}\r\n"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs as STORAGE_PATH, unmounted after the test (and after its gunicorn)."""
    directory = tmp_path / "storage"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], check=True)
    yield directory
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"], indirect=True)
def test_a_full_disk_mid_upload_is_507_and_leaves_nothing_written(
    backend, clean_db, small_disk, gunicorn_server, environ, tmp_path
):
    env = {**environ, "STORAGE_PATH": str(small_disk)}
    server = gunicorn_server(env, workers=2)
    base = ("127.0.0.1", server.port)
    users = [quick_user(backend[2]) for _ in range(3)]
    turn = iter(range(10**6))

    def one_upload():
        # About 250 KB each: the 2 MB fill after a handful, the last one mid-stream.
        return upload(base, users[next(turn) % 3], noise_jpeg(300))

    loop = Loop({"upload": one_upload}, threads=3).start()
    try:
        until(lambda: sum(a.status == 507 for a in loop.answers) >= 6, "never full", timeout=60)
    finally:
        loop.stop()
    answers = loop.answers
    assert {a.status for a in answers} == {201, 507}
    refused = [a for a in answers if a.status == 507]
    assert {a.body["description"] for a in refused} == {
        "file: the storage volume (STORAGE_PATH) is full"
    }
    created = [a.body["id"] for a in answers if a.status == 201]
    assert photo_rows(backend[2]) == len(created)
    # Nothing half-written: no temporary file, every file a row's and every row's file there.
    assert temporary_files(small_disk) == []
    assert stored_files(small_disk) == referenced_files(backend[2])
    for photo in created:
        status, _, _ = request(base, "GET", f"/api/v1/photos/{photo}/image")
        assert status == 200
    checked = run_lumen("storage", "check", env=service_env(**env), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Room made again: uploads succeed.
    for photo in created[:3]:
        owner = next(u for u in users if u["id"] == _owner(base, photo))
        assert (
            json_request(base, "DELETE", f"/api/v1/photos/{photo}", headers=owner["headers"])[0]
            == 204
        )
    assert upload(base, users[0], noise_jpeg(300))[0] == 201
    figures(f"disk full mid-upload ({backend[0]})", answers, answered_507=len(refused), rows_lost=0)


def _owner(base, photo_id) -> str:
    return request(base, "GET", f"/api/v1/photos/{photo_id}")[2]["owner_id"]
