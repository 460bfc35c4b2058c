"""What the fault tests share: a redis-server of the test's own, a TCP proxy the test cuts, a
bounded request loop against a real server that records every answer, and users made straight
in the database (hashing a password takes half a second here; these tests need tokens, not
logins)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lumen.auth import issue_token
from lumen.models import Photo, User
from tests.conftest import free_port, jpeg, multipart, wait_for_port


def until(condition, what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class OwnRedis:
    """redis-server on a free port, without persistence unless a test saves a snapshot."""

    def __init__(self, directory, bind: str = "127.0.0.1"):
        self.port, self.directory, self.proc, self.bind = free_port(), directory, None, bind

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", self.bind]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
            # DEBUG SLEEP is how a test makes this server slow (its own server, never shared).
            + ["--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=10, proc=self.proc)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:  # a restart loading a snapshot answers LOADING for a moment
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class TcpProxy:
    """``listen``:<port> forwarded to a target. ``cut()`` drops every connection and then holds
    new ones open without an answer, like a database that stopped answering; ``refuse()`` drops
    every connection and closes each new one at once, like a server that is down;
    ``restore()`` drops the held ones and forwards again. With ``record``, what clients send
    is kept in ``sent``, to read what went over the wire."""

    def __init__(
        self,
        target: tuple[str, int],
        listen: str = "127.0.0.1",
        port: int = 0,
        record: bool = False,
    ):
        self.target = target
        self.sent = bytearray() if record else None
        self.listener = socket.create_server((listen, port))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._cut = self._refuse = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._open.add(client)
                if self._cut:
                    continue  # held: never answered until restore() drops it
                refused = self._refuse
            if refused:
                self._drop(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
            for source, sink, kept in ((client, upstream, self.sent), (upstream, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, kept), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, kept: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if kept is not None:
                    with self._lock:
                        kept += data
                sink.sendall(data)
        except OSError:
            pass
        self._drop(source)
        self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            self._drop(sock)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
        self._drop_all()

    def refuse(self) -> None:
        with self._lock:
            self._refuse = True
        self._drop_all()

    def restore(self) -> None:
        with self._lock:
            self._cut = self._refuse = False
        self._drop_all()

    def close(self) -> None:
        self._stopped.set()
        self._drop_all()
        self.listener.close()
        self._thread.join(timeout=5)


# --- requests over HTTP ---------------------------------------------------------------------------


CUT = -1  # the answer began and was cut short (its server died while sending it)


@dataclass
class Answer:
    label: str
    started: float
    elapsed: float
    status: int  # 0: no HTTP answer at all (refused, reset, timed out); CUT: cut short
    headers: dict = field(default_factory=dict)
    body: object = None


def request(base: tuple[str, int], method: str, path: str, body=None, headers=None, timeout=30):
    """One request on a connection of its own: (status, headers, parsed JSON or None)."""
    conn = http.client.HTTPConnection(*base, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        parsed = None
        if data and response.getheader("Content-Type", "").startswith("application/json"):
            parsed = json.loads(data)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        conn.close()


def json_request(base, method, path, payload=None, headers=None, timeout=30):
    body = json.dumps(payload) if payload is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    return request(base, method, path, body, headers, timeout)


def upload(base, user, image: bytes | None = None, timeout=60, **fields):
    body, content_type = multipart({"file": ("photo.jpg", image or jpeg()), **fields})
    headers = {**user["headers"], "Content-Type": content_type}
    return request(base, "POST", "/api/v1/photos", body, headers, timeout)


class Loop:
    """Threads that each call one of ``calls`` in turn until stopped, recording every answer
    (label, start, latency, status). Bounded: ``run(seconds)`` or ``start()``/``stop()``."""

    def __init__(self, calls: dict[str, Callable[[], tuple]], threads: int = 6):
        self.calls, self.threads = list(calls.items()), threads
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _work(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            label, call = self.calls[n % len(self.calls)]
            n += 1
            started = time.monotonic()
            try:
                status, headers, body = call()
            except OSError:
                status, headers, body = 0, {}, None  # no answer: refused, reset, timed out
            except http.client.HTTPException:
                status, headers, body = CUT, {}, None
            answer = Answer(label, started, time.monotonic() - started, status, headers, body)
            with self._lock:
                self.answers.append(answer)

    def start(self) -> Loop:
        self._stop.clear()
        self._workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def run(self, seconds: float) -> Loop:
        self.start()
        time.sleep(seconds)
        self.stop()
        return self

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to requests started in [start, end)."""
        with self._lock:
            return [a for a in self.answers if start <= a.started < end]


