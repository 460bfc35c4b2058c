"""A cached read, as the domain modules declare it: the key, the tags the value depends on,
and how to load it. Whoever answers ``lumen_cached`` stores by the key and purges by the tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class CachedRead(NamedTuple):
    # A named tuple: made twice by every cached GET (its prefetch, then its read), in half the
    # time of a frozen dataclass, whose fields are each set through object.__setattr__.
    key: str | None  # None: not worth caching, always loaded
    tags: tuple[str, ...]
    load: Callable[[], Any]

    def through(self, lumen) -> Any:
        """The value, from the cache when a cache plugin has it."""
        if self.key is None:
            return self.load()
        return lumen.cached(self.key, self.tags, self.load)
