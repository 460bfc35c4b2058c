"""The CORS middleware, and the record of what it refused."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import falcon

from lumen import add_vary
from lumen_plugins.cors.policy import ALLOWED_HEADERS, ALLOWED_METHODS, CorsPolicy, split

log = logging.getLogger(__name__)

PREFLIGHT_VARY = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
# Why a request was refused: the label of the rejection counter.
REASONS = ("origin", "method", "header")
_LOGGED_CHARS = 100


class Rejections:
    """Refused cross-origin requests: counted by reason and logged at INFO."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.metric = None  # the prometheus Counter, once the metrics plugin asks for it
        self._lock = threading.Lock()

    def record(self, req: falcon.Request, origin: str, reason: str, asked: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
        if self.metric is not None:
            self.metric.labels(reason=reason).inc()
        extra = {
            "origin": origin[:_LOGGED_CHARS],
            "reason": reason,
            "method": req.method,
            "path": req.path,
        }
        if asked:
            extra["asked"] = asked[:_LOGGED_CHARS]
        log.info("cors request refused", extra=extra)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _is_preflight(req: falcon.Request) -> bool:
    return req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method") is not None


class CorsMiddleware:
    """Answers preflights itself; adds the CORS headers and Vary to every other response."""

    def __init__(self, policy: CorsPolicy, rejections: Rejections):
        self.policy = policy
        self.rejections = rejections
        self._header_names = frozenset(name.lower() for name in ALLOWED_HEADERS)
        self._allow_methods = ", ".join(ALLOWED_METHODS)
        self._allow_headers = ", ".join(ALLOWED_HEADERS)
        self._expose_headers = ", ".join(policy.expose_headers)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Read from the WSGI environ: falcon's get_header raises and catches a KeyError for a
        # header that is absent, as Origin is from most requests.
        origin = req.env.get("HTTP_ORIGIN")
        if origin is None:
            return
        if not _is_preflight(req):
            if not self.policy.allows(origin):
                # Served anyway (CORS is enforced by the browser), but the browser will not
                # let the page read it.
                self.rejections.record(req, origin, "origin")
            return
        refusal = self._preflight_refusal(req, origin)
        if refusal is not None:
            reason, asked, description = refusal
            req.context.cors_refused = True
            self.rejections.record(req, origin, reason, asked)
            raise falcon.HTTPForbidden(title="CORS preflight refused", description=description)
        resp.status = falcon.HTTP_204
        resp.set_header("Access-Control-Allow-Methods", self._allow_methods)
        resp.set_header("Access-Control-Allow-Headers", self._allow_headers)
        resp.set_header("Access-Control-Max-Age", str(self.policy.max_age))
        req.context.cors_preflight = True
        # Answered here, for any path: no routing, session or authentication.
        resp.complete = True

    def _preflight_refusal(self, req: falcon.Request, origin: str) -> tuple[str, str, str] | None:
        if not self.policy.allows(origin):
            return "origin", "", "Origin: not allowed"
        method = req.get_header("Access-Control-Request-Method")
        # Methods are case-sensitive in the Fetch standard: 'patch' is not 'PATCH'.
        if method not in ALLOWED_METHODS:
            return "method", method, "Access-Control-Request-Method: not allowed"
        asked = req.get_header("Access-Control-Request-Headers") or ""
        unknown = [name for name in split(asked.lower()) if name not in self._header_names]
        if unknown:
            return "header", ",".join(unknown), "Access-Control-Request-Headers: not allowed"
        return None

    def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        # Every answer depends on Origin, so every answer says so, errors and 304s included.
        preflight = _is_preflight(req)
        add_vary(resp, *(PREFLIGHT_VARY if preflight else ("Origin",)))
        origin = req.env.get("HTTP_ORIGIN")
        if origin is None or getattr(req.context, "cors_refused", False):
            return
        if not self.policy.allows(origin):
            return
        resp.set_header("Access-Control-Allow-Origin", origin)
        if self.policy.allow_credentials:
            resp.set_header("Access-Control-Allow-Credentials", "true")
        if not getattr(req.context, "cors_preflight", False):
            resp.set_header("Access-Control-Expose-Headers", self._expose_headers)
