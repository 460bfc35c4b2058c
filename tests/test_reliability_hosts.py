"""Two Lumen hosts behind HAProxy, each in a network namespace of its own (made and removed
here: `ip netns`, a veth pair, addresses in 10.200.0.0/16), sharing the machine's PostgreSQL
and Redis. Those listen on 127.0.0.1 only, so each host reaches them through forwarders in the
root namespace listening on its veth address; the shared services are never reconfigured.

A write through one host is never read stale through the other, a re-import empties the
location LRU of both, a rate limit holds across both, and a host killed mid-run costs no
request HAProxy can retry. Then one deployment behind a PgBouncer of the test's own."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import psutil
import pytest

from lumen.config import load_settings
from lumen.db import make_engine
from tests.conftest import (
    PG_ADMIN_URL,
    REDIS_TEST_URL,
    free_port,
    run_lumen,
    service_env,
    wait_for_port,
)
from tests.faults import (
    CUT,
    Loop,
    TcpProxy,
    json_request,
    quick_user,
    request,
    until,
    upload,
)
from tests.test_reliability_faults import figures, noise_jpeg

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

PLUGINS = "cache,locations,ratelimit,health"
SMALL = ["--dataset", "cities15000"]


class Host:
    """A network namespace joined to the root one by a veth pair: root side 10.200.N.1, the
    namespace's side 10.200.N.2, and forwarders on 10.200.N.1 to PostgreSQL and Redis."""

    def __init__(self, subnet: int, tag: str):
        self.netns, self.subnet = f"lumen-{tag}-{subnet}", subnet
        self.outside, self.inside = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
        self.veth = f"vl{tag}{subnet}"[:13]
        self.forwarders: list[TcpProxy] = []

    def make(self) -> None:
        ip = lambda *args: subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: E731
        inside = lambda *args: ip("netns", "exec", self.netns, "ip", *args)  # noqa: E731
        ip("netns", "add", self.netns)
        ip("link", "add", f"{self.veth}a", "type", "veth", "peer", "name", f"{self.veth}b")
        ip("link", "set", f"{self.veth}b", "netns", self.netns)
        ip("addr", "add", f"{self.outside}/24", "dev", f"{self.veth}a")
        ip("link", "set", f"{self.veth}a", "up")
        inside("addr", "add", f"{self.inside}/24", "dev", f"{self.veth}b")
        inside("link", "set", f"{self.veth}b", "up")
        inside("link", "set", "lo", "up")

    def forward(self, target: tuple[str, int]) -> int:
        """A port on this host's root-side address that reaches ``target``."""
        proxy = TcpProxy(target, listen=self.outside)
        self.forwarders.append(proxy)
        return proxy.port

    def remove(self) -> None:
        for proxy in self.forwarders:
            proxy.close()
        subprocess.run(["ip", "link", "del", f"{self.veth}a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


@pytest.fixture
def hosts():
    """Two namespaces; failing to make them fails the test (CI runs as root)."""
    tag = uuid.uuid4().hex[:3]
    first = random.randrange(1, 120) * 2
    made = [Host(first, tag), Host(first + 1, tag)]
    try:
        for host in made:
            host.make()
    except subprocess.CalledProcessError as exc:
        for host in made:
            host.remove()
        pytest.fail(f"cannot make a network namespace: {exc.stderr.decode()}", pytrace=False)
    yield made
    for host in made:
        host.remove()


HAPROXY = """
global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # A request whose server refused or dropped it before answering goes to the other one.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option forwardfor
frontend lumen
    bind 127.0.0.1:{port}
    default_backend hosts
backend hosts
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}
"""


@pytest.fixture
def haproxy(tmp_path):
    procs, logs = [], []

    def start(servers: list[tuple[str, int]]):
        port = free_port()
        lines = "\n".join(f"    server h{i} {h}:{p} check" for i, (h, p) in enumerate(servers))
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=port, servers=lines))
        logs.append(open(tmp_path / "haproxy.log", "wb"))
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=logs[-1]
        )
        procs.append(proc)
        until(lambda: _answers(("127.0.0.1", port)), "HAProxy never answered", timeout=30)
        return ("127.0.0.1", port)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
    for log in logs:
        log.close()


