"""``lumen cache warm|clear|stats``."""

from __future__ import annotations

import json

import click
from tqdm import tqdm

from lumen.cli import fail
from lumen_plugins.cache.stats import totals
from lumen_plugins.cache.store import Unavailable
from lumen_plugins.cache.warmup import warm

WINDOWS = {"5m": 5, "1h": 60, "24h": 24 * 60}


def _cache(obj):
    cache = obj.lumen.cache
    if not cache.enabled:
        fail("caching is off: REDIS_URL is not set", code=1)
    return cache


@click.group("cache")
def cache_group():
    """The Redis cache of this deployment (CACHE_KEY_PREFIX)."""


@cache_group.command("warm")
@click.option("--photos", type=click.IntRange(min=0), help="How many newest public photos.")
@click.pass_obj
def warm_command(obj, photos):
    """Load the newest public photos and the front page into the cache."""
    cache = _cache(obj)
    lumen = obj.lumen
    photos = cache.settings["warmup_photos"] if photos is None else photos
    with tqdm(total=photos, unit="photo", disable=None) as bar:
        try:
            result = warm(lumen, photos, lumen.settings.cache_warmup_batch_size, bar.update)
        except Unavailable:
            fail("Redis is unavailable", code=1)
    click.echo(f"warmed {result['stored']} entries ({result['photos']} photos looked at)")


@cache_group.command("clear")
@click.pass_obj
def clear_command(obj):
    """Delete every key under this deployment's prefix, and nothing else."""
    cache = _cache(obj)
    deleted = cache.store.clear()
    click.echo(f"deleted {deleted} keys under {cache.keys.pattern}")


@cache_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def stats_command(obj, as_json):
    """Hits, misses, hit rate, invalidations and errors of every worker, by time window."""
    cache = _cache(obj)
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
