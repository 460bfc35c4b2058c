"""The queries behind every list of photos: a page in keyset order and its total, at a cost
that does not grow with the table.

A list is the union of at most two slices, each one visibility with equality filters (owner,
city): the public photos, and for a signed-in caller their own private ones. Each slice is a
range of one index ending in (created_at, id) (see the indexes of lumen.models.Photo), read
newest first from the cursor and stopped by the LIMIT: the first page and the five-thousandth
cost the same. An OR of the two (``visibility = 'public' OR owner_id = me``) could use no
single index in that order, so the database would sort every visible photo for each page.

The total is read from the counters (lumen.photo_counts); a list filtered by city counts the
rows of that city's slice of its index instead (bounded by the photos of that city).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, tuple_, union_all
from sqlalchemy.orm import Session, aliased

from lumen.models import VISIBILITIES, Photo
from lumen.photo_counts import owner_count_of, total_of
from lumen.resources.paging import Page
from lumen.visibility import PUBLIC

Slice = tuple[str, uuid.UUID | None]  # (visibility, owner or None for every owner)


def slices(viewer, owner_id) -> list[Slice]:
    """The slices of the list of ``owner_id``'s photos (None: everyone's) ``viewer`` sees:
    what lumen.visibility.visible_to says, as a union of index ranges."""
    parts: list[Slice] = [(PUBLIC, owner_id)]
    if viewer is not None and owner_id in (None, viewer.id):
        parts += [(visibility, viewer.id) for visibility in VISIBILITIES if visibility != PUBLIC]
    return parts


def _conditions(visibility: str, owner_id, location_id) -> list:
    where = [Photo.visibility == visibility]
    if owner_id is not None:
        where.append(Photo.owner_id == owner_id)
    if location_id is not None:
        where.append(Photo.location_id == location_id)
    return where


def _ordered(entity, ascending: bool):
    if ascending:
        return entity.created_at.asc(), entity.id.asc()
    return entity.created_at.desc(), entity.id.desc()


def slice_query(visibility: str, owner_id, location_id, page: Page, rows: int):
    """One slice's rows from the page's position, in the order it is read, at most ``rows``."""
    query = select(Photo).where(*_conditions(visibility, owner_id, location_id))
    cursor = page.cursor
    ascending = cursor is not None and cursor.before
    if cursor is not None:
        key, bound = tuple_(Photo.created_at, Photo.id), (cursor.created_at, cursor.id)
        query = query.where(key > bound if cursor.before else key < bound)
    return query.order_by(*_ordered(Photo, ascending)).limit(rows)


def page_query(viewer, page: Page, owner_id=None, location_id=None):
    """The statement of a page: ``page.limit + 1`` rows at most (the one more says whether
    the list goes on), in the order the page is read."""
    ascending = page.cursor is not None and page.cursor.before
    rows = page.offset + page.limit + 1
    parts = [
        slice_query(visibility, owner, location_id, page, rows)
        for visibility, owner in slices(viewer, owner_id)
    ]
    if len(parts) == 1:
        return parts[0].limit(page.limit + 1).offset(page.offset)
    # Each slice limited on its own index, then merged: at most 2 * rows rows are read.
    union = union_all(*(select(part.subquery()) for part in parts)).subquery()
    merged = aliased(Photo, union)
    return (
        select(merged)
        .order_by(*_ordered(merged, ascending))
        .limit(page.limit + 1)
        .offset(page.offset)
    )


def total_query(viewer, owner_id=None, location_id=None):
    """The statement of the list's total: one scalar, the sum of its slices' counts."""
    counts = []
    for visibility, owner in slices(viewer, owner_id):
        if location_id is not None:
            where = _conditions(visibility, owner, location_id)
            counts.append(select(func.count()).select_from(Photo).where(*where).scalar_subquery())
        elif owner is None:
            counts.append(total_of(visibility))
        else:
            counts.append(owner_count_of(owner, visibility))
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    return select(total)


def read_page(session: Session, viewer, page: Page, owner_id=None, location_id=None):
    """(photos newest first, whether the list goes on past them in the direction read, total)."""
    photos = list(session.scalars(page_query(viewer, page, owner_id, location_id)))
    more = len(photos) > page.limit
    photos = photos[: page.limit]
    if page.cursor is not None and page.cursor.before:
        photos.reverse()
    total = session.scalar(total_query(viewer, owner_id, location_id))
    return photos, more, int(total)


def key_of(item: dict) -> tuple[datetime, uuid.UUID]:
    """The sort key of a photo's JSON, for the cursor of a Link header."""
    return datetime.fromisoformat(item["created_at"]), uuid.UUID(item["id"])