def _answers(base) -> bool:
    try:
        return request(base, "GET", "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def served_by(server, method: str, path_start: str) -> int:
    """How many requests this host answered (its JSON access log)."""
    count = 0
    for line in server.log().splitlines():
        if line.startswith('{"remote"'):
            entry = json.loads(line)
            count += entry["method"] == method and entry["path"].startswith(path_start)
    return count


def kill_host(server) -> None:
    """Take a host away at once: its gunicorn master and every worker, SIGKILL."""
    master = psutil.Process(server.proc.pid)
    for proc in [master, *master.children(recursive=True)]:
        proc.kill()
    server.proc.wait(timeout=10)


@pytest.mark.long
@pytest.mark.parametrize("fresh_database", ["postgresql"], indirect=True)
def test_two_hosts_behind_haproxy_share_cache_lru_and_limits_and_lose_no_retryable_request(
    fresh_database, hosts, gunicorn_server, haproxy, tmp_path, redis_prefix
):
    _, database_url = fresh_database
    db = urlsplit(database_url)
    redis = urlsplit(REDIS_TEST_URL)
    common = {
        "LUMEN_PLUGINS": PLUGINS,
        "STORAGE_PATH": str(tmp_path / "storage"),  # one file system: shared storage
        "CACHE_KEY_PREFIX": f"{redis_prefix}:cache",
        "RATE_LIMIT_KEY_PREFIX": f"{redis_prefix}:rl",
        "RATE_LIMIT_DEFAULT": "100000/minute",
        "RATE_LIMIT_UPLOAD": "6/minute",
        "TRUSTED_PROXIES": "10.200.0.0/16",
        "LOCATION_CACHE_SIZE": "100",
        "LOCATIONS_AUTO_IMPORT": "false",
    }
    root_env = {**common, "DATABASE_URL": database_url, "REDIS_URL": REDIS_TEST_URL}
    migrated = run_lumen("db", "upgrade", env=service_env(**root_env), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    imported = run_lumen(
        "locations", "import", *SMALL, "--min-population", "2000000",
        env=service_env(**root_env), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr

    servers = []
    for host in hosts:
        pg = host.forward((db.hostname, db.port or 5432))
        rd = host.forward((redis.hostname, redis.port or 6379))
        env = {
            **common,
            "DATABASE_URL": f"postgresql://postgres@{host.outside}:{pg}{db.path}",
            "REDIS_URL": f"redis://{host.outside}:{rd}{redis.path}",
        }
        servers.append(gunicorn_server(env, workers=2, netns=host.netns, host=host.inside))
    a, b = [(s.host, s.port) for s in servers]
    lb = haproxy([a, b])
    engine = make_engine(load_settings({"DATABASE_URL": database_url}))
    try:
        # 1. A write through one host, read at once through the other (photo and list).
        owners = [quick_user(engine) for _ in range(2)]
        photos = [upload(a, owner, noise_jpeg(48), caption="c0")[2]["id"] for owner in owners]
        stale = checked = 0
        for step in range(40):
            writer, reader = (a, b) if step % 2 else (b, a)
            photo, owner = photos[step % 2], owners[step % 2]
            for base in (a, b):  # both hosts have it cached
                request(base, "GET", f"/api/v1/photos/{photo}")
                request(base, "GET", "/api/v1/photos")
            caption = f"c{step + 1}"
            assert (
                json_request(
                    writer, "PATCH", f"/api/v1/photos/{photo}", {"caption": caption},
                    owner["headers"],
                )[0]
                == 200
            )  # fmt: skip
            one = request(reader, "GET", f"/api/v1/photos/{photo}")[2]
            listed = {p["id"]: p for p in request(reader, "GET", "/api/v1/photos")[2]}
            stale += (one["caption"] != caption) + (listed[photo]["caption"] != caption)
            checked += 2
        assert stale == 0
        figures("two hosts: write on one, read on the other", [], checked=checked, stale=stale)

        # 2. The location LRU of both emptied by a re-import without Berlin.
        def first(base):
            status, _, body = request(base, "GET", "/api/v1/locations?q=berl")
            assert status == 200, body
            return body["results"][0]["name"] if body["results"] else None

        for _ in range(10):  # every worker of both hosts has the answer in its LRU
            assert first(a) == first(b) == "Berlin"
        reimported = run_lumen(
            "locations", "import", *SMALL, "--min-population", "5000000",
            env=service_env(**root_env), cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert reimported.returncode == 0, reimported.stderr
        began, fresh = time.monotonic(), 0
        while fresh < 20:
            fresh = fresh + 1 if first(a) != "Berlin" and first(b) != "Berlin" else 0
            assert time.monotonic() - began < 15, "a host kept answering from its old LRU"
        emptied_s = time.monotonic() - began
        figures("two hosts: LRU after a re-import", [], emptied_within_s=f"{emptied_s:.2f}")

        # 3. One upload limit across both: 6 a minute, whichever host takes them.
        uploader = quick_user(engine)
        answers = [upload(lb, uploader, noise_jpeg(40))[0] for _ in range(12)]
        assert sorted(answers) == [201] * 6 + [429] * 6
        assert served_by(servers[0], "POST", "/api/v1/photos") >= 3
        assert served_by(servers[1], "POST", "/api/v1/photos") >= 3
        figures("two hosts: one rate limit", [], sent=12, allowed=answers.count(201))

        # 4. A host taken away mid-run: HAProxy retries what it can, no request fails.
        reads = Loop(
            {
                "photo": lambda: request(lb, "GET", f"/api/v1/photos/{photos[0]}"),
                "list": lambda: request(lb, "GET", "/api/v1/photos"),
                "search": lambda: request(lb, "GET", "/api/v1/locations?q=lon"),
            },
            threads=6,
        ).start()
        try:
            time.sleep(2.0)
            killed_at = time.monotonic()
            kill_host(servers[1])
            time.sleep(4.0)
        finally:
            reads.stop()
        # What HAProxy cannot retry: an answer the killed host had begun to send (gunicorn
        # writes the head and the body apart), at most one per worker of that host.
        cut = [x for x in reads.answers if x.status == CUT]
        failed = [(x.label, x.status) for x in reads.answers if x.status not in (200, CUT)]
        assert failed == []
        assert len(cut) <= 2
        assert len(reads.between(killed_at, killed_at + 4.0)) > 20
        figures(
            "two hosts: one host SIGKILLed mid-run",
            reads.answers,
            failed_retryable=len(failed),
            cut_mid_answer=len(cut),
        )
    finally:
        engine.dispose()


# --- PgBouncer ------------------------------------------------------------------------------------

PGBOUNCER = """
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 5
ignore_startup_parameters = extra_float_digits,options
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
admin_users = postgres
"""


@pytest.fixture
def pgbouncer(tmp_path_factory):
    """A pgbouncer of the test's own on a free port, transaction pooling, in front of the
    shared server. It refuses to run as root: it runs as nobody, from a folder nobody reads."""
    directory = tmp_path_factory.mktemp("pgbouncer")
    directory.chmod(0o777)
    for parent in directory.parents:
        if str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o005)
    port = free_port()
    (directory / "users.txt").write_text('"postgres" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(PGBOUNCER.format(port=port, directory=directory))
    for path in (config, directory / "users.txt"):
        path.chmod(0o644)
    proc = subprocess.Popen(
        ["pgbouncer", "-u", "nobody", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=15, proc=proc)
    except RuntimeError:
        log = (directory / "pgbouncer.log").read_text(errors="replace")
        pytest.fail(f"pgbouncer did not start: {log[-2000:]}", pytrace=False)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.long
def test_a_representative_part_of_the_suite_passes_behind_pgbouncer(pgbouncer, tmp_path):
    """Uploads, lists, the cache and health, run by pytest against PostgreSQL through
    PgBouncer in transaction pooling with DB_POOL_CLASS=null."""
    admin = PG_ADMIN_URL.replace(":5432/", f":{pgbouncer}/")
    env = {
        **service_env(),
        "LUMEN_TEST_PG_ADMIN": admin,
        "LUMEN_TEST_BACKENDS": "postgresql",
        "LUMEN_TEST_DB_POOL_CLASS": "null",
    }
    selection = [
        "tests/resources/test_photos.py",
        *(
            f"tests/plugins/test_cache.py::{name}"
            for name in (
                "test_a_photo_is_served_from_the_cache_until_it_changes",
                "test_lists_and_profiles_are_cached_per_viewer",
                "test_absent_rows_are_not_cached",
                "test_each_event_invalidates_exactly_the_entries_of_the_docs_table",
                "test_a_reader_that_loaded_the_old_row_cannot_store_it_after_the_write",
                "test_warm_up_loads_the_newest_public_photos_in_batches",
            )
        ),
        "tests/plugins/test_health.py::test_health_gathers_the_core_checks_in_the_ietf_shape",
        "tests/plugins/test_health.py::test_probes_skip_authentication_and_open_no_session",
        "tests/plugins/test_health.py::"
        "test_an_unreachable_database_fails_health_and_readyz_in_time_and_they_recover",
        "tests/test_pool.py::test_db_pool_class_null_opens_and_closes_a_connection_per_request",
    ]
    result = subprocess.run(
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cov",
         "-o", "addopts=", "-m", "not slow and not browser",
         *selection],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    summary = tail.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary
    print(f"\nFIGURES pgbouncer suite: {summary}")
