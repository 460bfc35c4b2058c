"""The read-through cache the core reaches through ``lumen.cached(key, tags, loader)``, and the
purge of tags after each committed change. It knows keys and tags, never what they mean."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lumen import json_dumps, json_loads
from lumen_plugins.cache.keys import Keys
from lumen_plugins.cache.stats import Stats
from lumen_plugins.cache.store import RedisStore, Unavailable

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 0.01


# A value given as bytes (a page kept as it is sent) is stored as it is, after this byte, which
# no JSON text starts with: nothing to escape when stored, nothing to parse when read.
RAW = b"\x00"


def encode(value: Any) -> bytes:
    return RAW + value if isinstance(value, bytes) else json_dumps(value)


def decode(stored: bytes) -> Any:
    return stored[1:] if stored[:1] == RAW else json_loads(stored)


class Cache:
    """The plugin's state, one per app (``lumen.state["cache"]``). Without a store (no
    REDIS_URL) every call goes to the loader."""

    def __init__(
        self,
        store: RedisStore | None,
        keys: Keys,
        stats: Stats,
        lock_wait: float,
        settings,
    ):
        self.store = store
        self.keys = keys
        self.stats = stats
        self.lock_wait = lock_wait
        self.settings = settings  # the plugin's own section (CACHE_*)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def get(self, key: str, tags: tuple[str, ...], loader: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``loader()``'s, stored for the next reader.

        On a miss one caller (the holder of the key's lock) loads while the others wait up to
        ``lock_wait`` for its value, then load it themselves.
        """
        if self.store is None or self.store.breaker.resting:
            return loader()
        entry = self.keys.entry(key, tags)
        try:
            found = self.store.lookup(entry, lock=True, count=True)
        except Unavailable:
            return loader()
        if found.value is not None:
            self.stats.count("hits")
            return decode(found.value)
        self.stats.count("misses")
        deadline = time.monotonic() + self.lock_wait
        while not found.fenced and found.lock_token is None and time.monotonic() < deadline:
            time.sleep(LOCK_POLL_SECONDS)
            try:
                found = self.store.lookup(entry, lock=True, count=False)
            except Unavailable:
                return loader()
            if found.value is not None:
                return decode(found.value)
        if found.fenced:
            return loader()  # a change of these tags is committing: nothing may be stored
        try:
            value = loader()
        except BaseException:
            if found.lock_token is not None:
                self._quietly(lambda: self.store.release(entry, found.lock_token))
            raise
        # Written only if no invalidation happened since the stamp was read (before loading).
        self._quietly(lambda: self.store.store(entry, found.stamp, encode(value), found.lock_token))
        return value

    def prefetch(self, key: str, tags: tuple[str, ...]) -> None:
        """The request will ``get(key, tags, ...)``: its lookup rides the request's next Redis
        round trip (the rate limit's), so a hit needs none of its own."""
        if self.store is not None:
            self.store.defer_peek(self.keys.entry(key, tags))

    def purge(self, tags: tuple[str, ...], change: str | None = None) -> None:
        """Every entry that depends on one of ``tags`` stops being served; the fences
        ``change`` put on them before its commit are lifted."""
        if self.store is None:
            return
        generations = tuple(self.keys.generation(tag) for tag in tags)
        fences = tuple(self.keys.fence(tag) for tag in tags)
        if self.store.invalidate(generations, fences, change):
            self.stats.count("invalidations")
        else:
            log.error(
                "cache purge failed; the namespace is renewed once Redis answers",
                extra={"tags": list(tags)},
            )

    def purge_before_commit(self, tags: tuple[str, ...], change: str) -> None:
        """Stop serving and storing every entry that depends on one of ``tags`` until
        ``purge(tags, change)``. Raises Unavailable when Redis does not confirm it: the change
        must not commit, or workers that reach Redis would go on serving what it hides."""
        if self.store is None:
            return
        generations = tuple(self.keys.generation(tag) for tag in tags)
        self.store.fence(generations, tuple(self.keys.fence(tag) for tag in tags), change)

    @staticmethod
    def _quietly(call: Callable[[], Any]) -> None:
        try:
            call()
        except Unavailable:
            pass  # counted and logged by the store; the request is served all the same

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
