"""The cached read a GET is about to make, announced before the request's first Redis round
trip.

A resource may say, from the route alone, which cached read its GET will make: its
``prefetch(req, **params)`` returns that CachedRead (or None: no read, or a request that will
fail its validation). After authentication (the key may depend on the caller) and before the
rate limit's check, the core hands its key and tags to ``lumen_prefetch``: a cache can then
defer its lookup to the request's next round trip (lumen.redis_calls), the rate limit's, and a
hit costs one round trip in all. At the end of every request whatever was deferred is
discarded, so no request is answered with what was read for another.
"""

from __future__ import annotations

import falcon


class PrefetchMiddleware:
    def __init__(self, lumen):
        self.lumen = lumen
        self.calls = lumen.redis_calls

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        if req.method != "GET":
            return
        prefetch = getattr(resource, "prefetch", None)
        if prefetch is None:
            return
        read = prefetch(req, **params)
        if read is not None and read.key is not None:
            self.lumen.hook.lumen_prefetch(lumen=self.lumen, key=read.key, tags=read.tags)

    def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        self.calls.discard()
