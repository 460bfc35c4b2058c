"""The API explorer: ``GET /docs``, Swagger UI over ``/openapi.json``.

Swagger UI's files come from the ``swagger-ui-bundle`` package, served by Lumen itself: the page
loads nothing from any other host, works offline, and carries a Content-Security-Policy of its
own that lets its scripts and styles run from this server only. "Authorize" takes a Lumen bearer
token; "Try it out" calls the same server. On in development; elsewhere only with
DOCS_ENABLED=true.
"""

from __future__ import annotations

import falcon
from swagger_ui_bundle import swagger_ui_path

from lumen import SettingsSchema, boolean, document_errors, hookimpl, operation

NAME = "docs"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# The files of one Swagger UI release never change: browsers keep them a day.
ASSET_CACHE = "public, max-age=86400"

PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Lumen API</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="/docs/lumen-docs.js" charset="UTF-8"></script>
  </body>
</html>
"""

# A file, not an inline script: the page's CSP runs scripts from this server only.
INITIALISER = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
};
"""


class DocsSettings(SettingsSchema):
    enabled = boolean("DOCS_ENABLED", None)


class DocsPage:
    authenticate = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The API explorer (Swagger UI)."""
        resp.content_type = falcon.MEDIA_HTML
        resp.text = PAGE
        resp.set_header("Content-Security-Policy", PAGE_CSP)
        resp.cache_control = ["no-cache"]


class DocsAsset:
    authenticate = False

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """A file of the API explorer."""
        if name == "lumen-docs.js":
            resp.content_type = ASSETS["swagger-ui-bundle.js"]
            resp.text = INITIALISER
        elif name in ASSETS:
            resp.content_type = ASSETS[name]
            resp.data = (swagger_ui_path / name).read_bytes()
        else:
            raise falcon.HTTPNotFound(title="Not found", description="name: no such file")
        resp.cache_control = [ASSET_CACHE]


def enabled(lumen) -> bool:
    setting = lumen.settings_of(DocsSettings).enabled
    return lumen.settings.environment == "development" if setting is None else setting


@hookimpl
def lumen_settings():
    return DocsSettings


@hookimpl
def lumen_routes(lumen):
    if not enabled(lumen):
        return []
    return [("/docs", DocsPage()), ("/docs/{name}", DocsAsset())]


@hookimpl
def lumen_openapi(lumen, spec):
    if not enabled(lumen):
        return
    page = operation(spec, "/docs", "get")
    page["responses"]["200"] = {"description": "The explorer", "content": {"text/html": {}}}
    asset = operation(spec, "/docs/{name}", "get")
    asset["responses"]["200"] = {"description": "A file of the explorer"}
    document_errors(asset, "404")
