"""Photos: adding, editing, deleting and reading them, and what each read caches.

The cache contract lives here, beside the domain: every cached read names its key and the tags
it depends on, and every change names the tags it purges (docs/cache.md has the table). A cache
plugin stores and invalidates by those names and knows nothing of photos.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import falcon
from sqlalchemy import bindparam, func, select, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lumen import events, images, photo_lists
from lumen.caching import CachedRead
from lumen.errors import invalid
from lumen.jsonenc import dumps as json_dumps
from lumen.jsonenc import loads as json_loads
from lumen.models import Photo, User
from lumen.records import records
from lumen.resources.paging import Cursor, Page
from lumen.session import after_commit, after_rollback
from lumen.storage import Incoming
from lumen.users import profile_tag
from lumen.visibility import PUBLIC, may_see, sees_everything_of, visible_to

log = logging.getLogger(__name__)

EDITABLE_FIELDS = ("caption", "visibility", "location_id")
# Only first pages are cached: the number of list entries stays bounded whatever clients ask.
MAX_CACHED_OFFSET = 100
# The shapes of a cached page's value (list_photos) and of a photo's (pack_record), in their
# keys: workers of two versions that share a cache while a deployment rolls over never read
# each other's values.
PAGE_FORMAT = "v3"
RECORD_FORMAT = "v2"

# --- the cache contract ------------------------------------------------------------------------

PUBLIC_PHOTOS_TAG = "photos:public"
CITIES_TAG = "cities"  # every entry that embeds a city: a gazetteer re-import purges it


def photo_tag(photo_id) -> str:
    return f"photo:{photo_id}"


@functools.lru_cache(maxsize=4096)  # a read names them twice (its prefetch, then its lookup)
def _photo_entry(photo_id) -> tuple[str, tuple[str, str]]:
    tag = photo_tag(photo_id)
    return f"{tag}:{RECORD_FORMAT}", (tag, CITIES_TAG)


def owner_photos_tag(user_id) -> str:
    return f"user:{user_id}:photos"


def photo_read(lumen, session: Session, photo_id) -> CachedRead:
    """The read of a photo's record, packed (``pack_record``)."""
    key, tags = _photo_entry(photo_id)
    return CachedRead(key, tags, lambda: load_record(lumen, session, photo_id))


def list_read(lumen, session: Session, viewer, page: Page, owner_id, location_id) -> CachedRead:
    """A page of photos, with its key and tags when it is worth caching (key None: it is not:
    filtered by place, a signed-in caller's mixed list, beyond the first pages, or a cursor's
    page, whose positions are as many as the photos)."""

    def load():
        return list_photos(lumen, session, viewer, page, owner_id, location_id)

    key, tags = None, ()
    if location_id is None and page.cursor is None and page.offset < MAX_CACHED_OFFSET:
        if owner_id is None and viewer is None:
            key = f"photos:public:{page.limit}:{page.offset}:{PAGE_FORMAT}"
            tags = (PUBLIC_PHOTOS_TAG,)
        elif owner_id is not None:
            scope = "all" if sees_everything_of(viewer, owner_id) else "public"
            key = f"user:{owner_id}:photos:{scope}:{page.limit}:{page.offset}:{PAGE_FORMAT}"
            tags = (owner_photos_tag(owner_id),)
    return CachedRead(key, (*tags, CITIES_TAG), load)


def purges(event: str, photo: Photo, changes: dict) -> tuple[str, ...]:
    """The tags a photo event purges; ``changes`` maps field -> (old, new)."""
    # The owner's lists hold every one of their photos; any change shows there.
    tags = [owner_photos_tag(photo.owner_id)]
    if event != events.PHOTO_CREATED:
        # A new photo has no entry of its own yet: nobody could read its id before the commit.
        tags.append(photo_tag(photo.id))
    if event != events.PHOTO_UPDATED or "visibility" in changes:
        # The profile counts the owner's photos, and the public ones apart.
        tags.append(profile_tag(photo.owner_id))
    if photo.visibility == PUBLIC or PUBLIC in changes.get("visibility", ()):
        tags.append(PUBLIC_PHOTOS_TAG)
    return tuple(tags)


