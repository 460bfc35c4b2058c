"""The release gate (`lumen loadtest`): it passes a correct deployment with zero failures and
fails, naming the broken threshold, when a threshold is impossible, when the server answers
wrong bodies, and when it is down; `--workers 2` makes one merged report.

Latency on a shared test machine says nothing about a release: the passing runs hold every
failure ratio of the default thresholds to zero but allow 60 s of latency, and the failing runs
break thresholds no machine can meet (0 ms, a million requests a second), so load on the
machine can neither fail a pass nor pass a failure."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import tomllib
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon.testing
import pytest

from lumen.app import create_app
from lumen.config import load_settings
from lumen.loadtest import thresholds as gate
from lumen.plugins import make_plugin_manager
from tests.conftest import PG_ADMIN_URL, REDIS_TEST_URL, free_port, run_lumen, service_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "loadtests" / "thresholds.toml"


def write_thresholds(path: Path, data: dict) -> Path:
    lines = []
    for table in ("total", "every_request"):
        lines.append(f"[{table}]")
        lines += [f"{key} = {value}" for key, value in data.get(table, {}).items()]
    for name, limits in data.get("requests", {}).items():
        lines.append(f'[requests."{name}"]')
        lines += [f"{key} = {value}" for key, value in limits.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def generous(path: Path) -> Path:
    """The default thresholds with every latency limit at 60 s and the rate at 0.1/s: what a
    loaded machine cannot break, while every failure ratio stays as strict as the defaults."""
    data = tomllib.loads(DEFAULTS.read_text())
    for table in [data["total"], data["every_request"], *data["requests"].values()]:
        for key in table:
            if key.endswith("_ms"):
                table[key] = 60_000
            if key == "min_requests_per_s":
                table[key] = 0.1
    return write_thresholds(path, data)


def loadtest(*args: str, tmp_path, timeout: float = 300):
    env = service_env(LUMEN_LOADTEST_PG=PG_ADMIN_URL, LUMEN_LOADTEST_REDIS=REDIS_TEST_URL)
    return run_lumen("loadtest", *args, env=env, cwd=ROOT, timeout=timeout)


def broken(done) -> list[str]:
    return [line.split("broken: ", 1)[1] for line in done.stderr.splitlines() if "broken: " in line]


def stats(report: Path) -> dict[str, dict]:
    entries = json.loads((report / "locust.json").read_text())
    return {f"{entry['method']} {entry['name']}": entry for entry in entries}


def charts_of(html: str) -> list[dict]:
    """The history the report's charts are drawn from (requests/s, response times, users)."""
    start = html.index('"history": [') + len('"history": ')
    history, _ = json.JSONDecoder().raw_decode(html[start:])
    return history


# --- unit: the thresholds file and the verdict ---------------------------------------------------


@pytest.mark.unit
def test_default_thresholds_load_and_hold_failures_to_zero():
    limits = gate.load(DEFAULTS)
    assert limits["total"]["max_failure_ratio"] == 0
    assert limits["every_request"]["max_failure_ratio"] == 0
    assert {"max_p95_ms", "max_p99_ms"} <= set(limits["every_request"])
    assert limits["total"]["min_requests_per_s"] > 0


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, message",
    [
        ("[total]\nmax_p95 = 3\n", "[total] max_p95: unknown"),
        ("[every_request]\nmax_p95_ms = -1\n", "[every_request] max_p95_ms: must be a number"),
        ('[requests."GET /x"]\nmin_requests = "many"\n', '[requests."GET /x"] min_requests'),
        ("[totals]\n", "unknown table [totals]"),
        ("[total\n", "thresholds.toml: "),
    ],
)
def test_bad_thresholds_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    with pytest.raises(gate.ThresholdsError) as caught:
        gate.load(path)
    assert message in str(caught.value)


@pytest.mark.unit
def test_verdict_names_each_broken_threshold():
    limits = {
        "total": {"max_failure_ratio": 0.0, "min_requests_per_s": 5},
        "every_request": {"max_p95_ms": 100},
        "requests": {"GET /never": {"min_requests": 1}},
    }
    total = gate.Row("total", 100, 1, 4.0, 50, 90)
    rows = [gate.Row("GET /a", 60, 0, 2.0, 150, 200), gate.Row("GET /b", 40, 1, 2.0, 20, 30)]
    checks = gate.judge(limits, total, rows)
    problems = [c.problem for c in checks if not c.passed]
    assert problems == [
        "total failure ratio 1.00%, wanted ≤ 0.00%",
        "total requests/s 4.0, wanted ≥ 5.0",
        "GET /a p95 150 ms, wanted ≤ 100 ms",
        "GET /never requests: nothing measured, wanted ≥ 1",
    ]
    assert "GET /b p95" in gate.table(checks) and "FAIL" in gate.table(checks)


