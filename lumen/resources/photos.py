"""/api/v1/photos: upload, list, read, edit, delete, and the image bytes."""

from __future__ import annotations

import logging
import os
from typing import Any

import falcon
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lumen import events, images
from lumen.auth import require_user
from lumen.errors import invalid
from lumen.models import Photo
from lumen.resources.paging import Page, parse_id, uuid_param
from lumen.resources.users import get_user, visibility_filter
from lumen.schemas import (
    PhotoUpdateSchema,
    PhotoUploadSchema,
    form_text,
    int_param,
    load_body,
    validate_data,
)
from lumen.session import after_commit, after_rollback
from lumen.storage import TooLarge

log = logging.getLogger(__name__)

UPLOAD_FIELDS = ("caption", "visibility", "location_id")
# Room for the multipart framing and the small text fields around the file.
MULTIPART_OVERHEAD = 64 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_ID = 2**31 - 1


def image_url(photo_id, size: str, sha256: str) -> str:
    # The content hash in the URL makes it safe to cache forever: new bytes, new URL.
    return f"/api/v1/photos/{photo_id}/image?size={size}&v={sha256[:16]}"


def lookup_locations(lumen, location_ids) -> dict[int, dict]:
    ids = sorted({i for i in location_ids if i is not None})
    if not ids:
        return {}
    return lumen.hook.lumen_location_lookup(lumen=lumen, location_ids=ids) or {}


def _timestamp(value) -> str | None:
    return value.isoformat() if value is not None else None


def photo_record(photo: Photo, city: dict | None) -> dict[str, Any]:
    """What the cache keeps of a photo: its public JSON and where its files are.

    Built by hand rather than through PhotoSchema.dump, which costs a third of a list request;
    tests hold the two to the same shape."""
    body = {
        "id": str(photo.id),
        "owner_id": str(photo.owner_id),
        "caption": photo.caption,
        "visibility": photo.visibility,
        "location": city,
        "width": photo.width,
        "height": photo.height,
        "content_type": photo.content_type,
        "size_bytes": photo.size_bytes,
        "sha256": photo.sha256,
        "taken_at": _timestamp(photo.taken_at),
        "created_at": _timestamp(photo.created_at),
        "updated_at": _timestamp(photo.updated_at),
        "urls": {
            "original": image_url(photo.id, "original", photo.sha256),
            "thumbnail": image_url(photo.id, "thumb", photo.thumb_sha256),
        },
    }
    files = {
        "original": [photo.sha256, photo.content_type],
        "thumb": [photo.thumb_sha256, photo.thumb_content_type],
    }
    return {"photo": body, "files": files}


def render_photos(lumen, photos: list[Photo]) -> list[dict]:
    cities = lookup_locations(lumen, (p.location_id for p in photos))
    return [photo_record(p, cities.get(p.location_id))["photo"] for p in photos]


def load_photo_record(lumen, session: Session, photo_id) -> dict:
    photo = session.get(Photo, photo_id)
    if photo is None:
        raise not_found()
    return photo_record(photo, lookup_locations(lumen, [photo.location_id]).get(photo.location_id))


def not_found() -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Not found", description="id: no such photo")


def visible(record: dict, viewer) -> bool:
    photo = record["photo"]
    return photo["visibility"] == "public" or (
        viewer is not None and str(viewer.id) == photo["owner_id"]
    )


def check_location(lumen, location_id: int | None) -> None:
    if location_id is None:
        return
    if not lumen.pm.hook.lumen_location_lookup.get_hookimpls():
        raise invalid("location_id", "locations are not enabled on this server")
    if location_id not in lookup_locations(lumen, [location_id]):
        raise invalid("location_id", "no such location")