def narrows(event: str, changes: dict) -> bool:
    """Whether the change hides what could be seen before: a photo deleted, or made private.
    Its tags are purged before the commit too (lumen.events), so no worker goes on serving
    the photo once the change has committed, even one whose purge after the commit is lost."""
    if event == events.PHOTO_DELETED:
        return True
    old, new = changes.get("visibility", (None, None))
    return event == events.PHOTO_UPDATED and old == PUBLIC and new != PUBLIC


def record_event(session: Session, event: str, photo: Photo, changes: dict) -> None:
    events.record(
        session,
        event,
        purges=purges(event, photo, changes),
        narrows=narrows(event, changes),
        photo=photo,
        changes=changes,
    )


def created_fields(photo: Photo) -> dict:
    return {field: (None, getattr(photo, field)) for field in EDITABLE_FIELDS}


# --- records: what is served, and cached ---------------------------------------------------------


def image_url(photo_id, size: str, sha256: str) -> str:
    # The content hash in the URL makes it safe to cache forever: new bytes, new URL.
    return f"/api/v1/photos/{photo_id}/image?size={size}&v={sha256[:16]}"


def _timestamp(value) -> str | None:
    return value.isoformat() if value is not None else None


def photo_record(photo: Photo | tuple, city: dict | None) -> dict[str, Any]:
    """What the cache keeps of a photo (an entity, or a record of the photos table, see
    lumen.records): its JSON as anyone but the owner sees it, what differs for the owner
    (``owner``: None when nothing does), and where its files are.

    Where the original carries location metadata, others see the copy without it: its URL, its
    sha256 and size (the original's hash would let a guess of the removed bytes be checked).
    Built by hand rather than through PhotoSchema.dump, which costs a third of a list request;
    tests hold the two to the same shape."""
    public = photo.public_sha256 is not None
    body = {
        "id": str(photo.id),
        "owner_id": str(photo.owner_id),
        "caption": photo.caption,
        "visibility": photo.visibility,
        "location": city,
        "width": photo.width,
        "height": photo.height,
        "content_type": photo.content_type,
        "size_bytes": photo.public_size_bytes if public else photo.size_bytes,
        "sha256": photo.public_sha256 if public else photo.sha256,
        "taken_at": _timestamp(photo.taken_at),
        "created_at": _timestamp(photo.created_at),
        "updated_at": _timestamp(photo.updated_at),
        "urls": {
            "original": image_url(photo.id, "original", photo.public_sha256 or photo.sha256),
            "thumbnail": image_url(photo.id, "thumb", photo.thumb_sha256),
        },
    }
    files = {
        "original": [photo.sha256, photo.content_type],
        "thumb": [photo.thumb_sha256, photo.thumb_content_type],
    }
    owner = None
    if public:
        files["public"] = [photo.public_sha256, photo.content_type]
        owner = {
            "sha256": photo.sha256,
            "size_bytes": photo.size_bytes,
            "urls": {**body["urls"], "original": image_url(photo.id, "original", photo.sha256)},
        }
    return {"photo": body, "owner": owner, "files": files}


def owned_by(viewer, owner_id: str) -> bool:
    """Whether ``viewer`` (a user or None) is the owner whose id ``owner_id`` is."""
    return viewer is not None and str(viewer.id) == owner_id


def pack_record(record: dict) -> bytes:
    """A photo's record as its cache keeps it, three lines (compact JSON never holds a
    newline): who owns it and who may see it, what the owner sees differently and where the
    files are, then the photo's JSON as anyone but the owner is sent it. A hit reads the first
    line alone and sends the third as it is: decoding a whole 900-byte record and encoding its
    JSON again cost more than the rest of the read."""
    photo = record["photo"]
    return b"\n".join(
        (
            json_dumps((photo["owner_id"], photo["visibility"])),
            json_dumps({"owner": record["owner"], "files": record["files"]}),
            json_dumps(photo),
        )
    )


