"""The watch on the imported data's version that empties each worker's LRU of search answers
(LOCATION_CACHE_SIZE entries; 0 turns it off).

An import bumps a version number in the database. Every worker reads it at most once a second
(one primary-key read) and, when it changed, empties its LRU and reloads what else it keeps of
the data, so after a re-import no worker answers from the old data for more than about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

VERSION_CHECK_SECONDS = 1.0


class VersionWatch:
    """Calls ``on_change(version)`` when the data version read from the database differs from
    the one seen before (and on the first check); reads it at most every ``check_seconds``."""

    def __init__(
        self,
        read_version: Callable[[], int],
        on_change: Callable[[int], None],
        check_seconds: float = VERSION_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.read_version = read_version
        self.on_change = on_change
        self.check_seconds = check_seconds
        self.clock = clock
        self.version: int | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def check_now(self) -> None:
        self._checked_at = float("-inf")
        self.check()

    def check(self) -> None:
        now = self.clock()
        if now - self._checked_at < self.check_seconds:
            return
        with self._lock:
            if now - self._checked_at < self.check_seconds:
                return  # another thread just checked
            self._checked_at = now
            try:
                version = self.read_version()
                if version != self.version:
                    self.on_change(version)
                    self.version = version
            except SQLAlchemyError as exc:
                # Keep what is cached; a search that needs the database will meet the error.
                log.warning("location data version unreadable", extra={"error": type(exc).__name__})
