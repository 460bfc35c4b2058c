"""Security headers: what every response tells the browser and the caches in front of it.

- Every response: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY``, ``Cross-Origin-Opener-Policy: same-origin``; in production
  ``Strict-Transport-Security``.
- JSON: a Content-Security-Policy that lets nothing load or frame it, and
  ``Cross-Origin-Resource-Policy: same-origin`` (CORS governs the reads pages may make).
- Images: a sandboxing CSP and ``Cross-Origin-Resource-Policy: cross-origin``, so the web apps of
  other origins can show them in ``<img>`` (private images need a bearer token, which a page of
  another origin cannot attach).
- Cache-Control on JSON, unless the resource set one: errors and writes ``no-store``; answers to
  an authenticated caller ``private, no-cache``; public reads ``public, max-age=N`` with
  ``Vary: Authorization``, N being PUBLIC_CACHE_MAX_AGE (default 0: a shared cache keeps them but
  revalidates each time, which the ETags of the ``conditional`` plugin make cheap).
"""

from __future__ import annotations

import falcon

from lumen import (
    SettingsSchema,
    add_vary,
    headers_of,
    hookimpl,
    is_json,
    lower_case_names,
    media_type_of,
    positive_int,
    slots,
    status_of,
)

NAME = "security_headers"
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
IMAGE_CSP = "default-src 'none'; sandbox"
EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
READS = frozenset({"GET", "HEAD"})


class SecurityHeadersSettings(SettingsSchema):
    public_max_age = positive_int("PUBLIC_CACHE_MAX_AGE", 0, minimum=0)
    hsts_max_age = positive_int("HSTS_MAX_AGE", 31536000, minimum=0)


class SecurityHeadersMiddleware:
    def __init__(self, public_max_age: int, hsts_max_age: int | None):
        every = dict(EVERY_RESPONSE)
        if hsts_max_age is not None:
            every["Strict-Transport-Security"] = f"max-age={hsts_max_age}; includeSubDomains"
        # One set of headers per kind of answer, built once and named as falcon keeps them:
        # one dict update per response.
        image = {
            **every,
            "Content-Security-Policy": IMAGE_CSP,
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        other = {**every, "Cross-Origin-Resource-Policy": "same-origin"}
        self.image_headers = lower_case_names(image)
        self.other_headers = lower_case_names(other)
        self.json_headers = lower_case_names({**other, "Content-Security-Policy": JSON_CSP})
        self.public = f"public, max-age={public_max_age}"

    def process_response(self, req, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        content_type, headers = media_type_of(resp), headers_of(resp)
        if content_type.startswith("image/"):
            headers.update(self.image_headers)
            return
        if not is_json(content_type):
            headers.update(self.other_headers)
            return
        headers.update(self.json_headers)
        if "cache-control" in headers:
            return  # the resource knows better (probes: no-store)
        if status_of(resp) >= 400 or req.method not in READS:
            headers["cache-control"] = "no-store"
        elif req.context.user is not None:
            headers["cache-control"] = "private, no-cache"
        else:
            # The same URL answers a signed-in caller differently: caches must keep them apart.
            headers["cache-control"] = self.public
            add_vary(resp, "Authorization")


@hookimpl
def lumen_settings():
    return SecurityHeadersSettings


@hookimpl
def lumen_middleware(lumen):
    section = lumen.settings_of(SecurityHeadersSettings)
    # Only in production: elsewhere the service is often reached over plain HTTP on purpose.
    hsts = section.hsts_max_age if lumen.settings.environment == "production" else None
    return [(slots.SECURITY_HEADERS, SecurityHeadersMiddleware(section.public_max_age, hsts))]