class PhotoRecord:
    """A packed record (``pack_record``), its middle line decoded only when asked for."""

    __slots__ = ("owner_id", "visibility", "body", "_middle", "_decoded")

    def __init__(self, packed: bytes):
        head, self._middle, self.body = packed.split(b"\n", 2)
        self.owner_id, self.visibility = json_loads(head)
        self._decoded = None

    def _details(self) -> dict:
        if self._decoded is None:
            self._decoded = json_loads(self._middle)
        return self._decoded

    @property
    def files(self) -> dict:
        return self._details()["files"]

    def is_owner(self, viewer) -> bool:
        return owned_by(viewer, self.owner_id)

    def seen_by(self, viewer) -> bytes:
        """The photo's JSON as ``viewer`` is sent it (as_seen_by)."""
        if self.is_owner(viewer):
            owner = self._details()["owner"]
            if owner:  # the original carries location metadata that others do not get
                return json_dumps({**json_loads(self.body), **owner})
        return self.body


def as_seen_by(record: dict, viewer) -> dict:
    """A photo's JSON as ``viewer`` gets it: the owner sees their exact bytes (URL, sha256,
    size); everyone else the copy without location metadata."""
    body, owner = record["photo"], record.get("owner")
    if owner and owned_by(viewer, body["owner_id"]):
        return {**body, **owner}
    return body


def image_file(record: PhotoRecord, size: str, viewer) -> tuple[str, str, bool]:
    """(sha256, content type, whether it is the owner's exact bytes that others never get) of
    the file ``viewer`` downloads for ``size`` (original or thumb)."""
    files = record.files
    if size == "original" and "public" in files:
        if record.is_owner(viewer):
            return (*files["original"], True)
        return (*files["public"], False)
    return (*files[size], False)


def lookup_locations(lumen, location_ids: Iterable[int | None]) -> dict[int, dict]:
    ids = sorted({i for i in location_ids if i is not None})
    if not ids:
        return {}
    return lumen.hook.lumen_location_lookup(lumen=lumen, location_ids=ids) or {}


def render(lumen, photos: Sequence[Photo | tuple], viewer) -> list[dict]:
    """The photos' JSON as ``viewer`` sees them (entities, or records of the photos table as
    the lists read them)."""
    cities = lookup_locations(lumen, (p.location_id for p in photos))
    return [as_seen_by(photo_record(p, cities.get(p.location_id)), viewer) for p in photos]


def not_found() -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Not found", description="id: no such photo")


# Built once, run with the id bound. A record has the attributes photo_record reads; an ORM
# entity (identity map, instrumented attributes) cost about as much again as the query.
_PHOTO_BY_ID = select(Photo.__table__).where(Photo.__table__.c.id == bindparam("photo_id"))


def load_record(lumen, session: Session, photo_id) -> bytes:
    """The photo's record, packed (``pack_record``), else a 404."""
    found = records(session.connection(), _PHOTO_BY_ID, {"photo_id": photo_id})
    if not found:
        raise not_found()
    photo = found[0]
    city = lookup_locations(lumen, [photo.location_id]).get(photo.location_id)
    return pack_record(photo_record(photo, city))


def visible_record(lumen, session: Session, photo_id, viewer) -> PhotoRecord:
    """The record of a photo ``viewer`` may see (through the cache), else a 404."""
    record = PhotoRecord(photo_read(lumen, session, photo_id).through(lumen))
    if not may_see(viewer, record.owner_id, record.visibility):
        raise not_found()
    return record


def list_photos(lumen, session: Session, viewer, page: Page, owner_id=None, location_id=None):
    """A page of the photos ``viewer`` may see, newest first, packed (``pack_page``): the
    items' JSON as the answer sends it (``body``), how many (``count``), their total, whether
    the list goes on past the page (``more``, in the direction the page was read), and the
    cursors of its ends (``first``: before the first item, ``last``: after the last; None
    without items)."""
    photos, more, total = photo_lists.read_page(session, viewer, page, owner_id, location_id)
    # Rendered for this viewer: each cached list is read by one kind of viewer only (its key
    # says which: anonymous, the owner, or anyone but the owner).
    items = render(lumen, photos, viewer)
    # Encoded once, when read from the database: a cached page is sent as it was kept, with
    # nothing to decode and encode again (a 20-photo page is 13 KB of JSON).
    ends = (items[0], items[-1]) if items else None
    fields = {
        "count": len(items),
        "total": total,
        "more": more,
        "first": Cursor(*photo_lists.key_of(ends[0]), before=True).encode() if ends else None,
        "last": Cursor(*photo_lists.key_of(ends[1])).encode() if ends else None,
    }
    return pack_page(fields, json_dumps(items))


