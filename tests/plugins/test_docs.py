"""The docs plugin without a browser: where /docs is on, the page's own CSP, and which files it
serves (Swagger UI's from swagger-ui-bundle, nothing else)."""

from __future__ import annotations

import falcon.testing
import pytest
from swagger_ui_bundle import swagger_ui_path

pytestmark = pytest.mark.security


@pytest.mark.parametrize(
    ("environment", "enabled", "served"),
    [
        ("development", None, True),
        ("production", None, False),
        ("staging", None, False),
        ("production", "true", True),
        ("development", "false", False),
    ],
)
def test_docs_are_on_in_development_and_elsewhere_only_when_asked(
    make_app, environment, enabled, served
):
    env = {"LUMEN_PLUGINS": "docs", "ENVIRONMENT": environment}
    if enabled is not None:
        env["DOCS_ENABLED"] = enabled
    client = falcon.testing.TestClient(make_app(**env))
    page = client.simulate_get("/docs")
    assert page.status_code == (200 if served else 404)
    paths = client.simulate_get("/openapi.json").json["paths"]
    assert ("/docs" in paths) is served


def test_the_page_has_its_own_csp_and_loads_only_files_of_this_server(make_app):
    client = falcon.testing.TestClient(make_app(LUMEN_PLUGINS="docs,security_headers"))
    page = client.simulate_get("/docs")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "http" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    for src in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/lumen-docs.js"):
        assert f'"{src}"' in page.text
        asset = client.simulate_get(src)
        assert (
            asset.status_code == 200 and asset.headers["Cache-Control"] == "public, max-age=86400"
        )
    bundle = client.simulate_get("/docs/swagger-ui-bundle.js")
    assert bundle.content == (swagger_ui_path / "swagger-ui-bundle.js").read_bytes()
    initialiser = client.simulate_get("/docs/lumen-docs.js").text
    assert 'url: "/openapi.json"' in initialiser and "validatorUrl: null" in initialiser


@pytest.mark.parametrize("name", ["index.j2", "..%2f..%2fsetup.py", "swagger-ui.js.map", "x"])
def test_no_other_file_is_served(make_app, name):
    client = falcon.testing.TestClient(make_app(LUMEN_PLUGINS="docs"))
    missing = client.simulate_get(f"/docs/{name}")
    assert missing.status_code == 404
    assert missing.json["description"] in ("name: no such file", "path: no resource here")
