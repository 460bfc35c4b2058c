"""Rate limiting: how many requests a caller may make, shared by every worker and host.

Moving windows of the ``limits`` package on the core's Redis client (in memory, per worker,
when REDIS_URL is unset or Redis does not answer; /health says which). Requests are charged to
the authenticated user, else to the client address (X-Forwarded-For and Forwarded are believed
only from TRUSTED_PROXIES). Logins are limited twice, per address (failures cost
RATE_LIMIT_FAILURE_COST) and per target username (failures only), so neither one address nor a
botnet can guess one account's password quickly. A refusal is a JSON 429 with Retry-After and
the IETF RateLimit-Policy and RateLimit fields; other answers carry them too.

``settings`` loads the policies and finds the client address, ``limiter`` keeps the counters,
``middleware`` applies them; this module wires them into Lumen. See docs/ratelimit.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lumen import hookimpl, operation, slots
from lumen_plugins.ratelimit.limiter import Counters
from lumen_plugins.ratelimit.middleware import Blocked, RateLimitMiddleware, exempt
from lumen_plugins.ratelimit.settings import (
    ClientAddress,
    Policy,
    RateLimitSettings,
    parse_networks,
    policies,
)

log = logging.getLogger(__name__)

NAME = "ratelimit"
DAY_SECONDS = 86400
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


@dataclass
class RateLimitState:
    """What the plugin keeps per app, as ``lumen.state["ratelimit"]``."""

    counters: Counters
    policies: dict[str, Policy]
    client_address: ClientAddress
    blocked: Blocked = field(default_factory=Blocked)


def state_of(lumen) -> RateLimitState:
    return lumen.state[NAME]


@hookimpl
def lumen_settings():
    return RateLimitSettings


@hookimpl
def lumen_startup(lumen) -> None:
    section = lumen.settings_of(RateLimitSettings)
    counters = Counters(lumen.redis, lumen.redis_calls, section.key_prefix, section.redis_retry_s)
    state = RateLimitState(
        counters, policies(section), ClientAddress(parse_networks(section.trusted_proxies))
    )
    lumen.state[NAME] = state
    log.info(
        "rate limits",
        extra={
            "storage": "memory" if lumen.redis is None else "redis",
            **{name: policy.field for name, policy in state.policies.items()},
        },
    )


@hookimpl
def lumen_shutdown(lumen) -> None:
    state_of(lumen).counters.close()


@hookimpl
def lumen_health_checks(lumen):
    return {"ratelimit:storage": lambda: check_storage(state_of(lumen).counters)}


def check_storage(counters: Counters) -> dict:
    """Where the counters are kept: Redis (pass), or memory: per worker, so a limit is that
    many times looser (pass without REDIS_URL, warn while Redis does not answer)."""
    entry = {"componentType": "component", "observedValue": "redis", "status": "pass"}
    if counters.client is None:
        entry["observedValue"] = "memory"
        entry["output"] = "in memory, per worker (REDIS_URL is not set)"
    elif counters.degraded:
        # Memory until Redis has answered a check again, not merely until the retry wait ends.
        entry["observedValue"] = "memory"
        entry["status"] = "warn"
        entry["output"] = "in memory, per worker, while Redis does not answer"
    return entry


@hookimpl
def lumen_metrics(lumen, registry) -> None:
    from prometheus_client import Counter as PrometheusCounter

    state = state_of(lumen)
    state.blocked.metric = PrometheusCounter(
        "lumen_ratelimit_limited_total",
        "Requests refused with 429 by a rate limit, by route template and policy.",
        ["route", "policy"],
        registry=registry,
    )
    state.counters.metric_errors = PrometheusCounter(
        "lumen_ratelimit_storage_errors_total",
        "Redis errors of the rate limiter (each one counts in memory for a while).",
        registry=registry,
    )


@hookimpl
def lumen_middleware(lumen) -> list[tuple[int, Any]]:
    state = state_of(lumen)
    section = lumen.settings_of(RateLimitSettings)
    middleware = RateLimitMiddleware(
        state.counters,
        state.policies,
        state.client_address,
        state.blocked,
        failure_cost=section.failure_cost,
        known_address_seconds=section.known_address_days * DAY_SECONDS,
    )
    return [(slots.AFTER_AUTHENTICATION, middleware)]


@hookimpl
def lumen_openapi(lumen, spec) -> None:
    for path, methods in spec.to_dict().get("paths", {}).items():
        if exempt(path):
            continue
        for method in set(methods) & HTTP_METHODS:
            operation(spec, path, method).setdefault("responses", {})["429"] = {
                "description": "Too many requests: a rate limit was reached (Retry-After, "
                "RateLimit-Policy and RateLimit say which and for how long)"
            }