def list_photos(lumen, session: Session, viewer, page: Page, owner_id=None, location_id=None):
    """A page of the photos ``viewer`` may see, newest first, and their total."""
    where = [visibility_filter(viewer)]
    if owner_id is not None:
        where.append(Photo.owner_id == owner_id)
    if location_id is not None:
        where.append(Photo.location_id == location_id)
    total = session.scalar(select(func.count()).select_from(Photo).where(*where))
    photos = session.scalars(
        select(Photo)
        .where(*where)
        .order_by(Photo.created_at.desc(), Photo.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    ).all()
    return {"items": render_photos(lumen, photos), "total": total}


def list_cache_key(viewer, page: Page, owner_id, location_id) -> str | None:
    """The cache key of a list, or None where it is not worth caching."""
    if location_id is not None:
        return None
    if owner_id is None:
        return None if viewer is not None else f"photos:public:{page.limit}:{page.offset}"
    scope = "all" if viewer is not None and viewer.id == owner_id else "public"
    return f"user:{owner_id}:photos:{scope}:{page.limit}:{page.offset}"


def serve_list(lumen, req, resp, path: str, owner_id=None, query=None) -> None:
    page = Page.from_request(req)
    location_id = int_param(req, "location_id", None, 1, MAX_ID)
    viewer = req.context.user

    def load():
        return list_photos(lumen, req.context.db, viewer, page, owner_id, location_id)

    key = list_cache_key(viewer, page, owner_id, location_id)
    result = lumen.cached(key, load) if key else load()
    page.respond(
        resp, result["items"], result["total"], path, {**(query or {}), "location_id": location_id}
    )


class PhotosResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp):
        """List photos: public ones and the caller's own private ones."""
        owner_id = uuid_param(req, "owner_id")
        serve_list(self.lumen, req, resp, "/api/v1/photos", owner_id, {"owner_id": owner_id})

    def on_post(self, req, resp):
        """Upload a photo (multipart/form-data)."""
        caller = require_user(req)
        settings, storage = self.lumen.settings, self.lumen.storage
        max_bytes = int(settings.max_upload_mb * 1024 * 1024)
        too_large = falcon.HTTPContentTooLarge(
            title="File too large",
            description=f"file: must be at most {settings.max_upload_mb:g} MB",
        )
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise falcon.HTTPUnsupportedMediaType(
                title="Unsupported media type", description="body: must be multipart/form-data"
            )
        if req.content_length is not None and req.content_length > max_bytes + MULTIPART_OVERHEAD:
            raise too_large
        incoming, fields = None, {}
        try:
            for part in req.get_media():
                if part.name == "file" and incoming is None:
                    incoming = storage.receive(part.stream, max_bytes)
                elif part.name in UPLOAD_FIELDS and part.name not in fields:
                    fields[part.name] = form_text(part)
                else:
                    raise invalid(part.name or "part", "unknown or repeated form field")
            if incoming is None:
                raise invalid("file", "is required")
            if incoming.size == 0:
                raise invalid("file", "must not be empty")
            data = validate_data(PhotoUploadSchema(), fields)
            check_location(self.lumen, data.get("location_id"))
            photo = self._store(req.context.db, caller, incoming, data)
        except TooLarge:
            raise too_large from None
        except BaseException:
            if incoming is not None:
                incoming.discard()
            raise
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/photos/{photo.id}"
        resp.media = render_photos(self.lumen, [photo])[0]

    def _store(self, db: Session, owner, incoming, data: dict) -> Photo:
        lumen, storage = self.lumen, self.lumen.storage
        try:
            info, thumb_bytes = images.process(
                incoming.path,
                lumen.settings.thumbnail_size,
                int(lumen.settings.max_image_megapixels * 1e6),
            )
        except images.ImageTooLarge as exc:
            raise falcon.HTTPContentTooLarge(
                title="Image too large", description=f"file: {exc}"
            ) from None
        except images.UnsupportedImage as exc:
            raise falcon.HTTPUnsupportedMediaType(
                title="Unsupported image", description=f"file: {exc}"
            ) from None
        thumb = storage.receive_bytes(thumb_bytes)
        try:
            # Held until the transaction ends: from here to the commit no other request can
            # delete these files, and a second upload of the same bytes waits to see this one.
            release = storage.lock(incoming.sha256, thumb.sha256)
            after_commit(db, release)
            after_rollback(db, release)
            return self._insert(db, owner, incoming, thumb, info, data)
        finally:
            thumb.discard()  # no-op once kept

    def _insert(self, db: Session, owner, incoming, thumb, info, data: dict) -> Photo:
        lumen, storage = self.lumen, self.lumen.storage
        existing = db.scalar(
            select(Photo.id).where(Photo.owner_id == owner.id, Photo.sha256 == incoming.sha256)
        )
        if existing is not None:
            raise DuplicatePhoto(existing)
        used = db.scalar(
            select(func.coalesce(func.sum(Photo.size_bytes + Photo.thumb_size_bytes), 0))
        )
        if used + incoming.size + thumb.size > storage.max_bytes:
            raise falcon.HTTPError(
                falcon.HTTP_507,
                title="Insufficient storage",
                description="file: the storage quota (MAX_STORAGE_GB) would be exceeded",
            )
        location_id = data.get("location_id")
        if location_id is None and info.latitude is not None:
            location_id = nearest_location_id(lumen, info.latitude, info.longitude)
        photo = Photo(
            owner_id=owner.id,
            caption=data.get("caption"),
            visibility=data["visibility"],
            location_id=location_id,
            width=info.width,
            height=info.height,
            content_type=info.content_type,
            size_bytes=incoming.size,
            sha256=incoming.sha256,
            thumb_sha256=thumb.sha256,
            thumb_content_type=images.THUMBNAIL_CONTENT_TYPE,
            thumb_size_bytes=thumb.size,
            taken_at=info.taken_at,
            latitude=info.latitude,
            longitude=info.longitude,
        )
        # Files first, row second: the row commits only once both files are in place, and a
        # transaction that does not commit takes back the files it created.
        for kept in (incoming, thumb):
            sha = kept.sha256
            if storage.keep(kept):
                after_rollback(db, lambda sha=sha: storage.delete(sha))
        db.add(photo)
        try:
            db.flush()
        except IntegrityError as exc:
            # Only where the file lock cannot serialise (storage shared by several hosts).
            if "owner_id_sha256" in str(exc.orig) or "photos.owner_id, photos.sha256" in str(
                exc.orig
            ):
                raise DuplicatePhoto(None) from None
            raise
        events.record(db, events.PHOTO_CREATED, photo=photo, changes=photo_fields(photo))
        return photo


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


