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
from functools import cache

from sqlalchemy import Integer, bindparam, func, select, tuple_, union_all
from sqlalchemy.orm import Session

from lumen.models import VISIBILITIES, Photo
from lumen.photo_counts import owner_count_of, total_of
from lumen.records import records
from lumen.resources.paging import Page
from lumen.visibility import PUBLIC

Slice = tuple[str, uuid.UUID | None]  # (visibility, owner or None for every owner)

# Rows of the photos table, not ORM entities: a Core row has every attribute photo_record
# reads, and an entity (identity map, instrumented attributes) costs as much again as the
# query. The statements are built once for each shape of list and run with its values bound:
# building one (the union's column collections above all) cost more than running it.
PHOTOS = Photo.__table__
_COLUMNS = PHOTOS.c

# A list's shape, all its SQL depends on: (visibility, whether filtered by owner) of each
# slice, whether filtered by city, and the cursor: None, "after" (older) or "before" (newer).
Shape = tuple[tuple[tuple[str, bool], ...], bool, str | None]

_ROWS = bindparam("rows", type_=Integer)
_LIMIT = bindparam("limit", type_=Integer)
_OFFSET = bindparam("offset", type_=Integer)
_LOCATION = bindparam("location_id", type_=_COLUMNS.location_id.type)
_CURSOR = tuple_(
    bindparam("cursor_created_at", type_=_COLUMNS.created_at.type),
    bindparam("cursor_id", type_=_COLUMNS.id.type),
)


def _owner(number: int):
    """The owner of slice ``number``: the two slices of a list may have different owners."""
    return bindparam(f"owner_{number}", type_=_COLUMNS.owner_id.type)


def slices(viewer, owner_id) -> list[Slice]:
    """The slices of the list of ``owner_id``'s photos (None: everyone's) ``viewer`` sees:
    what lumen.visibility.visible_to says, as a union of index ranges."""
    parts: list[Slice] = [(PUBLIC, owner_id)]
    if viewer is not None and owner_id in (None, viewer.id):
        parts += [(visibility, viewer.id) for visibility in VISIBILITIES if visibility != PUBLIC]
    return parts


def _direction(page: Page) -> str | None:
    cursor = page.cursor
    if cursor is None:
        return None
    return "before" if cursor.before else "after"


def _parts(viewer, owner_id) -> tuple[tuple[str, bool], ...]:
    """(visibility, whether filtered by owner) of each slice of the list."""
    return tuple((visibility, owner is not None) for visibility, owner in slices(viewer, owner_id))


def _shape(viewer, page: Page, owner_id, location_id) -> Shape:
    return _parts(viewer, owner_id), location_id is not None, _direction(page)


def _filter_values(viewer, owner_id, location_id) -> dict:
    """The owner of each slice and the city, as bound in the page's and the total's
    statements (a value the shape does not use is ignored)."""
    values = {"location_id": location_id}
    for number, (_, owner) in enumerate(slices(viewer, owner_id)):
        values[f"owner_{number}"] = owner
    return values


def _page_values(page: Page) -> dict:
    values = {"rows": page.offset + page.limit + 1, "limit": page.limit + 1, "offset": page.offset}
    if page.cursor is not None:
        values["cursor_created_at"] = page.cursor.created_at
        values["cursor_id"] = page.cursor.id
    return values


def _conditions(visibility: str, owner, location) -> list:
    where = [_COLUMNS.visibility == visibility]
    if owner is not None:
        where.append(_COLUMNS.owner_id == owner)
    if location is not None:
        where.append(_COLUMNS.location_id == location)
    return where


def _ordered(columns, ascending: bool):
    if ascending:
        return columns.created_at.asc(), columns.id.asc()
    return columns.created_at.desc(), columns.id.desc()


@cache
def _slice_statement(number: int, visibility: str, by_owner: bool, by_location: bool, direction):
    """Slice ``number``'s rows from the page's position, in the order it is read, at most
    ``rows``."""
    owner = _owner(number) if by_owner else None
    location = _LOCATION if by_location else None
    query = select(PHOTOS).where(*_conditions(visibility, owner, location))
    if direction is not None:
        key = tuple_(_COLUMNS.created_at, _COLUMNS.id)
        query = query.where(key > _CURSOR if direction == "before" else key < _CURSOR)
    return query.order_by(*_ordered(_COLUMNS, direction == "before")).limit(_ROWS)


@cache
def _page_statement(shape: Shape):
    """The statement of a page: ``limit`` (the page's limit + 1: the one more says whether the
    list goes on) rows at most, in the order the page is read."""
    parts, by_location, direction = shape
    queries = [
        _slice_statement(number, visibility, by_owner, by_location, direction)
        for number, (visibility, by_owner) in enumerate(parts)
    ]
    if len(queries) == 1:
        return queries[0].limit(_LIMIT).offset(_OFFSET)
    # Each slice limited on its own index, then merged: at most 2 * rows rows are read.
    merged = union_all(*(select(query.subquery()) for query in queries)).subquery()
    return (
        select(merged)
        .order_by(*_ordered(merged.c, direction == "before"))
        .limit(_LIMIT)
        .offset(_OFFSET)
    )


@cache
def _total_statement(parts: tuple[tuple[str, bool], ...], by_location: bool):
    """The statement of the list's total: one scalar, the sum of its slices' counts."""
    counts = []
    for number, (visibility, by_owner) in enumerate(parts):
        owner = _owner(number) if by_owner else None
        if by_location:
            where = _conditions(visibility, owner, _LOCATION)
            counts.append(select(func.count()).select_from(PHOTOS).where(*where).scalar_subquery())
        elif owner is None:
            counts.append(total_of(visibility))
        else:
            counts.append(owner_count_of(owner, visibility))
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    return select(total)


# The statements with their values in them, as EXPLAIN and the tests read them; read_page runs
# the same statements with the values passed apart.


def slice_query(visibility: str, owner_id, location_id, page: Page, rows: int):
    """One slice's rows from the page's position, in the order it is read, at most ``rows``."""
    statement = _slice_statement(
        0, visibility, owner_id is not None, location_id is not None, _direction(page)
    )
    values = {**_page_values(page), "location_id": location_id, "owner_0": owner_id}
    return statement.params({**values, "rows": rows})


def page_query(viewer, page: Page, owner_id=None, location_id=None):
    shape = _shape(viewer, page, owner_id, location_id)
    values = {**_filter_values(viewer, owner_id, location_id), **_page_values(page)}
    return _page_statement(shape).params(values)


def total_query(viewer, owner_id=None, location_id=None):
    statement = _total_statement(_parts(viewer, owner_id), location_id is not None)
    return statement.params(_filter_values(viewer, owner_id, location_id))


def read_page(session: Session, viewer, page: Page, owner_id=None, location_id=None):
    """(rows of the photos newest first, whether the list goes on past them in the direction
    read, total)."""
    parts, by_location, direction = shape = _shape(viewer, page, owner_id, location_id)
    values = {**_filter_values(viewer, owner_id, location_id), **_page_values(page)}
    connection = session.connection()
    photos = records(connection, _page_statement(shape), values)
    more = len(photos) > page.limit
    photos = photos[: page.limit]
    if direction == "before":
        photos.reverse()
    total = connection.execute(_total_statement(parts, by_location), values).scalar_one()
    return photos, more, int(total)


def key_of(item: dict) -> tuple[datetime, uuid.UUID]:
    """The sort key of a photo's JSON, for the cursor of a Link header."""
    return datetime.fromisoformat(item["created_at"]), uuid.UUID(item["id"])
