"""Maintenance mode: every worker refuses writes with 503 within a second of `lumen maintenance
on`, keeps serving reads, says so on /health, and serves writes again after `off`."""

from __future__ import annotations

import http.client
import json
import time
import uuid

import pytest
from click.testing import CliRunner

from lumen import maintenance_mode
from lumen.cli import Context, cli
from tests.conftest import run_lumen, service_env

MESSAGE = "Upgrading the database; back in ten minutes."
DEADLINE_S = 1.0
BATCH = 16  # requests on fresh connections: both workers answer some of them


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {**(headers or {}), "Content-Type": "application/json"}
            connection.request(method, path, body=payload, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            return answer.status, answer.headers, json.loads(data) if data else None
        finally:
            connection.close()


def new_user(client: Client) -> dict:
    name = f"mm_{uuid.uuid4().hex[:10]}"
    status, _, user = client.request(
        "POST", "/api/v1/users", {"username": name, "password": "correct horse"}
    )
    assert status == 201, user
    status, _, token = client.request(
        "POST", "/api/v1/tokens", {"username": name, "password": "correct horse"}
    )
    assert status == 201, token
    return {**user, "headers": {"Authorization": f"Bearer {token['token']}"}}


def step(client: Client, user: dict, n: int) -> tuple:
    """(write answer, read answer): an edit or a sign-up, then a profile read or the list."""
    if n % 2:
        body = {"display_name": f"edit {n}"}
        write = client.request("PATCH", f"/api/v1/users/{user['id']}", body, user["headers"])
    else:
        body = {"username": f"mm_{uuid.uuid4().hex[:10]}", "password": "correct horse"}
        write = client.request("POST", "/api/v1/users", body)
    path = f"/api/v1/users/{user['id']}" if n % 2 else "/api/v1/photos"
    return write, client.request("GET", path, headers=user["headers"])


def batch(client: Client, user: dict) -> tuple[list, list]:
    """(write answers, read answers) of BATCH steps."""
    steps = [step(client, user, n) for n in range(BATCH)]
    return [w for w, _ in steps], [r for _, r in steps]


def poll(client: Client, user: dict, settled, started: float) -> tuple[list, list]:
    """Steps until BATCH in a row are ``settled``; a step begun past the deadline that is not
    fails the test (however slow the machine, only what began late counts)."""
    writes, reads = [], []
    while len(writes) < BATCH:
        begun = time.monotonic()
        write, read = step(client, user, len(writes))
        if settled([write], [read]):
            writes.append(write)
            reads.append(read)
            continue
        assert begun - started < DEADLINE_S, (
            f"a write begun {begun - started:.2f}s after the switch got {write[0]}"
        )
        writes, reads = [], []
    return writes, reads


def refused(writes, reads) -> bool:
    return all(w[0] == 503 for w in writes) and all(r[0] == 200 for r in reads)


def served(writes, reads) -> bool:
    return all(w[0] in (200, 201) for w in writes) and all(r[0] == 200 for r in reads)


@pytest.mark.slow
def test_maintenance_mode_reaches_every_worker_within_a_second(
    gunicorn_server, environ, clean_db, tmp_path
):
    env = {**environ, "LUMEN_PLUGINS": "health", "HEALTH_CHECK_INTERVAL": "0"}
    server = gunicorn_server(env, workers=2)
    client = Client(server.port)
    user = new_user(client)
    cli_env = service_env(**env)

    status = run_lumen("maintenance", "status", env=cli_env, cwd=tmp_path)
    assert (status.returncode, status.stdout.strip()) == (0, "maintenance mode off")
    assert served(*batch(client, user))

    # Switched in this process, right after a batch has had every worker read the flag: the
    # deadline is measured from the commit, not from a command's start-up.
    assert served(*batch(client, user))
    maintenance_mode.switch_on(clean_db, MESSAGE, 30)
    switched = time.monotonic()
    writes, reads = poll(client, user, refused, switched)
    # Settled for good: another batch, over both workers again, is refused just the same.
    assert refused(*batch(client, user))
    for _, headers, body in writes:
        assert body == {"title": "Maintenance", "description": MESSAGE}
        assert headers["Retry-After"] == "30"
        assert headers["Content-Type"].startswith("application/json")
    assert reads[1][2]["id"] == user["id"]

    status_code, _, health = client.request("GET", "/health")
    assert status_code == 200
    (check,) = health["checks"]["maintenance:mode"]
    assert check["status"] == "warn" and check["observedValue"] is True
    assert MESSAGE in check["output"] and "maintenance:mode" in health["output"]
    status = run_lumen("maintenance", "status", env=cli_env, cwd=tmp_path)
    assert status.returncode == 1 and MESSAGE in status.stdout

    off = run_lumen("maintenance", "off", env=cli_env, cwd=tmp_path)
    switched = time.monotonic()
    assert (off.returncode, off.stdout.strip()) == (0, "maintenance mode off"), off.stderr
    poll(client, user, served, switched)
    assert served(*batch(client, user))
    _, _, health = client.request("GET", "/health")
    assert health["checks"]["maintenance:mode"][0]["status"] == "pass"


def test_reads_pass_and_writes_get_the_message_in_process(app, api, client, monkeypatch):
    owner = api.user()
    photo = api.upload(owner)
    for name, value in app.lumen.settings.environ.items():
        monkeypatch.setenv(name, value)
    args = ["maintenance", "on", "--message", "back soon", "--retry-after", "12"]
    ran = CliRunner().invoke(cli, args, obj=Context())
    assert ran.exit_code == 0 and ran.output == "maintenance mode on: back soon (Retry-After: 12)\n"
    flag = app.lumen.state["core.maintenance"]
    flag._read_at = float("-inf")  # no waiting for the next read in this test
    for method in ("simulate_get", "simulate_head", "simulate_options"):
        assert getattr(client, method)(f"/api/v1/photos/{photo['id']}").status_code in (200, 405)
    edit = client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "x"}, headers=owner["headers"]
    )
    assert edit.status_code == 503 and edit.headers["Retry-After"] == "12"
    assert edit.json == {"title": "Maintenance", "description": "back soon"}
    assert client.simulate_get(f"/api/v1/photos/{photo['id']}").json["caption"] is None
    assert maintenance_mode.switch_off(app.lumen.engine) is True
    assert maintenance_mode.switch_off(app.lumen.engine) is False


def test_the_flag_is_read_at_most_once_per_interval_and_survives_a_database_error(backend):
    from sqlalchemy import create_engine

    engine = backend[2]
    flag = maintenance_mode.Flag(engine, refresh_s=3600)
    assert flag.state() is None
    maintenance_mode.switch_on(engine, "on")
    try:
        assert flag.state() is None  # not read again within the interval
        flag._read_at = float("-inf")
        assert flag.state().message == "on"
        broken = maintenance_mode.Flag(create_engine("sqlite:////nonexistent/dir/x.db"), 0)
        broken._state = maintenance_mode.State("last seen", 5, None)
        assert broken.state().message == "last seen"  # kept when the database cannot say
    finally:
        maintenance_mode.switch_off(engine)
