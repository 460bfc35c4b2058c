"""Each worker's cache of verified tokens, valid only while a generation in Redis is unchanged,
so a revoked token stops working at once on every worker.

A signed-in request reads the generation (one Redis GET, cheaper than the token's query) and
uses its cached token only if the entry was made under that same generation; otherwise it asks
the database and caches the answer under the generation read *before* asking. A revocation
fences the generation before its commit (no worker caches while it commits; a revocation Redis
does not confirm is not made: 503) and renews it after, so an entry made before the commit,
whatever it read, never matches again. When Redis is gone, lost or restarted (the key is
missing, a call fails), nothing is cached or served from the cache: every token is read from
the database, as without Redis.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from lumen.errors import CacheUnavailable

log = logging.getLogger(__name__)

FENCE = b"fence:"
# A fence whose renewal never came (the process died between commit and renewal) lapses: then
# the key is missing, and the first reader makes a new generation no old entry matches.
FENCE_TTL_SECONDS = 600
GENERATION_TTL_SECONDS = 7 * 86400
MAX_ENTRIES = 10_000
# After a failed call Redis is left alone this long: a Redis that does not answer must not cost
# every signed-in request its timeout.
RETRY_SECONDS = 5.0


class TokenCache:
    def __init__(self, client, calls, key: str):
        self.client = client
        self.calls = calls  # lumen.redis_calls: the GET of every signed-in request
        self.key = key  # TOKEN_CACHE_KEY
        self._entries: dict[str, tuple[bytes, Any]] = {}
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def generation(self) -> bytes | None:
        """The generation entries may be made and used under now; None: not now."""
        if time.monotonic() < self._skip_until:
            return None
        try:
            current = self.calls.execute("GET", self.key)
            if current is None:
                fresh = secrets.token_hex(8).encode()
                made = self.client.set(self.key, fresh, nx=True, ex=GENERATION_TTL_SECONDS)
                return fresh if made else None
        except RedisError as exc:
            self.clear()  # Redis may come back without what this process saw
            self._skip_until = time.monotonic() + RETRY_SECONDS
            log.warning("token cache off: Redis unreachable", extra={"error": repr(exc)})
            return None
        return None if current.startswith(FENCE) else current

    def get(self, key: str, generation: bytes | None) -> Any:
        entry = self._entries.get(key)
        if entry is None or generation is None or entry[0] != generation:
            return None
        return entry[1]

    def put(self, key: str, generation: bytes | None, value: Any) -> None:
        if generation is None:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (generation, value)

    def update(self, key: str, change) -> None:
        """Replace a cached value by ``change(value)``, under the generation it was made in."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = (entry[0], change(entry[1]))

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def fence(self) -> str:
        """Before a revocation commits: no entry is made or used until ``renew``. Raises
        CacheUnavailable when Redis does not confirm it: the revocation must not commit."""
        token = FENCE + secrets.token_hex(8).encode()
        try:
            self.client.set(self.key, token, ex=FENCE_TTL_SECONDS)
        except RedisError as exc:
            log.warning("token revocation refused: Redis unreachable", extra={"error": repr(exc)})
            raise CacheUnavailable() from None
        return token

    def renew(self) -> None:
        """After a revocation committed: a new generation, which no earlier entry matches."""
        try:
            self.client.set(self.key, secrets.token_hex(8), ex=GENERATION_TTL_SECONDS)
        except RedisError as exc:
            # The fence stays until it lapses: no worker caches tokens meanwhile.
            log.warning("token generation not renewed", extra={"error": repr(exc)})
