"""/api/v1/photos: upload, list, read, edit, delete, and the image bytes. Thin: parameters in,
the domain (lumen.photos) does the work, JSON out."""

from __future__ import annotations

import errno
import logging
import os

import falcon
from falcon.util import BufferedReader

from lumen import photos
from lumen.auth import require_user
from lumen.errors import invalid
from lumen.models import MAX_INTEGER
from lumen.resources.paging import Page, parse_id, uuid_param
from lumen.schemas import (
    PhotoUpdateSchema,
    PhotoUploadSchema,
    form_text,
    int_param,
    load_body,
    validate_data,
)
from lumen.storage import TooLarge
from lumen.users import get_user

log = logging.getLogger(__name__)

# Room for the multipart framing and the small text fields around the file.
MULTIPART_OVERHEAD = 64 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
# The owner's exact bytes, where others get a copy without location metadata: never in a
# shared cache, whatever the URL.
OWNER_IMMUTABLE = "private, max-age=31536000, immutable"


class _LimitedInput:
    """Reads a body of unknown length, refusing it (TooLarge) once it passes ``limit``."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.received = stream, limit, 0

    def read(self, size: int) -> bytes:
        chunk = self.stream.read(size)
        self.received += len(chunk)
        if self.received > self.limit:
            raise TooLarge()
        return chunk


def storage_full(exc: BaseException) -> bool:
    """The disk (or the user's disk quota) is full: ENOSPC or EDQUOT, wherever it was met."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def upload_form(req, limit: int):
    """The parts of a multipart upload, read as they arrive, at most ``limit`` bytes of body.

    A body without Content-Length (chunked, as mobile clients send) is read to its end where
    the server de-chunks it and marks the input terminated (gunicorn does: PEP 3333's
    ``wsgi.input_terminated``); any other server cannot say where it ends: 411."""
    if req.content_length is not None:
        if req.content_length > limit:
            raise TooLarge()
        return req.get_media()
    if not req.env.get("wsgi.input_terminated"):
        raise falcon.HTTPLengthRequired(
            title="Length required",
            description="Content-Length: required for an upload by this server",
        )
    # Falcon's multipart reader needs the length unless it is handed a buffered reader; this
    # one ends where the body ends, and the limited input refuses a body past the limit.
    stream = BufferedReader(_LimitedInput(req.stream, limit).read, limit + 1)
    handler = req.options.media_handlers[falcon.MEDIA_MULTIPART]
    return handler.deserialize(stream, req.content_type, None)


def serve_list(lumen, req, resp, path: str, owner_id=None, query=None) -> None:
    page = Page.keyset_from_request(req)
    location_id = int_param(req, "location_id", None, 1, MAX_INTEGER)
    result = photos.visible_page(
        lumen, req.context.deferred_db, req.context.user, page, owner_id, location_id
    )
    page.respond_keyset(resp, result, path, {**(query or {}), "location_id": location_id})


class PhotosResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def prefetch(self, req, **params):
        """The cached read of a plain list's page (lumen.prefetch); None where it has none."""
        if req.get_param("owner_id") is not None:
            return None
        try:
            page = Page.keyset_from_request(req)
            location_id = int_param(req, "location_id", None, 1, MAX_INTEGER)
        except falcon.HTTPError:
            return None  # answered by on_get, with the error
        return photos.list_read(self.lumen, None, req.context.user, page, None, location_id)

    def on_get(self, req, resp):
        """List photos: public ones and the caller's own private ones."""
        owner_id = uuid_param(req, "owner_id")
        if owner_id is not None:
            # An unknown owner is a 404 before anything is read or cached for it.
            get_user(req.context.db, owner_id)
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
        incoming, fields = None, {}
        try:
            for part in upload_form(req, max_bytes + MULTIPART_OVERHEAD):
                if part.name == "file" and incoming is None:
                    incoming = storage.receive(part.stream, max_bytes)
                elif part.name in photos.EDITABLE_FIELDS and part.name not in fields:
                    fields[part.name] = form_text(part)
                else:
                    raise invalid(part.name or "part", "unknown or repeated form field")
            if incoming is None:
                raise invalid("file", "is required")
            if incoming.size == 0:
                raise invalid("file", "must not be empty")
            data = validate_data(PhotoUploadSchema(), fields)
            photos.check_location(self.lumen, data.get("location_id"))
            photo = photos.add_photo(self.lumen, req.context.db, caller, incoming, data)
        except BaseException as exc:
            if incoming is not None:
                incoming.discard()
            if isinstance(exc, TooLarge):
                raise too_large from None
            if storage_full(exc):
                # Whatever was written is gone: the temporary file above, kept files with the
                # rollback. The volume, not a quota: the operator must make room.
                log.error("storage volume full", extra={"error": str(exc)})
                raise falcon.HTTPError(
                    falcon.HTTP_507,
                    title="Insufficient storage",
                    description="file: the storage volume (STORAGE_PATH) is full",
                ) from None
            raise
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/photos/{photo.id}"
        resp.media = photos.render(self.lumen, [photo], caller)[0]


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

    def prefetch(self, req, photo_id):
        """The cached read of the photo (lumen.prefetch)."""
        try:
            return photos.photo_read(self.lumen, None, parse_id(photo_id))
        except falcon.HTTPError:
            return None  # answered by on_get, with the error

    def on_get(self, req, resp, photo_id):
        """One photo."""
        record = photos.visible_record(
            self.lumen, req.context.deferred_db, parse_id(photo_id), req.context.user
        )
        resp.data = record.seen_by(req.context.user)

    def on_patch(self, req, resp, photo_id):
        """Edit a photo's caption, visibility or location."""
        db, caller = req.context.db, require_user(req)
        photo = photos.owned_photo(db, parse_id(photo_id), caller)
        photos.edit_photo(self.lumen, db, photo, load_body(req, PhotoUpdateSchema()))
        resp.media = photos.render(self.lumen, [photo], caller)[0]

    def on_delete(self, req, resp, photo_id):
        """Delete a photo, its file and its thumbnail."""
        db = req.context.db
        photo = photos.owned_photo(db, parse_id(photo_id), require_user(req))
        photos.delete_photo(self.lumen, db, photo)
        resp.status = falcon.HTTP_204


class PhotoImageResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp, photo_id):
        """The image bytes: ``size=original`` (default) or ``size=thumb``. Anyone but the owner
        gets the original without its location metadata."""
        viewer = req.context.user
        record = photos.visible_record(
            self.lumen, req.context.deferred_db, parse_id(photo_id), viewer
        )
        size = req.get_param("size", default="original")
        if size not in ("original", "thumb"):
            raise invalid("size", "must be one of: original, thumb")
        sha, content_type, owners_only = photos.image_file(record, size, viewer)
        public = record.visibility == "public"
        current = req.get_param("v") == sha[:16]
        if owners_only:
            resp.cache_control = [OWNER_IMMUTABLE if current else "private, no-cache"]
        elif public and current:
            resp.cache_control = [IMMUTABLE]
        else:
            resp.cache_control = ["public, max-age=300" if public else "private, no-cache"]
        if size == "original" and "public" in record.files:
            # One URL, two answers by caller: a cache must not give one's to the other.
            resp.append_header("Vary", "Authorization")
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