def visible_page(lumen, session: Session, viewer, page: Page, owner_id=None, location_id=None):
    """``list_photos``' page (through the cache), its ``body`` the JSON bytes sent."""
    read = list_read(lumen, session, viewer, page, owner_id, location_id)
    return unpack_page(read.through(lumen))


def pack_page(fields: dict, body: bytes) -> bytes:
    """A page as its cache keeps it: its fields' JSON, a newline (which compact JSON never
    holds), then the body as it is sent. Kept as a JSON string, a 13 KB body is full of
    escaped quotes, and parsing them back took more time than the rest of a cached read."""
    return json_dumps(fields) + b"\n" + body


def unpack_page(packed: bytes) -> dict:
    fields, _, body = packed.partition(b"\n")
    return {**json_loads(fields), "body": body}


def newest_public_reads(lumen, session: Session, count: int) -> list[CachedRead]:
    """The reads a cache warm-up should fill first: the ``count`` newest public photos and the
    anonymous first page of the list."""
    ids = session.scalars(
        select(Photo.id)
        .where(visible_to(None))
        .order_by(Photo.created_at.desc(), Photo.id.desc())
        .limit(count)
    ).all()
    front_page = list_read(lumen, session, None, Page.first(), None, None)
    return [photo_read(lumen, session, photo_id) for photo_id in ids] + [front_page]


# --- changes -----------------------------------------------------------------------------------


class DuplicatePhoto(falcon.HTTPConflict):
    """409 naming the photo that already holds these bytes (``existing_id`` in the body)."""

    def __init__(self, existing_id):
        self.existing_id = str(existing_id) if existing_id is not None else None
        description = "file: you already uploaded this image"
        headers = None
        if self.existing_id:
            description += f" as photo {self.existing_id}"
            headers = {"Location": f"/api/v1/photos/{self.existing_id}"}
        super().__init__(title="Duplicate photo", description=description, headers=headers)

    def to_dict(self, obj_type=dict):
        body = super().to_dict(obj_type)
        body["existing_id"] = self.existing_id
        return body


def check_location(lumen, location_id: int | None) -> None:
    if location_id is None:
        return
    if not lumen.pm.hook.lumen_location_lookup.get_hookimpls():
        raise invalid("location_id", "locations are not enabled on this server")
    if location_id not in lookup_locations(lumen, [location_id]):
        raise invalid("location_id", "no such location")


def nearest_location_id(lumen, latitude: float, longitude: float) -> int | None:
    """The nearest city's id, or None: a failing locations plugin must not fail the upload."""
    try:
        city = lumen.hook.lumen_nearest_location(
            lumen=lumen, latitude=latitude, longitude=longitude
        )
    except Exception:
        log.exception("nearest location lookup failed")
        return None
    return city["id"] if city else None


def inspect_upload(path, examine):
    """What ``examine`` reads of the received image, or the 413/415 that refuses it."""
    try:
        return examine(path)
    except images.ImageTooLarge as exc:
        raise falcon.HTTPContentTooLarge(
            title="Image too large", description=f"file: {exc}"
        ) from None
    except images.UnsupportedImage as exc:
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported image", description=f"file: {exc}"
        ) from None


def new_photo(
    owner_id, original: Incoming, thumb: Incoming, info, public: Incoming | None = None, **fields
) -> Photo:
    """The row of a photo whose files were received (uploads and ``lumen seed``); ``public``
    is the copy without location metadata, when the original carries some."""
    return Photo(
        owner_id=owner_id,
        width=info.width,
        height=info.height,
        content_type=info.content_type,
        size_bytes=original.size,
        sha256=original.sha256,
        thumb_sha256=thumb.sha256,
        thumb_content_type=images.THUMBNAIL_CONTENT_TYPE,
        thumb_size_bytes=thumb.size,
        public_sha256=public.sha256 if public is not None else None,
        public_size_bytes=public.size if public is not None else None,
        taken_at=info.taken_at,
        latitude=info.latitude,
        longitude=info.longitude,
        **fields,
    )


