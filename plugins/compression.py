"""Compression: gzip (and brotli, when the ``brotli`` package is installed) for JSON and text
answers of at least COMPRESSION_MIN_BYTES, when the client accepts it.

Every answer that could be compressed says ``Vary: Accept-Encoding``, compressed or not (a body
under the threshold is the same bytes for every client, and says nothing). Images, streams and
bodies already encoded are left alone. A strong ETag gets the encoding appended (``"abc-gzip"``):
two encodings of one resource are different bytes, and strong ETags promise the same bytes.
"""

from __future__ import annotations

import functools
import gzip
import importlib

import falcon
from marshmallow import fields, validate

from lumen import (
    SettingsSchema,
    add_vary,
    headers_of,
    hookimpl,
    is_json,
    media_type_of,
    positive_int,
    slots,
    status_of,
)

NAME = "compression"
GZIP_LEVEL = 6  # zlib's default: most of the gain for a fraction of level 9's time
BROTLI_QUALITY = 5  # brotli's curve flattens past 5 while its cost climbs


class CompressionSettings(SettingsSchema):
    min_bytes = positive_int("COMPRESSION_MIN_BYTES", 1024, minimum=0)
    gzip_level = fields.Integer(
        load_default=GZIP_LEVEL,
        validate=validate.Range(min=1, max=9),
        data_key="COMPRESSION_GZIP_LEVEL",
    )


def _brotli():
    try:
        return importlib.import_module("brotli")
    except ImportError:
        return None


@functools.lru_cache(maxsize=64)  # responses' own types, a handful
def compressible(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return is_json(media_type) or media_type.startswith("text/")


def accepted(header: str | None, available: tuple[str, ...]) -> str | None:
    """The first of ``available`` (in our order of preference) that Accept-Encoding allows."""
    if not header:
        return None
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in available:
        if weights.get(coding, weights.get("*", 0.0)) > 0:
            return coding
    return None


class CompressionMiddleware:
    def __init__(self, min_bytes: int, gzip_level: int, brotli=None):
        self.min_bytes = min_bytes
        self.gzip_level = gzip_level
        self.brotli = brotli
        self.available = ("br", "gzip") if brotli is not None else ("gzip",)

    def encode(self, coding: str, body: bytes) -> bytes:
        if coding == "br":
            return self.brotli.compress(body, quality=BROTLI_QUALITY)
        return gzip.compress(body, compresslevel=self.gzip_level, mtime=0)

    def process_response(self, req, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if resp.stream is not None or not compressible(media_type_of(resp)):
            return
        if status_of(resp) in (204, 304) or "content-encoding" in headers_of(resp):
            return
        body = resp.render_body()
        if body is None or len(body) < self.min_bytes:
            return  # the same bytes whatever the client accepts: nothing varies
        add_vary(resp, "Accept-Encoding")
        if req.method == "HEAD":
            return
        coding = accepted(req.env.get("HTTP_ACCEPT_ENCODING"), self.available)
        if coding is None:
            return
        resp.data = self.encode(coding, body)
        resp.text = None
        resp.media = None
        resp.set_header("Content-Encoding", coding)
        etag = resp.get_header("ETag")
        if etag is not None and etag.startswith('"'):
            resp.set_header("ETag", f'{etag[:-1]}-{coding}"')


@hookimpl
def lumen_settings():
    return CompressionSettings


@hookimpl
def lumen_middleware(lumen):
    section = lumen.settings_of(CompressionSettings)
    middleware = CompressionMiddleware(section.min_bytes, section.gzip_level, _brotli())
    return [(slots.COMPRESSION, middleware)]
