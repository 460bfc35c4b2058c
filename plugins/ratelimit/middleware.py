"""The rate-limit middleware: in the AFTER_AUTHENTICATION slot, so process_resource knows the
route and the caller (resolved once, by the core's authentication, just before).

Each request meets one policy, charged to the caller (``user:<id>``) or, for anonymous
requests, to the client address: ``upload`` for POST /api/v1/photos, ``auth`` for POST
/api/v1/tokens and POST /api/v1/users, ``default`` for the rest. A login is also held to the
``username`` policy of the username it names, which counts failed logins only. Probes and
/metrics are never limited.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

import falcon

from lumen import headers_of, request_body, status_of
from lumen_plugins.ratelimit.limiter import Counters, Op, Outcome
from lumen_plugins.ratelimit.settings import ClientAddress, Policy

log = logging.getLogger(__name__)

EXEMPT_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})
LOGIN = ("POST", "/api/v1/tokens")
POLICY_OF_ROUTE = {
    ("POST", "/api/v1/photos"): "upload",
    LOGIN: "auth",
    ("POST", "/api/v1/users"): "auth",
}
UNMATCHED = "unmatched"  # the route label of a path no route matches
_LOGGED_CHARS = 64
_USERNAME_CHARS = 64
_BLOCKED_REMEMBERED = 10_000


def exempt(template: str | None) -> bool:
    if template is None:
        return False
    return template in EXEMPT_ROUTES or template == "/health" or template.startswith("/health/")


def login_username(req: falcon.Request) -> str | None:
    """The username a login names, read from its JSON body (which the resource reads again
    from the copy kept on the request); None when the body names none."""
    if req.content_length is not None and req.content_length > 1024 * 1024:
        return None
    if not (req.content_type or "").startswith("application/json"):
        return None
    try:
        data = json.loads(request_body(req))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    username = data.get("username") if isinstance(data, dict) else None
    if not isinstance(username, str) or not 0 < len(username.strip()) <= _USERNAME_CHARS:
        return None  # no account has a longer name: nothing to guess
    return username.strip().lower()


class Blocked:
    """Blocked keys, so a block is logged (WARNING) once per key while it lasts, not per
    request; and the refusals counted by route and policy."""

    def __init__(self):
        self.metric = None  # the prometheus Counter, once the metrics plugin asks for it
        self.refused = 0
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def record(self, req: falcon.Request, outcome: Outcome, who: str, route: str) -> None:
        self.refused += 1
        if self.metric is not None:
            self.metric.labels(route=route, policy=outcome.policy.name).inc()
        now = time.monotonic()
        key = (outcome.policy.name, who)
        with self._lock:
            if self._until.get(key, 0.0) > now:
                return
            if len(self._until) >= _BLOCKED_REMEMBERED:
                self._until = {k: t for k, t in self._until.items() if t > now}
                if len(self._until) >= _BLOCKED_REMEMBERED:
                    self._until.clear()
            self._until[key] = now + max(outcome.reset, 1)
        kind, _, value = who.partition(":")
        log.warning(
            "rate limit reached",
            extra={
                "policy": outcome.policy.name,
                kind: value[:_LOGGED_CHARS],
                "route": route,
                "method": req.method,
                "retry_after_s": outcome.reset,
            },
        )


class RateLimitMiddleware:
    def __init__(
        self,
        counters: Counters,
        policies: dict[str, Policy],
        client_address: ClientAddress,
        blocked: Blocked,
        failure_cost: int,
        known_address_seconds: int,
    ):
        self.counters = counters
        self.policies = policies
        self.client_address = client_address
        self.blocked = blocked
        self.failure_cost = failure_cost
        self.known_address_seconds = known_address_seconds

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        template = req.uri_template
        if exempt(template):
            return
        route = template or UNMATCHED
        user = req.context.user
        address = self.client_address.key_of(req)
        who = f"user:{user.id}" if user is not None else address
        endpoint = (req.method, template)
        policy = self.policies[POLICY_OF_ROUTE.get(endpoint, "default")]
        username = login_username(req) if endpoint == LOGIN else None
        if username is None:
            outcomes = [self.counters.check(policy, who)]
        else:
            username_op = Op(self.policies["username"], f"username:{username}", cost=0)
            outcomes = self.counters.run([Op(policy, who), username_op])
        req.context.ratelimit = outcomes[0]
        if not outcomes[0].allowed:
            self._refuse(req, outcomes[0], who, route)
        if username is not None:
            req.context.ratelimit_login = (address, who, username)
            if outcomes[1].remaining < 1 and not self._known(address, username):
                self._refuse(req, outcomes[1], f"username:{username}", route)

    def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        outcome = getattr(req.context, "ratelimit", None)
        if outcome is None:
            self._not_routed(req, resp, resource)
            return
        status = status_of(resp)
        if status != 429:
            headers = headers_of(resp)
            headers["ratelimit-policy"] = outcome.policy.field
            headers["ratelimit"] = outcome.field
        login = getattr(req.context, "ratelimit_login", None)
        if login is not None and status in (201, 401):
            self._after_login(login, outcome, succeeded=status == 201)

    def _not_routed(self, req: falcon.Request, resp: falcon.Response, resource) -> None:
        """Paths no route matches (falcon skips process_resource for them), and bad tokens,
        which authentication refuses before process_resource above: charged to the address
        now, and answered 429 instead once its budget is spent. Preflights are not counted."""
        if resource is not None and status_of(resp) != 401:
            return  # answered by another middleware, e.g. a CORS refusal
        if exempt(req.uri_template) or _is_preflight(req):
            return
        address = self.client_address.key_of(req)
        outcome = self.counters.check(self.policies["default"], address)
        if outcome.allowed:
            resp.set_header("RateLimit-Policy", outcome.policy.field)
            resp.set_header("RateLimit", outcome.field)
            return
        self.blocked.record(req, outcome, address, req.uri_template or UNMATCHED)
        refusal = _refusal(outcome)
        resp.status = falcon.HTTP_429
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(refusal.to_dict())
        resp.data = None
        resp.delete_header("WWW-Authenticate")  # a refused bad token: the answer is the limit
        for name, value in refusal.headers.items():
            resp.set_header(name, value)

    def _after_login(self, login: tuple[str, str, str], outcome: Outcome, succeeded: bool) -> None:
        address, who, username = login
        if succeeded:
            self.counters.mark(_known_key(address, username), self.known_address_seconds)
            return
        ops = [Op(self.policies["username"], f"username:{username}", read=False)]
        # A failure costs the address failure_cost in all; what is left of the budget at most.
        extra = min(self.failure_cost - 1, outcome.remaining)
        if extra > 0:
            ops.append(Op(outcome.policy, who, cost=extra, read=False))
        self.counters.run(ops)

    def _known(self, address: str, username: str) -> bool:
        """Whether this address logged in to this account lately: then a username whose
        failure budget is spent still lets it try (its own address limit still applies)."""
        return self.counters.marked(_known_key(address, username))

    def _refuse(self, req: falcon.Request, outcome: Outcome, who: str, route: str) -> None:
        self.blocked.record(req, outcome, who, route)
        raise _refusal(outcome)


def _is_preflight(req: falcon.Request) -> bool:
    return req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method") is not None


def _refusal(outcome: Outcome) -> falcon.HTTPTooManyRequests:
    retry_after = max(outcome.reset, 1)
    return falcon.HTTPTooManyRequests(
        title="Too many requests",
        description=(
            f"rate limit {outcome.policy.name!r} reached "
            f"({outcome.policy.quota} per {outcome.policy.window} s); "
            f"retry after {retry_after} s"
        ),
        retry_after=retry_after,
        headers={
            "RateLimit-Policy": outcome.policy.field,
            "RateLimit": f'"{outcome.policy.name}";r=0;t={retry_after}',
        },
    )


def _known_key(address: str, username: str) -> str:
    # Hashed: the store keeps no list of who logs in from where.
    digest = hashlib.sha256(f"{username}\n{address}".encode()).hexdigest()[:32]
    return f"known:{digest}"