def add_photo(lumen, session: Session, owner, incoming: Incoming, data: dict) -> Photo:
    """Validate the received file, keep it with its thumbnail (and its copy without location
    metadata, when it carries some), and add the photo's row. Files first, row second; a
    transaction that does not commit takes back the files it made."""
    storage = lumen.storage
    settings = lumen.settings
    max_pixels = int(settings.max_image_megapixels * 1e6)
    info, thumb_bytes = inspect_upload(
        incoming.path, lambda path: images.process(path, settings.thumbnail_size, max_pixels)
    )
    thumb = storage.receive_bytes(thumb_bytes)
    public = None
    try:
        stripped = inspect_upload(incoming.path, images.without_location)
        if stripped is not None:
            public = storage.receive_bytes(stripped)
            del stripped
        files = [f for f in (incoming, thumb, public) if f is not None]
        # Held until the transaction ends: from here to the commit no other request can
        # delete these files, and a second upload of the same bytes waits to see this one.
        release = storage.lock(*(f.sha256 for f in files))
        after_commit(session, release)
        after_rollback(session, release)
        return _insert(lumen, session, owner, incoming, thumb, public, info, data)
    finally:
        for received in (thumb, public):
            if received is not None:
                received.discard()  # no-op once kept


# --- quotas --------------------------------------------------------------------------------------


def _stored_files(*where):
    """(sha256, size) of every file photos refer to, each file once (UNION drops the repeats:
    identical bytes are stored once, however many photos share them)."""
    return union(
        select(Photo.sha256.label("sha256"), Photo.size_bytes.label("size")).where(
            *(w(Photo.sha256) for w in where)
        ),
        select(Photo.thumb_sha256, Photo.thumb_size_bytes).where(
            *(w(Photo.thumb_sha256) for w in where)
        ),
        select(Photo.public_sha256, Photo.public_size_bytes).where(
            Photo.public_sha256.is_not(None), *(w(Photo.public_sha256) for w in where)
        ),
    ).subquery()


def stored_bytes(session: Session) -> int:
    """The bytes the photos' files take on disk, each file counted once."""
    files = _stored_files()
    return session.scalar(select(func.coalesce(func.sum(files.c.size), 0)))


def user_bytes(session: Session, owner_id) -> int:
    """The bytes of a user's photos (original, thumbnail and public copy), shared or not."""
    size = Photo.size_bytes + Photo.thumb_size_bytes + func.coalesce(Photo.public_size_bytes, 0)
    return session.scalar(
        select(func.coalesce(func.sum(size), 0)).where(Photo.owner_id == owner_id)
    )


def check_quotas(lumen, session: Session, owner, files: list[Incoming]) -> None:
    """507 when these new files would take the store past MAX_STORAGE_GB (counting only
    files not stored yet) or their owner past MAX_USER_STORAGE_GB (counting them all)."""
    limit_gb = lumen.settings.max_user_storage_gb
    if limit_gb is not None:
        # One upload of a user at a time from here to the commit, so parallel uploads cannot
        # all pass the check on the same total: a write that changes nothing locks the user's
        # row (PostgreSQL) or takes the write lock before the sum is read (SQLite, whose
        # reads outside a write take no lock, so SELECT ... FOR UPDATE would not do).
        lock = update(User).where(User.id == owner.id).values(updated_at=User.updated_at)
        session.execute(lock.execution_options(synchronize_session=False))
        if user_bytes(session, owner.id) + sum(f.size for f in files) > limit_gb * 1024**3:
            raise falcon.HTTPError(
                falcon.HTTP_507,
                title="Insufficient storage",
                description="file: your storage quota (MAX_USER_STORAGE_GB) would be exceeded",
            )
    shas = {f.sha256 for f in files}
    known = _stored_files(lambda column: column.in_(shas))
    stored = set(session.scalars(select(known.c.sha256)))
    new = sum({f.sha256: f.size for f in files if f.sha256 not in stored}.values())
    if new and stored_bytes(session) + new > lumen.storage.max_bytes:
        raise falcon.HTTPError(
            falcon.HTTP_507,
            title="Insufficient storage",
            description="file: the storage quota (MAX_STORAGE_GB) would be exceeded",
        )


# --- the upload's row ----------------------------------------------------------------------------