def remove_unreferenced(lumen, sha256s: set[str]) -> None:
    """Delete the files no photo refers to any more. Runs after the deleting transaction
    committed, under the files' lock, so an upload of the same bytes cannot slip in between
    the check and the delete."""
    release = lumen.storage.lock(*sha256s)
    try:
        with lumen.Session() as session:
            for sha in sha256s:
                still_used = session.scalar(
                    select(func.count())
                    .select_from(Photo)
                    .where((Photo.sha256 == sha) | (Photo.thumb_sha256 == sha))
                )
                if not still_used:
                    lumen.storage.delete(sha)
    finally:
        release()


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


def photo_fields(photo: Photo) -> dict:
    return {
        field: (None, getattr(photo, field)) for field in ("caption", "visibility", "location_id")
    }


class UserPhotosResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp, user_id):
        """A user's photos that the caller may see, newest first."""
        user = get_user(req.context.db, parse_id(user_id))
        serve_list(self.lumen, req, resp, f"/api/v1/users/{user.id}/photos", owner_id=user.id)


class PhotoResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def _record(self, req, photo_id) -> dict:
        def load():
            return load_photo_record(self.lumen, req.context.db, photo_id)

        record = self.lumen.cached(f"meta:{photo_id}", load)
        if not visible(record, req.context.user):
            raise not_found()
        return record

    def _owned(self, req, photo_id) -> Photo:
        caller = require_user(req)
        photo = req.context.db.get(Photo, parse_id(photo_id))
        if photo is None or (photo.visibility != "public" and photo.owner_id != caller.id):
            raise not_found()
        if photo.owner_id != caller.id:
            raise falcon.HTTPForbidden(title="Forbidden", description="id: not your photo")
        return photo

    def on_get(self, req, resp, photo_id):
        """One photo."""
        resp.media = self._record(req, parse_id(photo_id))["photo"]

    def on_patch(self, req, resp, photo_id):
        """Edit a photo's caption, visibility or location."""
        photo = self._owned(req, photo_id)
        body = load_body(req, PhotoUpdateSchema())
        if "location_id" in body:
            check_location(self.lumen, body["location_id"])
        changes = events.apply_changes(photo, body)
        db = req.context.db
        db.flush()
        if changes:
            events.record(db, events.PHOTO_UPDATED, photo=photo, changes=changes)
        resp.media = render_photos(self.lumen, [photo])[0]

    def on_delete(self, req, resp, photo_id):
        """Delete a photo, its file and its thumbnail."""
        photo = self._owned(req, photo_id)
        db = req.context.db
        db.delete(photo)
        db.flush()
        # Identical bytes may belong to another photo; a file goes only with its last photo.
        shas = {photo.sha256, photo.thumb_sha256}
        after_commit(db, lambda: remove_unreferenced(self.lumen, shas))
        events.record(db, events.PHOTO_DELETED, photo=photo, changes=photo_fields(photo))
        resp.status = falcon.HTTP_204


class PhotoImageResource:
    def __init__(self, lumen):
        self.lumen = lumen
        self.photo = PhotoResource(lumen)

    def on_get(self, req, resp, photo_id):
        """The image bytes: ``size=original`` (default) or ``size=thumb``."""
        record = self.photo._record(req, parse_id(photo_id))
        size = req.get_param("size", default="original")
        if size not in record["files"]:
            raise invalid("size", "must be one of: original, thumb")
        sha, content_type = record["files"][size]
        public = record["photo"]["visibility"] == "public"
        if public and req.get_param("v") == sha[:16]:
            resp.cache_control = [IMMUTABLE]
        else:
            resp.cache_control = ["public, max-age=300" if public else "private, no-cache"]
        resp.etag = f'"{sha}"'
        tags = req.if_none_match or ()
        if "*" in tags or sha in tags:
            resp.status = falcon.HTTP_304
            return
        path = self.lumen.storage.path_for(sha)
        try:
            stream = open(path, "rb")
        except FileNotFoundError:
            log.error("photo file missing", extra={"photo_id": str(photo_id), "sha256": sha})
            raise falcon.HTTPNotFound(
                title="Not found", description="the image file is missing"
            ) from None
        resp.content_type = content_type
        resp.set_stream(stream, os.fstat(stream.fileno()).st_size)
