"""CORS in a real browser: headless Chromium loads a page from one loopback origin that calls
Lumen (under gunicorn, on another port) with fetch(). The allowed origin reads JSON, the
exposed X-Total-Count and, after a preflight, the answer to a credentialed PATCH with
Authorization; a page from a port that is not allowed is blocked by the browser itself."""

from __future__ import annotations

import functools
import http.server
import threading

import falcon.testing
import pytest

from lumen import migrate
from lumen.app import create_app
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from tests.browser import TIMEOUT_MS, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.security]


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title><link rel="icon" href="data:,"></head>
<body>
<script>
const api = "%(api)s";
const json = {"Content-Type": "application/json"};

async function allowed() {
  const out = {};
  const list = await fetch(api + "/api/v1/photos");
  out.list = {status: list.status, total: list.headers.get("X-Total-Count"),
              body: await list.json()};
  const username = "browser_" + Math.random().toString(36).slice(2, 10);
  const account = JSON.stringify({username, password: "correct horse"});
  const created = await fetch(api + "/api/v1/users", {method: "POST", headers: json,
                                                       body: account});
  const user = await created.json();
  const issued = await fetch(api + "/api/v1/tokens", {method: "POST", headers: json,
                                                       body: account});
  const token = (await issued.json()).token;
  out.signup = [created.status, issued.status];
  const patched = await fetch(api + "/api/v1/users/" + user.id, {
    method: "PATCH", credentials: "include",
    headers: {...json, "Authorization": "Bearer " + token},
    body: JSON.stringify({display_name: "Seen from the browser"}),
  });
  out.patch = {status: patched.status, body: await patched.json()};
  const anonymous = await fetch(api + "/api/v1/users/" + user.id, {
    method: "PATCH", credentials: "include", headers: json,
    body: JSON.stringify({display_name: "nobody"}),
  });
  out.unauthorized = {status: anonymous.status, body: await anonymous.json()};
  return out;
}

async function failure(request) {
  try {
    const response = await request();
    return "read status " + response.status;
  } catch (err) {
    return err.name;
  }
}

async function blocked() {
  return {
    get: await failure(() => fetch(api + "/api/v1/photos")),
    patch: await failure(() => fetch(api + "/api/v1/users/someone", {
      method: "PATCH", credentials: "include",
      headers: {...json, "Authorization": "Bearer " + "x".repeat(43)},
      body: "{}",
    })),
  };
}

const run = location.hash === "#blocked" ? blocked : allowed;
run().then(
  (out) => { window.corsResults = out; },
  (err) => { window.corsResults = {error: err.name + ": " + err.message}; },
);
</script></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def page_server(tmp_path):
    """Serve tmp_path/pages on a loopback port; returns (origin, server) per call."""
    folder = tmp_path / "pages"
    folder.mkdir()
    servers = []

    def start() -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    start.folder = folder
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _seed(environ: dict[str, str]) -> None:
    """Create the schema and one public photo in the test's own SQLite database."""
    from tests.conftest import Api

    settings = load_settings(environ)
    app = create_app(settings, make_plugin_manager(settings.enabled_plugins))
    try:
        migrate.upgrade(app.lumen)
        api = Api(falcon.testing.TestClient(app))
        api.upload(api.user())
    finally:
        app.lumen.shutdown()


def _visit(context, url: str) -> dict:
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_function("() => window.corsResults !== undefined", timeout=TIMEOUT_MS)
    results = page.evaluate("() => window.corsResults")
    page.close()
    results["console"] = console
    return results


def test_a_real_browser_reads_allowed_origins_and_blocks_the_rest(
    tmp_path, page_server, gunicorn_server
):
    allowed_origin, blocked_origin = page_server(), page_server()
    environ = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'lumen.db'}",
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "cors",
        "ENVIRONMENT": "production",
        "ALLOWED_ORIGINS": allowed_origin,
        "CORS_ALLOW_CREDENTIALS": "true",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
    }
    _seed(environ)
    server = gunicorn_server(environ, workers=1)
    (page_server.folder / "index.html").write_text(PAGE % {"api": server.url})

    with chromium(tmp_path / "chromium-profile") as context:
        seen = _visit(context, f"{allowed_origin}/index.html")
        refused = _visit(context, f"{blocked_origin}/index.html#blocked")

    assert "error" not in seen, seen
    assert seen["list"]["status"] == 200
    assert seen["list"]["total"] == "1"
    assert len(seen["list"]["body"]) == 1
    assert seen["signup"] == [201, 201]
    assert seen["patch"]["status"] == 200
    assert seen["patch"]["body"]["display_name"] == "Seen from the browser"
    # An error is readable too: the page learns why, not just that it failed.
    assert seen["unauthorized"]["status"] == 401
    assert seen["unauthorized"]["body"]["title"] == "Unauthorized"

    assert refused == {"get": "TypeError", "patch": "TypeError", "console": refused["console"]}
    log = server.log()
    # The simple GET reached the server (browsers send it) and was counted; the PATCH never
    # got past its preflight.
    assert f"origin='{blocked_origin}' reason='origin' method='GET'" in log
    assert f"origin='{blocked_origin}' reason='origin' method='OPTIONS'" in log
    assert f"origin='{allowed_origin}'" not in log
