"""Property-based requests against the app's own /openapi.json (schemathesis, in process),
with every plugin that serves routes on and a signed-in caller: no input the schema can express
makes the server fail with a 5xx. Token routes are left out: revoking the caller's tokens would
end the run's authentication."""

from __future__ import annotations

import uuid

import falcon.testing
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from lumen.app import create_app
from lumen.config import load_settings
from tests.conftest import Api

pytestmark = [pytest.mark.security, pytest.mark.slow]

PLUGINS = "cors,locations,health,metrics,security_headers,compression,conditional,docs"


def _app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    from lumen import migrate

    settings_ = load_settings(
        {
            "DATABASE_URL": f"sqlite:///{folder / 'lumen.db'}",
            "STORAGE_PATH": str(folder / "storage"),
            "LUMEN_PLUGINS": PLUGINS,
            "METRICS_ENABLED": "true",
            "LOCATIONS_AUTO_IMPORT": "false",
        }
    )
    app = create_app(settings_)
    migrate.upgrade(app.lumen)
    from lumen_plugins.locations import gazetteer, importer

    # Cities, so search answers rather than 503 (data not imported yet, as documented).
    big = [r for r in gazetteer.read_dataset("cities15000") if r["population"] > 1_000_000]
    importer.write(app.lumen.engine, gazetteer.build(big, "cities15000"))
    return app


@pytest.fixture(scope="module")
def signed_in(tmp_path_factory):
    app = _app(tmp_path_factory)
    api = Api(falcon.testing.TestClient(app))
    user = api.user(username=f"fuzz_{uuid.uuid4().hex[:8]}")
    api.upload(user)
    yield app, user["headers"]
    app.lumen.shutdown()


def test_no_request_the_schema_allows_is_answered_with_a_5xx(signed_in):
    app, headers = signed_in
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app).exclude(
        path_regex="^/api/v1/tokens"
    )
    tested, calls = 0, [0]
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def answered_without_a_server_error(case):
            calls[0] += 1
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        answered_without_a_server_error()
        tested += 1
    assert tested >= 20
    print(f"\nFIGURES schemathesis: operations={tested} requests={calls[0]} server_errors=0")
