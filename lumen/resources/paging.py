"""Lists: limit/offset bounds, X-Total-Count and Link headers; ids in their canonical form."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import falcon

from lumen.errors import invalid
from lumen.models import MAX_INTEGER
from lumen.schemas import int_param

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
# The form Lumen writes ids in, str(uuid.UUID): uuid.UUID() itself also takes braces, "urn:",
# no hyphens, upper case, white space and non-ASCII digits ("٣"), each then a second spelling
# of the same id (and a different cache key, a raw path copied into headers, ...).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UUID_RULE = "must be a UUID in canonical form (36 characters: lower-case hex digits and hyphens)"


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    @classmethod
    def from_request(cls, req: falcon.Request) -> Page:
        return cls(
            limit=int_param(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=int_param(req, "offset", 0, 0, MAX_INTEGER),
        )

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
            links.append(self._link(path, query, self.offset + self.limit, "next"))
        if self.offset > 0:
            links.append(self._link(path, query, max(self.offset - self.limit, 0), "prev"))
        if links:
            resp.set_header("Link", ", ".join(links))

    def _link(self, path: str, query: dict | None, offset: int, rel: str) -> str:
        params = {name: str(value) for name, value in (query or {}).items() if value is not None}
        params.update(limit=str(self.limit), offset=str(offset))
        return f'<{path}?{urlencode(params)}>; rel="{rel}"'


def canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID ``value`` writes in canonical form, else None."""
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
