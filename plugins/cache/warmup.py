"""Warm-up: the reads the core names as the first to fill (the newest public photos and the
anonymous first page of the public list), in pipelined batches, so a new deployment does not
start with every reader going to the database.

The same check-and-set as a request's store applies: a value changed during the warm-up is not
written with its old content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import falcon

from lumen import newest_public_reads
from lumen_plugins.cache.cache import Cache, encode
from lumen_plugins.cache.store import Unavailable

log = logging.getLogger(__name__)

LOCK_NAME = "warmup"
LOCK_SECONDS = 600


def warm(
    lumen, cache: Cache, photos: int, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Warm the ``photos`` newest public photos and the front page; returns how many photos
    were looked at and how many entries stored. Raises Unavailable when Redis cannot be used."""
    batch_size = cache.settings.warmup_batch_size
    stored = 0
    with lumen.Session() as session:
        reads = newest_public_reads(lumen, session, photos)
        for start in range(0, len(reads), batch_size):
            batch = reads[start : start + batch_size]
            entries = [cache.keys.entry(read.key, read.tags) for read in batch]
            # Stamps first, values second: a value changed in between is then not stored.
            found = cache.store.lookup_many(entries)
            items = []
            for read, entry, lookup in zip(batch, entries, found, strict=True):
                if lookup.value is not None or lookup.fenced:
                    continue
                try:
                    items.append((entry, lookup.stamp, encode(read.load())))
                except falcon.HTTPNotFound:
                    continue  # deleted since its id was read
            if items:
                stored += cache.store.store_many(items)
            if progress is not None:
                progress(len(batch))
    return {"photos": len(reads) - 1, "stored": stored}


def warm_once(lumen, cache: Cache) -> None:
    """The deployment's warm-up (``lumen_before_serve``): one process at a time, even across
    hosts, through a short-lived lock in Redis."""
    if not (cache.settings.warmup_enabled and cache.enabled):
        return
    try:
        token = cache.store.try_lock(LOCK_NAME, LOCK_SECONDS)
        if token is None:
            log.info("cache warm-up skipped: another process is warming")
            return
        try:
            result = warm(lumen, cache, cache.settings.warmup_photos)
        finally:
            cache.store.unlock(LOCK_NAME, token)
    except Unavailable:
        log.warning("cache warm-up stopped: Redis is unavailable")
        return
    log.info("cache warmed", extra=result)