@pytest.mark.unit
def test_percentile_is_locusts():
    # Locust's own function, in a process of its own (importing Locust patches with gevent).
    buckets = {10: 90, 200: 9, 900: 1, 35: 7, 36: 3}
    code = (
        "import json, sys; from locust.stats import calculate_response_time_percentile as p; "
        f"b = {buckets!r}; print(json.dumps([p(b, 110, s) for s in (0.5, 0.95, 0.99, 0.999)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    expected = json.loads(done.stdout)
    mine = {str(k): v for k, v in buckets.items()}
    assert [gate.percentile(mine, 110, s) for s in (0.5, 0.95, 0.99, 0.999)] == expected
    assert expected[1] == 200  # a spread the test can tell apart
    assert gate.percentile({}, 0, 0.95) is None


# --- prepare -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_prepare_makes_members_with_tokens_and_public_photos(fresh_database, tmp_path):
    _, url = fresh_database
    env = service_env(
        DATABASE_URL=url,
        STORAGE_PATH=str(tmp_path / "storage"),
        LUMEN_PLUGINS="none",
        LUMEN_OPEN_REGISTRATION="false",  # members do not sign up: prepare creates them
    )
    assert run_lumen("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    out = tmp_path / "data.json"
    done = run_lumen(
        "loadtest", "prepare", "--members", "3", "--photos", "12", "--out", str(out),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert len(data["members"]) == 3 and data["photos"]
    for member in data["members"]:
        assert member["token"] not in done.stdout + done.stderr
    assert data["origin"] == "http://localhost:3000"  # the development default allows it
    settings = load_settings(env)
    app = create_app(settings, make_plugin_manager(settings.enabled_plugins))
    client = falcon.testing.TestClient(app)
    owners = set()
    for member in data["members"]:
        headers = {"Authorization": f"Bearer {member['token']}"}
        mine = client.simulate_get(f"/api/v1/users/{member['id']}/photos", headers=headers)
        assert mine.status_code == 200
        owners |= {photo["owner_id"] for photo in mine.json}
    assert owners <= {member["id"] for member in data["members"]}
    for photo_id in data["photos"]:
        photo = client.simulate_get(f"/api/v1/photos/{photo_id}")  # anonymous
        assert photo.status_code == 200 and photo.json["visibility"] == "public"
        assert photo.json["owner_id"] in owners
    app.lumen.shutdown()


# --- the gate against real and broken servers ---------------------------------------------------


@pytest.mark.slow
def test_fresh_local_deployment_passes_with_zero_failures(tmp_path):
    report = tmp_path / "report"
    done = loadtest(
        "--users", "8", "--spawn-rate", "8", "--run-time", "15s", "--members", "6",
        "--photos", "40", "--report", str(report),
        "--thresholds", str(generous(tmp_path / "t.toml")), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PostgreSQL, Redis, every plugin" in done.stdout
    assert "release gate passed" in done.stdout
    measured = stats(report)
    assert sum(e["num_failures"] for e in measured.values()) == 0
    for name in (
        "GET /api/v1/photos",
        "GET /api/v1/photos/{id}",
        "GET /api/v1/photos/{id}/image",
        "GET /api/v1/locations?q=",
        "POST /api/v1/photos",
        "GET /api/v1/users/{id}/photos",
        "GET /livez",
        "GET /readyz",
        "GET /health",
    ):
        assert measured[name]["num_requests"] > 0, name
    html = (report / "report.html").read_text()
    history = charts_of(html)
    # A point every few seconds of the run, with every user in the last ones.
    assert len(history) >= 2 and max(point["user_count"][1] for point in history) == 8
    for chart in ("Total Requests per Second", "Response Times", "Number of Users"):
        assert chart in html
    assert (report / "locust_stats.csv").exists() and (report / "locust_failures.csv").exists()


@pytest.mark.slow
@pytest.mark.long
def test_without_postgresql_and_redis_the_local_deployment_is_sqlite(tmp_path):
    closed = free_port()  # nothing listens there: neither answers
    env = service_env(
        LUMEN_LOADTEST_PG=f"postgresql://postgres@127.0.0.1:{closed}/postgres",
        LUMEN_LOADTEST_REDIS=f"redis://127.0.0.1:{closed}/0",
    )
    report = tmp_path / "report"
    done = run_lumen(
        "loadtest", "--users", "6", "--spawn-rate", "6", "--run-time", "10s", "--members", "3",
        "--photos", "20", "--report", str(report),
        "--thresholds", str(generous(tmp_path / "t.toml")), env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SQLite, no Redis, every plugin" in done.stdout
    measured = stats(report)
    assert measured["GET /api/v1/locations?q="]["num_requests"] > 0
    assert sum(e["num_failures"] for e in measured.values()) == 0


@pytest.mark.slow
@pytest.mark.long
def test_impossible_thresholds_fail_the_gate_naming_them(tmp_path):
    impossible = write_thresholds(
        tmp_path / "impossible.toml",
        {
            "total": {"max_failure_ratio": 0.0, "min_requests_per_s": 1_000_000},
            "requests": {"GET /api/v1/photos": {"max_p95_ms": 0}},
        },
    )
    done = loadtest(
        "--users", "3", "--run-time", "8s", "--members", "2", "--photos", "10",
        "--report", str(tmp_path / "r"), "--thresholds", str(impossible), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    problems = broken(done)
    assert any(p.startswith("total requests/s ") and "wanted ≥ 1000000.0" in p for p in problems)
    assert any(p.startswith("GET /api/v1/photos p95 ") for p in problems)
    assert not any("failure ratio" in p for p in problems), problems  # the server was right
    assert (tmp_path / "r" / "report.html").exists()


@pytest.mark.slow
@pytest.mark.long
def test_distributed_run_with_two_workers_makes_one_merged_report(tmp_path):
    report = tmp_path / "report"
    done = loadtest(
        "--workers", "2", "--users", "6", "--spawn-rate", "6", "--run-time", "12s",
        "--members", "4", "--photos", "30", "--report", str(report),
        "--thresholds", str(generous(tmp_path / "t.toml")), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    master = (report / "locust-master.log").read_text()
    assert "2 workers connected" in master
    assert "to 2 ready workers" in master
    for number in (1, 2):
        assert (
            "Got quit message from master" in (report / f"locust-worker-{number}.log").read_text()
        )
    assert sorted(p.name for p in report.glob("*.html")) == ["report.html"]
    measured = stats(report)
    # One set of statistics: both workers' users (6, on two workers) in one report.
    history = charts_of((report / "report.html").read_text())
    assert max(point["user_count"][1] for point in history) == 6
    assert sum(e["num_requests"] for e in measured.values()) > 0
    assert sum(e["num_failures"] for e in measured.values()) == 0


def fake_data(path: Path, plugins=("locations", "health")) -> Path:
    path.write_text(
        json.dumps(
            {
                "members": [{"id": str(uuid.uuid4()), "token": "not-a-real-token"}],
                "photos": [str(uuid.uuid4()) for _ in range(3)],
                "plugins": list(plugins),
                "origin": None,
            }
        )
    )
    return path


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request, client_address):
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


def wrong_server(environ, start_response):
    """Statuses right, bodies wrong: city search finds nothing, a photo comes back with
    another id; everything else as Lumen would answer."""
    path = environ["PATH_INFO"]
    body, status = {}, "200 OK"
    if path == "/api/v1/locations":
        body = {"results": []}
    elif path.startswith("/api/v1/photos/") and path.count("/") == 4:
        body = {"id": str(uuid.uuid4()), "visibility": "public", "urls": {"thumbnail": "/t"}}
    elif path == "/api/v1/photos":
        body = []
    elif path in ("/health", "/livez", "/readyz"):
        body = {"status": "pass"}
    else:
        body, status = {"title": "Not found"}, "404 Not Found"
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if path == "/api/v1/photos":
        headers.append(("X-Total-Count", "0"))
    start_response(status, headers)
    return [data]


@pytest.mark.slow
def test_wrong_bodies_fail_the_gate(tmp_path):
    server = make_server(
        "127.0.0.1", free_port(), wrong_server, server_class=ThreadingServer, handler_class=Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = loadtest(
            f"http://127.0.0.1:{server.server_port}", "--data", str(fake_data(tmp_path / "d")),
            "--users", "4", "--run-time", "6s", "--report", str(tmp_path / "r"),
            "--thresholds", str(generous(tmp_path / "t.toml")), tmp_path=tmp_path,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert done.returncode == 1, done.stdout[-3000:]
    problems = broken(done)
    assert any(p.startswith("GET /api/v1/locations?q= failure ratio 100.00%") for p in problems)
    assert any(p.startswith("GET /api/v1/photos/{id} failure ratio 100.00%") for p in problems)
    assert any(p.startswith("total failure ratio") for p in problems)
    assert "GET /livez failure ratio" not in " ".join(problems)  # right answers pass
    assert "no city for " in done.stdout
    assert "asked for photo " in done.stdout


@pytest.mark.slow
def test_server_down_fails_the_gate(tmp_path):
    done = loadtest(
        f"http://127.0.0.1:{free_port()}", "--data", str(fake_data(tmp_path / "d")),
        "--users", "3", "--run-time", "4s", "--report", str(tmp_path / "r"),
        "--thresholds", str(generous(tmp_path / "t.toml")), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    problems = broken(done)
    assert any(p.startswith("total failure ratio 100.00%") for p in problems), problems
    assert any(p.startswith("GET /livez failure ratio 100.00%") for p in problems)
    assert "no answer: ConnectionRefusedError" in done.stdout


@pytest.mark.unit
def test_missing_data_file_and_bad_run_time_stop_with_one_line(tmp_path):
    env = service_env()
    done = run_lumen(
        "loadtest", "http://127.0.0.1:9", "--data", str(tmp_path / "none.json"),
        env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "none.json" in done.stderr and "lumen loadtest prepare" in done.stderr
    done = run_lumen("loadtest", "--run-time", "soon", env=env, cwd=ROOT)
    assert done.returncode == 2 and "--run-time" in done.stderr
