"""CORS: which browser origins may call the API and read its answers (the Fetch standard).

Only listed origins get ``Access-Control-Allow-Origin``, always their exact origin, and every
response carries ``Vary: Origin`` so no cache hands one origin's answer to another. A preflight
is answered before authentication and routing, for any path; one from an unknown origin, or
asking for a method or header outside the lists, is refused with a 403 and no CORS headers.
Error responses to allowed origins keep their CORS headers, so the page can read the error.

``policy`` loads and checks the settings, ``middleware`` applies them; this module wires both
into Lumen. See docs/cors.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lumen import hookimpl, slots
from lumen_plugins.cors.middleware import REASONS, CorsMiddleware, Rejections
from lumen_plugins.cors.policy import CorsPolicy, CorsSettings, build_policy

log = logging.getLogger(__name__)

NAME = "cors"


@dataclass
class CorsState:
    """What the plugin keeps per app, as ``lumen.state["cors"]``."""

    policy: CorsPolicy
    rejections: Rejections = field(default_factory=Rejections)


@hookimpl
def lumen_settings():
    return CorsSettings


@hookimpl
def lumen_startup(lumen) -> None:
    policy = build_policy(lumen.settings_of(CorsSettings), lumen.settings.environment)
    lumen.state[NAME] = CorsState(policy)
    log.info(
        "cors policy",
        extra={
            "origins": ["*"] if policy.any_origin else sorted(policy.origins),
            "origin_regex": policy.origin_regex.pattern if policy.origin_regex else None,
            "credentials": policy.allow_credentials,
            "max_age": policy.max_age,
        },
    )


@hookimpl
def lumen_middleware(lumen) -> list[tuple[int, Any]]:
    state = lumen.state[NAME]
    return [(slots.CORS, CorsMiddleware(state.policy, state.rejections))]


@hookimpl
def lumen_metrics(lumen, registry) -> None:
    from prometheus_client import Counter as PrometheusCounter

    metric = PrometheusCounter(
        "lumen_cors_rejected_total",
        "Cross-origin requests refused: unknown origin, or a preflight asking for a method or "
        "header outside the lists.",
        ["reason"],
        registry=registry,
    )
    for reason in REASONS:
        metric.labels(reason=reason)
    lumen.state[NAME].rejections.metric = metric