def _insert(lumen, session: Session, owner, incoming, thumb, public, info, data: dict) -> Photo:
    storage = lumen.storage
    existing = session.scalar(
        select(Photo.id).where(Photo.owner_id == owner.id, Photo.sha256 == incoming.sha256)
    )
    if existing is not None:
        raise DuplicatePhoto(existing)
    files = [f for f in (incoming, thumb, public) if f is not None]
    check_quotas(lumen, session, owner, files)
    location_id = data.get("location_id")
    if location_id is None and info.latitude is not None:
        location_id = nearest_location_id(lumen, info.latitude, info.longitude)
    photo = new_photo(
        owner.id,
        incoming,
        thumb,
        info,
        public,
        caption=data.get("caption"),
        visibility=data["visibility"],
        location_id=location_id,
    )
    for kept in files:
        sha = kept.sha256
        if storage.keep(kept):
            after_rollback(session, lambda sha=sha: storage.delete(sha))
    session.add(photo)
    try:
        session.flush()
    except IntegrityError as exc:
        # Only where the file lock cannot serialise (storage shared by several hosts).
        if "owner_id_sha256" in str(exc.orig) or "photos.owner_id, photos.sha256" in str(exc.orig):
            raise DuplicatePhoto(None) from None
        raise
    record_event(session, events.PHOTO_CREATED, photo, created_fields(photo))
    return photo


def owned_photo(session: Session, photo_id, caller) -> Photo:
    """The caller's photo, locked until the transaction ends (it is about to be changed): 404
    if they may not see it, 403 if they see it but do not own it.

    Without the lock an edit and a delete of one photo could both read it, and the one that
    wrote second matched no row: a 500 (StaleDataError). Locked, the second waits for the
    first and then finds the photo as it left it (gone: 404). PostgreSQL locks the row;
    SQLite has no row locks, so a write that changes nothing takes its write lock first."""
    if session.get_bind().dialect.name == "sqlite":
        no_op = update(Photo).where(Photo.id == photo_id).values(updated_at=Photo.updated_at)
        session.execute(no_op.execution_options(synchronize_session=False))
        photo = session.get(Photo, photo_id, populate_existing=True)
    else:
        photo = session.get(Photo, photo_id, with_for_update=True, populate_existing=True)
    if photo is None or not may_see(caller, photo.owner_id, photo.visibility):
        raise not_found()
    if photo.owner_id != caller.id:
        raise falcon.HTTPForbidden(title="Forbidden", description="id: not your photo")
    return photo


def edit_photo(lumen, session: Session, photo: Photo, values: dict) -> dict:
    """Apply an edit of caption, visibility or location; returns what changed."""
    if "location_id" in values:
        check_location(lumen, values["location_id"])
    changes = events.apply_changes(photo, values)
    session.flush()
    if changes:
        record_event(session, events.PHOTO_UPDATED, photo, changes)
    return changes


def delete_photo(lumen, session: Session, photo: Photo, changes: dict | None = None) -> None:
    """Delete the row; its files go after the commit, unless another photo still uses them."""
    session.delete(photo)
    session.flush()
    shas = {photo.sha256, photo.thumb_sha256, photo.public_sha256} - {None}
    after_commit(session, lambda: remove_unreferenced(lumen, shas))
    record_event(
        session, events.PHOTO_DELETED, photo, created_fields(photo) if changes is None else changes
    )


def remove_unreferenced(lumen, sha256s: set[str]) -> None:
    """Delete the files no photo refers to any more. Runs after the deleting transaction
    committed, under the files' lock, so an upload of the same bytes cannot slip in between
    the check and the delete; while a backup copies, the deletion waits for its end."""
    release = lumen.storage.lock(*sha256s)
    try:
        with lumen.Session() as session:
            for sha in sha256s:
                still_used = session.scalar(
                    select(func.count())
                    .select_from(Photo)
                    .where(
                        (Photo.sha256 == sha)
                        | (Photo.thumb_sha256 == sha)
                        | (Photo.public_sha256 == sha)
                    )
                )
                if still_used:
                    lumen.storage.forget_deferred(sha)
                else:
                    lumen.storage.delete_unreferenced(sha)
    finally:
        release()