class Captions:
    """One writer's caption versions per photo, and reads checked against them: a read is stale
    when it shows a version older than one whose write had returned before the read began."""

    def __init__(self, base, owner, photo_ids):
        self.base, self.owner, self.photos = base, owner, list(photo_ids)
        self.written: dict[str, list[tuple[float, int]]] = {p: [(0.0, 0)] for p in self.photos}
        self.version = 0
        self.stale: list[float] = []  # when each stale read began
        self._lock = threading.Lock()
        self._photo_locks = {p: threading.Lock() for p in self.photos}
        self._turn = 0

    def write(self):
        with self._lock:
            self._turn += 1
            photo = self.photos[self._turn % len(self.photos)]
        # One write of a photo at a time, so its versions commit in the order they are numbered.
        with self._photo_locks[photo]:
            with self._lock:
                self.version += 1
                version = self.version
            status, headers, body = json_request(
                self.base,
                "PATCH",
                f"/api/v1/photos/{photo}",
                {"caption": f"v{version}"},
                self.owner["headers"],
            )
            if status == 200:
                with self._lock:
                    self.written[photo].append((time.monotonic(), version))
        return status, headers, body

    def check(self, started: float, photo: dict) -> None:
        if photo["id"] not in self.written:
            return
        seen = int((photo.get("caption") or "v0")[1:])
        with self._lock:
            due = max(v for returned, v in self.written[photo["id"]] if returned < started)
            if seen < due:
                self.stale.append(started)

    def read_one(self):
        with self._lock:
            self._turn += 1
            photo = self.photos[self._turn % len(self.photos)]
        started = time.monotonic()
        status, headers, body = request(self.base, "GET", f"/api/v1/photos/{photo}")
        if status == 200:
            self.check(started, body)
        return status, headers, body

    def read_list(self):
        started = time.monotonic()
        status, headers, body = request(self.base, "GET", "/api/v1/photos?limit=100")
        if status == 200:
            for photo in body:
                self.check(started, photo)
        return status, headers, body


# --- users, rows and files ------------------------------------------------------------------


def quick_user(engine, ttl_hours: int = 2) -> dict:
    """A user and a token, made in the database (no password hashing)."""
    with Session(engine) as session, session.begin():
        user = User(username=f"u{uuid.uuid4().hex[:12]}", password_hash="not used")
        session.add(user)
        session.flush()
        token, _ = issue_token(session, user, ttl_hours=ttl_hours)
        user_id = str(user.id)
    return {"id": user_id, "headers": {"Authorization": f"Bearer {token}"}}


def photo_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Photo))


def referenced_files(engine) -> set[str]:
    """Every sha256 a photo row refers to."""
    with engine.connect() as conn:
        rows = conn.execute(select(Photo.sha256, Photo.thumb_sha256, Photo.public_sha256)).all()
    return {sha for row in rows for sha in row if sha}


def stored_files(storage_path) -> set[str]:
    """Every file in the content-addressed tree (its name is its sha256)."""
    from pathlib import Path

    return {p.name for p in Path(storage_path).glob("??/??/*") if p.is_file()}


def temporary_files(storage_path) -> list:
    from pathlib import Path

    return sorted((Path(storage_path) / "tmp").glob("*"))


def connections(admin_url: str, application_name: str) -> list[tuple[str, str]]:
    """(state, query) of every server connection of one application name."""
    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT state, query FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            )
            return cur.fetchall()
    finally:
        conn.close()
