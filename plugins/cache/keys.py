"""Redis key names: one deployment's prefix, the entries the core caches (by the keys it names)
and the generation of each tag those entries depend on.

An entry is valid only while every generation it was stamped with is unchanged, so bumping one
tag's generation invalidates every entry that depends on the tag, in O(1). While a tag's fence
holds a member (a change purged before its commit and not yet after), no entry that depends on
the tag is served or stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MEMO_SIZE = 4096
PREFIX_RULE = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class Entry:
    """One cached value: where it lives, its stampede lock, and what it depends on."""

    key: str
    data: str
    lock: str
    generations: tuple[str, ...]
    fences: tuple[str, ...]


class Keys:
    """The Redis keys of one deployment, all under ``prefix:``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        # The entries of the hottest keys: a request prefetches and then reads the same one.
        self._entries: dict[tuple[str, tuple[str, ...]], Entry] = {}

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this deployment and no other's."""
        return self._key("*")

    @property
    def epoch(self) -> str:
        """The namespace generation every entry depends on."""
        return self._key("epoch")

    def generation(self, tag: str) -> str:
        return self._key("tag", tag)

    def fence(self, tag: str) -> str:
        """The set of the changes that purged ``tag`` before their commit and not yet after."""
        return self._key("fence", tag)

    def entry(self, key: str, tags: tuple[str, ...]) -> Entry:
        found = self._entries.get((key, tags))
        if found is None:
            if len(self._entries) >= MEMO_SIZE:
                self._entries.clear()
            found = self._entries[(key, tags)] = self._entry(key, tags)
        return found

    def _entry(self, key: str, tags: tuple[str, ...]) -> Entry:
        return Entry(
            key=key,
            data=self._key("entry", key),
            lock=self.temp("lock", key),
            generations=(self.epoch, *(self.generation(tag) for tag in tags)),
            fences=tuple(self.fence(tag) for tag in tags),
        )

    def temp(self, *parts: str) -> str:
        """A short-lived key (locks): always written with a TTL of seconds."""
        return self._key("temp", *parts)

    def stats_bucket(self, minute: int) -> str:
        return self._key("stats", str(minute))
