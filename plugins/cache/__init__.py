"""Cache: Redis cache-aside for what clients read most, invalidated by the core's domain events
after commit, never serving a value older than a write that has returned (docs/cache.md).

Without REDIS_URL the plugin stays enabled and every read goes to the database.
"""

from __future__ import annotations

import logging

from marshmallow import EXCLUDE, Schema, fields, validate

from lumen import hookimpl
from lumen.config import load_section, positive_int
from lumen_plugins.cache import invalidation
from lumen_plugins.cache.breaker import CLOSED, Breaker
from lumen_plugins.cache.cache import Cache
from lumen_plugins.cache.keys import PREFIX_RULE, Keys
from lumen_plugins.cache.stats import Stats, totals
from lumen_plugins.cache.store import RedisStore, Unavailable, connect
from lumen_plugins.cache.warmup import warm_once

log = logging.getLogger(__name__)

# The health check's hit rate: over this window, and only once there is this much traffic.
HIT_RATE_WINDOW_MINUTES = 5
HIT_RATE_MIN_LOOKUPS = 100
HIT_RATE_WARN_BELOW = 70.0


class CacheSettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    key_prefix = fields.String(
        load_default="lumen",
        validate=[
            validate.Length(max=64),
            validate.Regexp(
                PREFIX_RULE, error="must be letters, digits, '_', '.', '-' in parts joined by ':'"
            ),
        ],
        data_key="CACHE_KEY_PREFIX",
    )
    timeout_ms = positive_int("CACHE_REDIS_TIMEOUT_MS", 50)
    breaker_failures = positive_int("CACHE_BREAKER_FAILURES", 5)
    breaker_cooldown_s = fields.Float(
        load_default=5.0,
        validate=validate.Range(min=0, min_inclusive=False),
        data_key="CACHE_BREAKER_COOLDOWN_S",
    )
    lock_wait_ms = positive_int("CACHE_LOCK_WAIT_MS", 200, minimum=0)
    warmup_photos = positive_int("CACHE_WARMUP_PHOTOS", 1000, minimum=0)


def build_cache(settings) -> Cache:
    values = load_section(CacheSettingsSchema(), settings.environ)
    keys, stats = Keys(values["key_prefix"]), Stats()
    store = None
    if settings.redis_url:
        client = connect(settings.redis_url, settings.redis_password, values["timeout_ms"] / 1000)
        ttl_seconds = max(1, int(settings.cache_ttl_days * 86400))
        breaker = Breaker(values["breaker_failures"], values["breaker_cooldown_s"])
        store = RedisStore(client, keys, ttl_seconds, breaker, stats)
    else:
        log.info("cache off: REDIS_URL is not set, every read goes to the database")
    return Cache(store, keys, stats, values["lock_wait_ms"] / 1000, values)


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookimpl
def lumen_startup(lumen):
    lumen.cache = build_cache(lumen.settings)


@hookimpl
def lumen_shutdown(lumen):
    lumen.cache.close()


@hookimpl
def lumen_before_serve(lumen):
    warm_once(lumen)


@hookimpl
def lumen_cli(group):
    from lumen_plugins.cache.cli import cache_group

    group.add_command(cache_group)


# ---------------------------------------------------------------------------
# Read-through and invalidation
# ---------------------------------------------------------------------------


@hookimpl
def lumen_cached(lumen, key, loader):
    return lumen.cache.get(key, loader)


def _invalidate_photo(lumen, event: str, photo, changes) -> None:
    lumen.cache.invalidate(
        invalidation.photo_changed(lumen.cache.keys, event, photo, changes), event
    )


@hookimpl
def lumen_photo_created(lumen, photo, changes):
    _invalidate_photo(lumen, invalidation.PHOTO_CREATED, photo, changes)


@hookimpl
def lumen_photo_updated(lumen, photo, changes):
    _invalidate_photo(lumen, invalidation.PHOTO_UPDATED, photo, changes)


@hookimpl
def lumen_photo_deleted(lumen, photo, changes):
    _invalidate_photo(lumen, invalidation.PHOTO_DELETED, photo, changes)


@hookimpl
def lumen_user_updated(lumen, user, changes):
    plan = invalidation.user_changed(lumen.cache.keys, user, changes)
    lumen.cache.invalidate(plan, invalidation.USER_UPDATED)


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@hookimpl
def lumen_metrics(lumen, registry):
    lumen.cache.stats.register(registry)


def _check(value, unit, status: str, output: str) -> dict:
    return {
        "componentType": "datastore",
        "observedValue": value,
        "observedUnit": unit,
        "status": status,
        "output": output,
    }


def check_hit_rate(cache: Cache) -> dict:
    try:
        figures = totals(cache.store.minute_buckets(HIT_RATE_WINDOW_MINUTES))
    except Unavailable:
        return _check(None, "percent", "warn", "Redis is unavailable: no hit rate")
    rate, lookups = figures["hit_rate"], figures["lookups"]
    low = rate is not None and lookups >= HIT_RATE_MIN_LOOKUPS and rate < HIT_RATE_WARN_BELOW
    output = (
        f"{figures['hits']} hits, {figures['misses']} misses in the last "
        f"{HIT_RATE_WINDOW_MINUTES} minutes"
    )
    if low:
        output += f"; below {HIT_RATE_WARN_BELOW:g} %"
    return _check(rate, "percent", "warn" if low else "pass", output)


def check_breaker(cache: Cache) -> dict:
    if not cache.enabled:
        return _check("off", None, "pass", "caching is off: REDIS_URL is not set")
    state = cache.store.breaker.state
    if state == CLOSED:
        return _check(state, None, "pass", "Redis answers")
    return _check(state, None, "warn", "Redis is unavailable: reads go to the database")


@hookimpl
def lumen_health_checks(lumen):
    cache = lumen.cache
    checks = {"cache:breaker": lambda: check_breaker(cache)}
    if cache.enabled:
        checks["cache:hitRate"] = lambda: check_hit_rate(cache)
    return checks
