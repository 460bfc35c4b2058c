"""The cache plugin's pieces on their own: key names, the breaker, settings, statistics."""

import uuid

import pytest

from lumen.config import ConfigError, load_section
from lumen_plugins.cache import CacheSettings
from lumen_plugins.cache.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from lumen_plugins.cache.keys import Keys
from lumen_plugins.cache.stats import totals

PHOTO, OWNER = uuid.uuid4(), uuid.uuid4()


# --- keys --------------------------------------------------------------------------------------


def test_every_key_is_under_the_prefix_and_an_entry_depends_on_the_epoch_and_its_tags():
    keys = Keys("acme:prod")
    entry = keys.entry(f"photo:{PHOTO}", (f"photo:{PHOTO}", "cities"))
    assert entry.data == f"acme:prod:entry:photo:{PHOTO}"
    assert entry.lock == f"acme:prod:temp:lock:photo:{PHOTO}"
    assert entry.generations == (
        keys.epoch,
        keys.generation(f"photo:{PHOTO}"),
        keys.generation("cities"),
    )
    for key in (entry.data, entry.lock, *entry.generations):
        assert key.startswith("acme:prod:")


def test_the_scan_pattern_of_one_prefix_does_not_match_a_longer_one():
    import fnmatch

    keys = Keys("lumen")
    assert fnmatch.fnmatchcase("lumen:entry:photo:x", keys.pattern)
    assert not fnmatch.fnmatchcase("lumen2:entry:photo:x", keys.pattern)


# --- the breaker -------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_probes_once_after_the_cooldown():
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=5, clock=clock)
    assert breaker.allow()
    assert not breaker.failed() and not breaker.failed()
    breaker.succeeded()  # a success in between resets the count
    assert not breaker.failed() and not breaker.failed()
    assert breaker.failed() is True
    assert breaker.state == OPEN
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.succeeded()
    assert breaker.state == CLOSED
    assert breaker.allow()


def test_a_failed_probe_opens_the_breaker_for_another_cooldown():
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=5, clock=clock)
    assert breaker.failed()
    clock.now += 5
    assert breaker.allow()
    assert breaker.failed() is True
    assert breaker.state == OPEN
    clock.now += 4
    assert not breaker.allow()


# --- settings and statistics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CACHE_KEY_PREFIX", "lumen*"),
        ("CACHE_KEY_PREFIX", "a:"),
        ("CACHE_KEY_PREFIX", "{tag}"),
        ("CACHE_TTL_DAYS", "0"),
        ("CACHE_BREAKER_FAILURES", "many"),
        ("CACHE_BREAKER_COOLDOWN_S", "-1"),
        ("CACHE_WARMUP_ENABLED", "sometimes"),
    ],
)
def test_a_bad_setting_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        load_section(CacheSettings, {variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"invalid setting {variable}=")


def test_totals_sum_minute_buckets_into_a_hit_rate():
    figures = totals([{b"lookups": b"4", b"missed": b"1"}, {}, {b"lookups": b"4", b"errors": b"2"}])
    assert figures["hits"] == 7 and figures["misses"] == 1 and figures["errors"] == 2
    assert figures["hit_rate"] == 87.5
    assert totals([])["hit_rate"] is None


def test_totals_add_the_hits_and_misses_of_buckets_from_earlier_releases():
    figures = totals([{b"hits": b"3", b"misses": b"1"}, {b"lookups": b"2", b"missed": b"1"}])
    assert (figures["hits"], figures["misses"], figures["lookups"]) == (4, 2, 6)
