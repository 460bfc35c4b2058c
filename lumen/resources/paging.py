"""Lists: limit, offset and cursor, X-Total-Count and Link headers; ids in their canonical
form."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlencode

import falcon

from lumen.errors import invalid
from lumen.models import MAX_INTEGER
from lumen.schemas import int_param, parse_integer

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
# The deepest offset a keyset list still takes: a database skips offset rows one by one, so a
# deep offset costs in proportion; the cursor of the Link header costs the same at any depth.
MAX_OFFSET = 10_000
OFFSET_RULE = (
    f"must be an integer from 0 to {MAX_OFFSET}; for deeper pages follow the Link header's "
    "next, whose cursor reaches any depth"
)
CURSOR_RULE = "must be a cursor taken unchanged from a Link header of this list"
CURSOR_WITH_OFFSET_RULE = "cannot be given with offset (a cursor says where the page starts)"
# The form Lumen writes ids in, str(uuid.UUID): uuid.UUID() itself also takes braces, "urn:",
# no hyphens, upper case, white space and non-ASCII digits ("٣"), each then a second spelling
# of the same id (and a different cache key, a raw path copied into headers, ...).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UUID_RULE = "must be a UUID in canonical form (36 characters: lower-case hex digits and hyphens)"


# --- cursors -------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,96}")
_CURSOR_PAYLOAD = re.compile(r"([np])(-?[0-9]{1,17})\.([0-9a-f]{32})")


@dataclass(frozen=True)
class Cursor:
    """A position in a list ordered newest first: the sort key (created_at, id) of a row,
    and which side of it the page lies on (``before``: the newer rows, for a prev link)."""

    created_at: datetime
    id: uuid.UUID
    before: bool = False

    def encode(self) -> str:
        """Opaque to clients: URL-safe base64 of the key with a check, so that a cursor
        garbled on its way (truncated, mistyped) is refused rather than read as another."""
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        payload = f"{'p' if self.before else 'n'}{micros}.{self.id.hex}".encode()
        raw = payload + _check(payload)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """The cursor ``value`` spells, or a 400 naming ``cursor``."""
        if not _CURSOR_TEXT.fullmatch(value):
            raise invalid("cursor", CURSOR_RULE)
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise invalid("cursor", CURSOR_RULE) from None
        payload, check = raw[:-4], raw[-4:]
        match = _CURSOR_PAYLOAD.fullmatch(payload.decode("ascii", "replace"))
        if match is None or _check(payload) != check:
            raise invalid("cursor", CURSOR_RULE)
        side, micros, hex_id = match.groups()
        try:
            created_at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise invalid("cursor", CURSOR_RULE) from None
        return cls(created_at, uuid.UUID(hex_id), before=side == "p")


@lru_cache(maxsize=1024)  # a list's GET reads its page twice (its prefetch, then its responder)
def _keyset_page(limit: str | None, cursor: str | None, offset: str | None) -> Page:
    """The Page these raw parameters spell, or a 400 naming the parameter and its rule."""
    try:
        size = DEFAULT_LIMIT if limit is None else parse_integer(limit, 1, MAX_LIMIT)
    except ValueError as exc:
        raise invalid("limit", str(exc)) from None
    if cursor is None:
        if offset is None:
            return Page(limit=size, offset=0)
        try:
            return Page(limit=size, offset=parse_integer(offset, 0, MAX_OFFSET))
        except ValueError:
            raise invalid("offset", OFFSET_RULE) from None
    if offset is not None:
        raise invalid("cursor", CURSOR_WITH_OFFSET_RULE)
    return Page(limit=size, offset=0, cursor=Cursor.decode(cursor))


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=4, person=b"lumen-cursor").digest()


# --- pages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int
    cursor: Cursor | None = None

    @classmethod
    def from_request(cls, req: falcon.Request) -> Page:
        """limit and offset (for lists that have no cursor)."""
        return cls(
            limit=int_param(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=int_param(req, "offset", 0, 0, MAX_INTEGER),
        )

    @classmethod
    def keyset_from_request(cls, req: falcon.Request) -> Page:
        """limit, and either a cursor or an offset of at most MAX_OFFSET."""
        get = req.get_param
        return _keyset_page(get("limit"), get("cursor"), get("offset"))

    @classmethod
    def first(cls) -> Page:
        return cls(limit=DEFAULT_LIMIT, offset=0)

    def respond(
        self, resp: falcon.Response, items: list, total: int, path: str, query: dict | None = None
    ) -> None:
        """The page as the body, its total and its Link header. The links are built from
        ``path`` and ``query``, values the caller has parsed into their canonical form (None
        leaves a parameter out), never from the raw request: what a client wrote is not
        echoed into a header."""
        resp.media = items
        resp.set_header("X-Total-Count", str(total))
        links = []
        if self.offset + self.limit < total:
            links.append(self._link(path, query, "next", offset=self.offset + self.limit))
        if self.offset > 0:
            links.append(self._link(path, query, "prev", offset=max(self.offset - self.limit, 0)))
        if links:
            resp.set_header("Link", ", ".join(links))

    def respond_keyset(
        self, resp: falcon.Response, found: dict, path: str, query: dict | None = None
    ) -> None:
        """Like ``respond``, for a page of a list in keyset order as ``photos.list_photos``
        gives it (its items' JSON, their count, the total, ``more``: whether the list goes on
        past this page in the direction it was read, and the cursors of its ends): next (and
        prev, from a cursor page) carry the cursor of the page's last (first) item."""
        resp.data = found["body"]
        resp.content_type = falcon.MEDIA_JSON
        resp.set_header("X-Total-Count", str(found["total"]))
        links = []
        before = self.cursor is not None and self.cursor.before
        more, has_items = found["more"], found["count"] > 0
        if has_items and (more or before):
            links.append(self._link(path, query, "next", cursor=found["last"]))
        if self.cursor is None:
            if self.offset > 0:
                prev = max(self.offset - self.limit, 0)
                links.append(self._link(path, query, "prev", offset=prev))
        elif has_items and (more or not before):
            links.append(self._link(path, query, "prev", cursor=found["first"]))
        if links:
            resp.set_header("Link", ", ".join(links))

    def _link(self, path: str, query: dict | None, rel: str, **position) -> str:
        """A Link entry; ``position``: offset=N or cursor=C."""
        params = {name: str(value) for name, value in (query or {}).items() if value is not None}
        params["limit"] = str(self.limit)
        params.update({name: str(value) for name, value in position.items()})
        return _link_text(path, tuple(params.items()), rel)


