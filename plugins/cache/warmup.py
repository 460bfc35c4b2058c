"""Warm-up: the newest public photos and the anonymous first page of the public list, read in
pipelined batches, so a new deployment does not start with every reader going to the database.

The same check-and-set as a request's store applies: a photo changed during the warm-up is not
written with its old value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select

from lumen.models import Photo
from lumen.resources.paging import DEFAULT_LIMIT, Page
from lumen.resources.photos import list_photos, lookup_locations, photo_record
from lumen_plugins.cache.cache import Cache, encode
from lumen_plugins.cache.store import Unavailable

log = logging.getLogger(__name__)

LOCK_NAME = "warmup"
LOCK_SECONDS = 600


def warm(
    lumen, photos: int, batch_size: int, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Warm the ``photos`` newest public photos; returns how many were looked at and stored.

    Raises Unavailable when Redis cannot be used.
    """
    cache: Cache = lumen.cache
    stored = 0
    with lumen.Session() as session:
        ids = session.scalars(
            select(Photo.id)
            .where(Photo.visibility == "public")
            .order_by(Photo.created_at.desc(), Photo.id.desc())
            .limit(photos)
        ).all()
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            stored += _warm_photos(lumen, cache, session, batch)
            if progress is not None:
                progress(len(batch))
        front_page = cache.keys.entry(f"photos:public:{DEFAULT_LIMIT}:0")
        found = cache.store.lookup_many([front_page])[0]
        if found.value is None:
            value = list_photos(lumen, session, None, Page(DEFAULT_LIMIT, 0))
            stored += cache.store.store_many([(front_page, found.stamp, encode(value))])
    return {"photos": len(ids), "stored": stored}


def _warm_photos(lumen, cache: Cache, session, photo_ids: list) -> int:
    entries = {photo_id: cache.keys.entry(f"meta:{photo_id}") for photo_id in photo_ids}
    # Stamps first, rows second: a photo changed in between is then not stored.
    found = dict(zip(photo_ids, cache.store.lookup_many(list(entries.values())), strict=True))
    missing = [photo_id for photo_id in photo_ids if found[photo_id].value is None]
    if not missing:
        return 0
    rows = session.scalars(select(Photo).where(Photo.id.in_(missing))).all()
    cities = lookup_locations(lumen, (photo.location_id for photo in rows))
    items = [
        (
            entries[photo.id],
            found[photo.id].stamp,
            encode(photo_record(photo, cities.get(photo.location_id))),
        )
        for photo in rows
    ]
    return cache.store.store_many(items)


def warm_once(lumen) -> None:
    """The deployment's warm-up (``lumen_before_serve``): one process at a time, even across
    hosts, through a short-lived lock in Redis."""
    settings, cache = lumen.settings, lumen.cache
    if not (settings.cache_warmup_enabled and cache.enabled):
        return
    try:
        token = cache.store.try_lock(LOCK_NAME, LOCK_SECONDS)
        if token is None:
            log.info("cache warm-up skipped: another process is warming")
            return
        try:
            result = warm(lumen, cache.settings["warmup_photos"], settings.cache_warmup_batch_size)
        finally:
            cache.store.unlock(LOCK_NAME, token)
    except Unavailable:
        log.warning("cache warm-up stopped: Redis is unavailable")
        return
    log.info("cache warmed", extra=result)
