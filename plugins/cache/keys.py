"""Redis key names: one deployment's prefix, the entries the core caches, and the generations
each entry is stamped with.

An entry is valid only while every generation it was stamped with is unchanged, so bumping one
generation invalidates every entry that depends on it in O(1). A photo's keys carry its id as a
Redis Cluster hash tag (``lumen:meta:{<id>}``), and so do a user's (``lumen:user:{<id>}:...``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Only first pages are cached: the number of list keys stays bounded whatever clients ask for.
MAX_CACHED_OFFSET = 100
PREFIX_RULE = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$")
_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_SCOPES = ("all", "public")


@dataclass(frozen=True)
class Entry:
    """One cached value: where it lives, its stampede lock, and what it depends on."""

    key: str
    data: str
    lock: str
    generations: tuple[str, ...]


def _tag(identifier) -> str:
    return f"{{{identifier}}}"


def _first_page(limit: str, offset: str) -> bool:
    return limit.isdigit() and offset.isdigit() and int(offset) < MAX_CACHED_OFFSET


class Keys:
    """The Redis keys of one deployment, all under ``prefix:``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        # The same keys come back request after request: parse each once.
        self.entry = functools.lru_cache(maxsize=10000)(self._parse)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this deployment and no other's."""
        return self._key("*")

    # --- generations -------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The namespace generation every entry depends on."""
        return self._key("epoch")

    @property
    def public_generation(self) -> str:
        return self._key("photos", "public", "gen")

    def photo_generation(self, photo_id) -> str:
        return self._key("photo", _tag(photo_id), "gen")

    def user_photos_generation(self, user_id) -> str:
        return self._key("user", _tag(user_id), "gen", "photos")

    def user_profile_generation(self, user_id) -> str:
        return self._key("user", _tag(user_id), "gen", "profile")

    # --- entries and short-lived keys ----------------------------------------------------------

    def temp(self, *parts: str) -> str:
        """A short-lived key (locks): always written with a TTL of seconds."""
        return self._key("temp", *parts)

    def stats_bucket(self, minute: int) -> str:
        return self._key("stats", str(minute))

    def _parse(self, key: str) -> Entry | None:
        """The entry for a key the core asks for, or None when it is not cached (unknown kind,
        malformed, or beyond the first pages). Called as ``keys.entry(key)``."""
        match key.split(":"):
            case ["meta" | "urls" as kind, photo_id] if _ID.match(photo_id):
                data = self._key(kind, _tag(photo_id))
                generations = (self.epoch, self.photo_generation(photo_id))
            case ["photos", "public", limit, offset] if _first_page(limit, offset):
                data = self._key("photos", "public", limit, offset)
                generations = (self.epoch, self.public_generation)
            case ["user", user_id, "photos", scope, limit, offset] if (
                _ID.match(user_id) and scope in _SCOPES and _first_page(limit, offset)
            ):
                data = self._key("user", _tag(user_id), "photos", scope, limit, offset)
                generations = (self.epoch, self.user_photos_generation(user_id))
            case ["user", user_id, "profile"] if _ID.match(user_id):
                data = self._key("user", _tag(user_id), "profile")
                generations = (self.epoch, self.user_profile_generation(user_id))
            case _:
                return None
        lock = self.temp("lock", data[len(self.prefix) + 1 :])
        return Entry(key=key, data=data, lock=lock, generations=generations)