@lru_cache(maxsize=1024)  # a cached page links to the same pages on every read
def _link_text(path: str, params: tuple[tuple[str, str], ...], rel: str) -> str:
    # urlencode quotes every name and value: 6 µs for a cursor's link.
    return f'<{path}?{urlencode(params)}>; rel="{rel}"'


def canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID ``value`` writes in canonical form, else None."""
    # A canonical UUID is 36 characters: nothing longer is kept by the cache below.
    return _canonical_uuid(value) if len(value) == 36 else None


@lru_cache(maxsize=4096)
def _canonical_uuid(value: str) -> uuid.UUID | None:
    # The ids asked most, parsed once: a GET reads its path's id twice (lumen.prefetch, then
    # the responder).
    return uuid.UUID(value) if _CANONICAL_UUID.fullmatch(value) else None


def parse_id(value: str) -> uuid.UUID:
    """A path id; anything that is not a canonical UUID cannot name a resource: a 404."""
    parsed = canonical_uuid(value)
    if parsed is None:
        raise falcon.HTTPNotFound(title="Not found", description="id: no such resource")
    return parsed


def uuid_param(req: falcon.Request, name: str) -> uuid.UUID | None:
    """An id given as a query parameter, None when absent, or a 400 naming it."""
    raw = req.get_param(name)
    if raw is None:
        return None
    parsed = canonical_uuid(raw)
    if parsed is None:
        raise invalid(name, UUID_RULE)
    return parsed
