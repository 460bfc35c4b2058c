"""The API explorer in a real browser: headless Debian Chromium opens /docs on a gunicorn-served
Lumen, authorises with a bearer token, runs "Try it out" on the city search and on the photo
list, and sees their answers; no request leaves the server. A screenshot is kept as an artefact
(tests/artifacts/docs.png)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import falcon.testing
import pytest

from lumen import migrate
from lumen.app import create_app
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from tests.browser import TIMEOUT_MS, chromium
from tests.conftest import Api

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).parents[1] / "artifacts"


def _prepare(environ: dict[str, str]) -> str:
    """Schema, a few cities, a user with a photo; returns the user's token."""
    from lumen_plugins.locations import gazetteer, importer

    settings = load_settings(environ)
    app = create_app(settings, make_plugin_manager(settings.enabled_plugins))
    try:
        migrate.upgrade(app.lumen)
        records = [r for r in gazetteer.read_dataset("cities15000") if r["population"] > 1_000_000]
        importer.write(app.lumen.engine, gazetteer.build(records, "cities15000"))
        api = Api(falcon.testing.TestClient(app))
        user = api.user()
        api.upload(user, caption="seen through the explorer")
        return user["token"]
    finally:
        app.lumen.shutdown()


def _try_it_out(page, operation_id: str, fill: dict[str, str]) -> str:
    """Open one operation, fill its parameters, execute, and return the answer's body text."""
    block = page.locator(f"#{operation_id}")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    for name, value in fill.items():
        block.locator(f'tr[data-param-name="{name}"] input').fill(value)
    block.get_by_role("button", name="Execute").click()
    answer = block.locator(".responses-wrapper .live-responses-table .response-col_description")
    answer.first.wait_for(timeout=TIMEOUT_MS)
    return block.locator(
        ".responses-wrapper .live-responses-table pre.microlight"
    ).first.inner_text()


def test_the_explorer_authorises_and_tries_operations_in_a_real_browser(tmp_path, gunicorn_server):
    environ = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'lumen.db'}",
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "docs,locations,security_headers,compression,conditional",
        "LOCATIONS_AUTO_IMPORT": "false",
        "LOCATION_CACHE_SIZE": "0",
    }
    token = _prepare(environ)
    server = gunicorn_server(environ, workers=1)
    host = urlsplit(server.url).netloc
    requested: list[str] = []
    sent_authorization: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium(
        tmp_path / "chromium-profile", viewport={"width": 1280, "height": 2000}
    ) as context:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        def seen(request):
            requested.append(request.url)
            if "/api/v1/photos" in request.url:
                sent_authorization.append(request.headers.get("authorization", ""))

        page.on("request", seen)
        page.goto(f"{server.url}/docs")
        page.get_by_role("button", name="Authorize").first.click()
        page.locator(".modal-ux input[type=text]").fill(token)
        page.locator(".modal-ux").get_by_role("button", name="Authorize").click()
        page.locator(".modal-ux").get_by_role("button", name="Close").click()
        cities = _try_it_out(page, "operations-default-get_api_v1_locations", {"q": "berl"})
        photos = _try_it_out(page, "operations-default-get_api_v1_photos", {})
        page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=True)

    assert '"name": "Berlin"' in cities, cities
    assert "seen through the explorer" in photos, photos
    assert sent_authorization and all(a == f"Bearer {token}" for a in sent_authorization)
    others = [
        url for url in requested if urlsplit(url).netloc != host and not url.startswith("data:")
    ]
    assert others == []
    assert (ARTIFACTS / "docs.png").stat().st_size > 10_000
