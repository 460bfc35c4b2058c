"""The reference apps: bare Falcon doing the same database or Redis work as a Lumen path, and
nothing else, served under the same gunicorn settings as Lumen so the two compare in one run.

- ``/static``: ~100 bytes of static JSON, the framework's ceiling;
- ``/blob/{key}``: a pre-serialised JSON blob read from Redis (``REDIS_URL``), as a cache hit;
- ``/row/{id}``: one photos row by primary key through SQLAlchemy Core (``DATABASE_URL``);
- ``/page``: the count of public photos and the 20 newest, through SQLAlchemy Core.

The engine is Lumen's (``lumen.db.make_engine``: the same pool and pre-ping), the JSON Falcon's
default handler; rows become dicts with plain str keys, ids and times as strings.
"""

from __future__ import annotations

import os
import uuid

import falcon
import redis
from sqlalchemy import func, select

from lumen.config import load_settings
from lumen.db import make_engine
from lumen.models import Photo

PHOTOS = Photo.__table__
PAGE_SIZE = 20


class Static:
    def on_get(self, req, resp):
        resp.media = {"id": "2a8bd1a5-9b37-44be-881e-c35b5238efed", "caption": "static", "n": 1}


class Blob:
    def __init__(self, client: redis.Redis):
        self.client = client

    def on_get(self, req, resp, key):
        blob = self.client.get(key)
        if blob is None:
            raise falcon.HTTPNotFound()
        resp.data = blob
        resp.content_type = falcon.MEDIA_JSON


def jsonable(row) -> dict:
    return {
        key: value if value is None or isinstance(value, str | int | float) else str(value)
        for key, value in row._mapping.items()
    }


class Row:
    def __init__(self, engine):
        self.engine = engine

    def on_get(self, req, resp, photo_id):
        with self.engine.connect() as conn:
            row = conn.execute(select(PHOTOS).where(PHOTOS.c.id == uuid.UUID(photo_id))).first()
        if row is None:
            raise falcon.HTTPNotFound()
        resp.media = jsonable(row)


class Page:
    def __init__(self, engine):
        self.engine = engine

    def on_get(self, req, resp):
        public = PHOTOS.c.visibility == "public"
        newest = (PHOTOS.c.created_at.desc(), PHOTOS.c.id.desc())
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(PHOTOS).where(public))
            rows = conn.execute(select(PHOTOS).where(public).order_by(*newest).limit(PAGE_SIZE))
            resp.media = [jsonable(row) for row in rows]
        resp.set_header("X-Total-Count", str(total))


def make_app(database_url: str | None = None, redis_url: str | None = None) -> falcon.App:
    """The reference app; the routes that need a database or Redis only when given one."""
    reference = falcon.App()
    reference.add_route("/static", Static())
    if redis_url:
        reference.add_route("/blob/{key}", Blob(redis.Redis.from_url(redis_url)))
    if database_url:
        engine = make_engine(load_settings({"DATABASE_URL": database_url}))
        reference.add_route("/row/{photo_id}", Row(engine))
        reference.add_route("/page", Page(engine))
    return reference


app = make_app(os.environ.get("REFERENCE_DATABASE_URL"), os.environ.get("REFERENCE_REDIS_URL"))
