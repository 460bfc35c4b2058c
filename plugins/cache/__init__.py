"""Cache: Redis cache-aside for what clients read most, invalidated by the core's domain events
after commit, never serving a value older than a write that has returned (docs/cache.md).

Without REDIS_URL the plugin stays enabled and every read goes to the database.
"""

from __future__ import annotations

import logging

from marshmallow import validate

from lumen import SettingsSchema, boolean, hookimpl, positive_int, positive_number, text
from lumen_plugins.cache.breaker import CLOSED, Breaker
from lumen_plugins.cache.cache import Cache
from lumen_plugins.cache.keys import PREFIX_RULE, Keys
from lumen_plugins.cache.stats import Stats, totals
from lumen_plugins.cache.store import RedisStore, Unavailable
from lumen_plugins.cache.warmup import warm_once

log = logging.getLogger(__name__)

NAME = "cache"
# The health check's hit rate: over this window, and only once there is this much traffic.
HIT_RATE_WINDOW_MINUTES = 5
HIT_RATE_MIN_LOOKUPS = 100
HIT_RATE_WARN_BELOW = 70.0


class CacheSettings(SettingsSchema):
    key_prefix = text(
        "CACHE_KEY_PREFIX",
        "lumen",
        validate=[
            validate.Length(max=64),
            validate.Regexp(
                PREFIX_RULE, error="must be letters, digits, '_', '.', '-' in parts joined by ':'"
            ),
        ],
    )
    ttl_days = positive_number("CACHE_TTL_DAYS", 7.0)
    breaker_failures = positive_int("CACHE_BREAKER_FAILURES", 5)
    breaker_cooldown_s = positive_number("CACHE_BREAKER_COOLDOWN_S", 5.0)
    lock_wait_ms = positive_int("CACHE_LOCK_WAIT_MS", 200, minimum=0)
    warmup_enabled = boolean("CACHE_WARMUP_ENABLED", False)
    warmup_photos = positive_int("CACHE_WARMUP_PHOTOS", 1000, minimum=0)
    warmup_batch_size = positive_int("CACHE_WARMUP_BATCH_SIZE", 50)


def build_cache(lumen) -> Cache:
    section = lumen.settings_of(CacheSettings)
    keys, stats = Keys(section.key_prefix), Stats(lumen.tally)
    store = None
    if lumen.redis is not None:
        ttl_seconds = max(1, int(section.ttl_days * 86400))
        breaker = Breaker(section.breaker_failures, section.breaker_cooldown_s)
        store = RedisStore(lumen.redis, lumen.redis_calls, keys, ttl_seconds, breaker, stats)
    else:
        log.info("cache off: REDIS_URL is not set, every read goes to the database")
    return Cache(store, keys, stats, section.lock_wait_ms / 1000, section)


def cache_of(lumen) -> Cache:
    return lumen.state[NAME]


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookimpl
def lumen_settings():
    return CacheSettings


@hookimpl
def lumen_startup(lumen):
    lumen.state[NAME] = build_cache(lumen)


@hookimpl
def lumen_shutdown(lumen):
    cache_of(lumen).close()


@hookimpl
def lumen_before_serve(lumen):
    warm_once(lumen, cache_of(lumen))


@hookimpl
def lumen_cli(group):
    from lumen_plugins.cache.cli import cache_group

    group.add_command(cache_group)


# ---------------------------------------------------------------------------
# Read-through and purges
# ---------------------------------------------------------------------------


@hookimpl
def lumen_cached(lumen, key, tags, loader):
    return cache_of(lumen).get(key, tags, loader)


@hookimpl
def lumen_prefetch(lumen, key, tags):
    cache_of(lumen).prefetch(key, tags)


@hookimpl
def lumen_purge_before_commit(lumen, tags, change):
    cache_of(lumen).purge_before_commit(tags, change)


@hookimpl
def lumen_purge(lumen, tags, change):
    cache_of(lumen).purge(tags, change)


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@hookimpl
def lumen_metrics(lumen, registry):
    cache_of(lumen).stats.register(registry)


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
    cache = cache_of(lumen)
    checks = {"cache:breaker": lambda: check_breaker(cache)}
    if cache.enabled:
        checks["cache:hitRate"] = lambda: check_hit_rate(cache)
    return checks
