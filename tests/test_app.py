"""The app: JSON errors, the catch-all 500, 503 when the database is down, and no connection
left checked out whatever a request does."""

import itertools
import logging

import falcon.testing
import pytest

from lumen.app import create_app
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from tests.fixture_plugins import faults


@pytest.fixture
def fault_app(environ, backend, clean_db):
    pm = make_plugin_manager([])
    pm.register(faults, name="faults")
    return create_app(load_settings(environ), pm, engine=backend[2])


def test_unexpected_exception_is_a_json_500_without_detail(fault_app, caplog):
    client = falcon.testing.TestClient(fault_app)
    with caplog.at_level(logging.ERROR):
        result = client.simulate_get("/test/fault/exception", headers={"Accept": "text/html"})
    assert result.status_code == 500
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == {
        "title": "Internal Server Error",
        "description": "An unexpected error occurred.",
    }
    assert "secret internal detail" not in result.text
    # ...but the log has the traceback.
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_unknown_route_and_method_are_json(client):
    missing = client.simulate_get("/no/such/thing", headers={"Accept": "application/xml"})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/json"
    )
    wrong = client.simulate_put("/api/v1/photos")
    assert wrong.status_code == 405 and wrong.json["title"]


def test_no_connection_is_left_checked_out_after_200_faulty_requests(fault_app):
    client = falcon.testing.TestClient(fault_app)
    kinds = itertools.cycle(["exception", "http", "sql", "status", "ok"])
    statuses = set()
    for kind in itertools.islice(kinds, 200):
        statuses.add(client.simulate_get(f"/test/fault/{kind}").status_code)
    assert statuses == {500, 400, 409, 200}
    figures = fault_app.lumen.pool_figures()
    assert figures["checked_out"] == 0


@pytest.mark.integration
def test_database_down_is_503_json(tmp_path):
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
            "STORAGE_PATH": str(tmp_path),
            "LUMEN_PLUGINS": "none",
            "DB_POOL_TIMEOUT": "1",
        }
    )
    client = falcon.testing.TestClient(create_app(settings))
    result = client.simulate_get("/api/v1/photos")
    assert result.status_code == 503
    assert result.json["title"] == "Database unavailable"
    assert result.headers["retry-after"] == "5"


def test_openapi_lists_every_route(client, app):
    spec = client.simulate_get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    for template in app.lumen.routes:
        assert template.replace("{", "{").split(":")[0] in documented or template in documented
    upload = spec["paths"]["/api/v1/photos"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert spec["components"]["schemas"]["Photo"]["properties"]["urls"]
