"""The cache plugin's pieces on their own: key names, invalidation plans, the breaker, settings."""

import uuid
from types import SimpleNamespace

import pytest

from lumen.config import ConfigError, load_settings
from lumen_plugins.cache import build_cache, invalidation
from lumen_plugins.cache.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from lumen_plugins.cache.keys import MAX_CACHED_OFFSET, Keys
from lumen_plugins.cache.stats import totals

PHOTO, OWNER = uuid.uuid4(), uuid.uuid4()


# --- keys --------------------------------------------------------------------------------------


def test_every_key_is_under_the_prefix_and_a_photo_shares_one_hash_tag():
    keys = Keys("acme:prod")
    meta, urls = keys.entry(f"meta:{PHOTO}"), keys.entry(f"urls:{PHOTO}")
    assert meta.data == f"acme:prod:meta:{{{PHOTO}}}"
    assert urls.data == f"acme:prod:urls:{{{PHOTO}}}"
    assert meta.generations == (keys.epoch, keys.photo_generation(PHOTO))
    for key in (meta.data, meta.lock, urls.data, keys.photo_generation(PHOTO)):
        assert key.startswith("acme:prod:")
        assert f"{{{PHOTO}}}" in key  # the Redis Cluster hash tag
    assert meta.lock.startswith("acme:prod:temp:lock:")


def test_user_keys_share_the_user_hash_tag():
    keys = Keys("lumen")
    profile = keys.entry(f"user:{OWNER}:profile")
    page = keys.entry(f"user:{OWNER}:photos:all:20:0")
    assert profile.data == f"lumen:user:{{{OWNER}}}:profile"
    assert page.data == f"lumen:user:{{{OWNER}}}:photos:all:20:0"
    assert profile.generations[1] == keys.user_profile_generation(OWNER)
    assert page.generations[1] == keys.user_photos_generation(OWNER)


def test_only_first_pages_and_known_kinds_are_cached():
    keys = Keys("lumen")
    assert keys.entry(f"photos:public:20:{MAX_CACHED_OFFSET - 1}") is not None
    assert keys.entry(f"photos:public:20:{MAX_CACHED_OFFSET}") is None
    assert keys.entry(f"user:{OWNER}:photos:all:20:{MAX_CACHED_OFFSET}") is None
    assert keys.entry(f"user:{OWNER}:photos:friends:20:0") is None
    assert keys.entry("photos:public:x:0") is None
    assert keys.entry("temp:anything") is None
    assert keys.entry("meta:{evil}") is None
    assert keys.entry("meta:*") is None


def test_the_scan_pattern_of_one_prefix_does_not_match_a_longer_one():
    import fnmatch

    keys = Keys("lumen")
    assert fnmatch.fnmatchcase("lumen:meta:{x}", keys.pattern)
    assert not fnmatch.fnmatchcase("lumen2:meta:{x}", keys.pattern)


# --- invalidation plans ------------------------------------------------------------------------


def _photo(visibility):
    return SimpleNamespace(id=PHOTO, owner_id=OWNER, visibility=visibility)


def _all_fields(visibility):
    return {"caption": (None, "c"), "visibility": (None, visibility), "location_id": (None, None)}


@pytest.mark.parametrize(
    ("event", "visibility", "changes", "expected"),
    [
        (invalidation.PHOTO_CREATED, "public", "all", {"photos", "profile", "public"}),
        (invalidation.PHOTO_CREATED, "private", "all", {"photos", "profile"}),
        (invalidation.PHOTO_DELETED, "public", "all", {"photo", "photos", "profile", "public"}),
        (invalidation.PHOTO_DELETED, "private", "all", {"photo", "photos", "profile"}),
        (
            invalidation.PHOTO_UPDATED,
            "private",
            {"visibility": ("public", "private")},
            {"photo", "photos", "profile", "public"},
        ),
        (
            invalidation.PHOTO_UPDATED,
            "public",
            {"caption": ("a", "b")},
            {"photo", "photos", "public"},
        ),
        (invalidation.PHOTO_UPDATED, "private", {"location_id": (1, 2)}, {"photo", "photos"}),
    ],
)
def test_photo_events_bump_the_generations_of_what_they_change(
    event, visibility, changes, expected
):
    keys = Keys("lumen")
    changes = _all_fields(visibility) if changes == "all" else changes
    plan = invalidation.photo_changed(keys, event, _photo(visibility), changes)
    names = {
        keys.photo_generation(PHOTO): "photo",
        keys.user_photos_generation(OWNER): "photos",
        keys.user_profile_generation(OWNER): "profile",
        keys.public_generation: "public",
    }
    assert {names[g] for g in plan.generations} == expected
    assert keys.epoch not in plan.generations
    own_entries = {keys.entry(f"meta:{PHOTO}").data, keys.entry(f"urls:{PHOTO}").data}
    assert set(plan.deletions) == (own_entries if "photo" in expected else set())


def test_a_user_update_touches_the_profile_only():
    keys = Keys("lumen")
    plan = invalidation.user_changed(keys, SimpleNamespace(id=OWNER), {"display_name": ("a", "b")})
    assert plan.generations == (keys.user_profile_generation(OWNER),)
    assert plan.deletions == ()


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
        ("CACHE_REDIS_TIMEOUT_MS", "0"),
        ("CACHE_BREAKER_FAILURES", "many"),
        ("CACHE_BREAKER_COOLDOWN_S", "-1"),
    ],
)
def test_a_bad_setting_names_the_variable(variable, value):
    settings = load_settings({variable: value})
    with pytest.raises(ConfigError) as caught:
        build_cache(settings)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"invalid setting {variable}=")


def test_totals_sum_minute_buckets_into_a_hit_rate():
    figures = totals([{b"hits": b"3", b"misses": b"1"}, {}, {b"hits": b"4", b"errors": b"2"}])
    assert figures["hits"] == 7 and figures["misses"] == 1 and figures["errors"] == 2
    assert figures["hit_rate"] == 87.5
    assert totals([])["hit_rate"] is None
