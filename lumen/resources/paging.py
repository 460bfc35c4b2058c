"""Lists: limit/offset bounds, X-Total-Count and Link headers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import falcon

from lumen.models import MAX_INTEGER
from lumen.schemas import int_param

DEFAULT_LIMIT, MAX_LIMIT = 20, 100


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

    def respond(self, req: falcon.Request, resp: falcon.Response, items: list, total: int):
        resp.media = items
        resp.set_header("X-Total-Count", str(total))
        links = []
        if self.offset + self.limit < total:
            links.append(self._link(req, self.offset + self.limit, "next"))
        if self.offset > 0:
            links.append(self._link(req, max(self.offset - self.limit, 0), "prev"))
        if links:
            resp.set_header("Link", ", ".join(links))

    def _link(self, req: falcon.Request, offset: int, rel: str) -> str:
        params = {k: v for k, v in req.params.items() if k not in ("limit", "offset")}
        params.update(limit=self.limit, offset=offset)
        return f'<{req.path}?{urlencode(params, doseq=True)}>; rel="{rel}"'


def parse_id(value: str) -> uuid.UUID:
    """A path id; anything that is not a UUID cannot name a resource, so it is a 404."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise falcon.HTTPNotFound(title="Not found", description="id: no such resource") from None
