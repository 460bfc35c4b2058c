"""``lumen cache warm|clear|stats``."""

from __future__ import annotations

import json

import click
from tqdm import tqdm

from lumen import fail, pass_lumen
from lumen_plugins.cache import cache_of
from lumen_plugins.cache.stats import totals
from lumen_plugins.cache.store import Unavailable
from lumen_plugins.cache.warmup import warm

WINDOWS = {"5m": 5, "1h": 60, "24h": 24 * 60}


def _cache(lumen):
    cache = cache_of(lumen)
    if not cache.enabled:
        fail("caching is off: REDIS_URL is not set", code=1)
    return cache


@click.group("cache")
def cache_group():
    """The Redis cache of this deployment (CACHE_KEY_PREFIX)."""


@cache_group.command("warm")
@click.option("--photos", type=click.IntRange(min=0), help="How many newest public photos.")
@pass_lumen
def warm_command(lumen, photos):
    """Load the newest public photos and the front page into the cache."""
    cache = _cache(lumen)
    photos = cache.settings.warmup_photos if photos is None else photos
    with tqdm(total=photos + 1, unit="entry", disable=None) as bar:
        try:
            result = warm(lumen, cache, photos, bar.update)
        except Unavailable:
            fail("Redis is unavailable", code=1)
    click.echo(f"warmed {result['stored']} entries ({result['photos']} photos looked at)")


@cache_group.command("clear")
@pass_lumen
def clear_command(lumen):
    """Delete every key under this deployment's prefix, and nothing else."""
    cache = _cache(lumen)
    deleted = cache.store.clear()
    click.echo(f"deleted {deleted} keys under {cache.keys.pattern}")


@cache_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_lumen
def stats_command(lumen, as_json):
    """Hits, misses, hit rate, invalidations and errors of every worker, by time window."""
    cache = _cache(lumen)
    try:
        buckets = cache.store.minute_buckets(WINDOWS["24h"])
    except Unavailable:
        fail("Redis is unavailable", code=1)
    figures = {name: totals(buckets[-minutes:]) for name, minutes in WINDOWS.items()}
    report = {"prefix": cache.keys.prefix, "windows": figures}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"prefix {cache.keys.prefix}")
    for name, f in figures.items():
        rate = "-" if f["hit_rate"] is None else f"{f['hit_rate']} %"
        click.echo(
            f"last {name:>3}: hit rate {rate}, {f['hits']} hits, {f['misses']} misses, "
            f"{f['invalidations']} invalidations, {f['errors']} errors"
        )
