"""Conditional GET for JSON: every successful JSON read carries a weak ETag of its body, and a
matching If-None-Match is answered 304 with no body, so polling clients and caches in front pay
nothing for data that did not change. The ETag is a digest of the body the client would get, so
it changes whenever the body would (a caller who sees more, a changed caption, a new page).

A resource that sets its own ETag (image bytes: the content hash) is left to it, and so is an
answer marked ``no-store`` (the probes): nothing keeps it to revalidate.
"""

from __future__ import annotations

import functools
import hashlib

import falcon

from lumen import headers_of, hookimpl, is_json, media_type_of, slots, status_of

NAME = "conditional"
READS = frozenset({"GET", "HEAD"})
# The ETags of bodies up to these sizes are remembered: 4,096 small ones (a photo, a city
# search: 16 MB at most, far less where the bodies are the city LRU's own, which the memo
# shares) and 256 larger ones (a page: 4 MB at most).
SMALL_BODY_BYTES = 4 * 1024
REMEMBERED_BODY_BYTES = 16 * 1024


def etag_of(body: bytes) -> str:
    # The same bodies are sent again and again (a cached photo or page, the city LRU's
    # answers). Finding one among those remembered hashes it with the dict's hash, half the
    # time of SHA-256 on a 13 KB page, and not at all for a bytes object seen before (the
    # LRU's): a bytes object keeps its hash.
    size = len(body)
    if size <= SMALL_BODY_BYTES:
        return _remembered_small(body)
    if size <= REMEMBERED_BODY_BYTES:
        return _remembered_digest(body)
    return _digest(body)


def _digest(body: bytes) -> str:
    # SHA-256, which processors run in hardware: half the time of BLAKE2b on a 13 KB page.
    return f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'


_remembered_small = functools.lru_cache(maxsize=4096)(_digest)
_remembered_digest = functools.lru_cache(maxsize=256)(_digest)


def matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): the opaque tags, W/ or not."""
    if not if_none_match:
        return False
    tag = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


class ConditionalMiddleware:
    def process_response(self, req, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if req.method not in READS or status_of(resp) != 200 or resp.stream is not None:
            return
        headers = headers_of(resp)
        if not is_json(media_type_of(resp)) or "etag" in headers:
            return
        if "no-store" in headers.get("cache-control", ""):
            return  # nothing keeps it (probes), so nothing will ever revalidate it
        body = resp.render_body()
        if body is None:
            return
        etag = headers["etag"] = etag_of(body)
        if matches(req.env.get("HTTP_IF_NONE_MATCH"), etag):
            resp.status = falcon.HTTP_304
            # No body, so no type: rendering the body above gave the response one.
            resp.media = resp.data = resp.text = None
            resp.content_type = None


@hookimpl
def lumen_middleware(lumen):
    return [(slots.CONDITIONAL, ConditionalMiddleware())]
