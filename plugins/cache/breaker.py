"""A circuit breaker: after ``failures`` consecutive Redis errors the cache stops calling Redis
for ``cooldown`` seconds, then lets one call through as a probe."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state = CLOSED
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go to Redis now? While half-open only one caller (the probe) may."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and self.clock() - self._opened_at >= self.cooldown:
                self.state, self._probing = HALF_OPEN, False
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return self.state == CLOSED

    @property
    def resting(self) -> bool:
        """Open and still cooling down: a cheap look, without taking the probe."""
        return self.state == OPEN and self.clock() - self._opened_at < self.cooldown

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open (or half-open) breaker."""
        if self.state == CLOSED and self._consecutive == 0:
            return False
        with self._lock:
            closed = self.state != CLOSED
            self.state, self._consecutive, self._probing = CLOSED, 0, False
            return closed

    def failed(self) -> bool:
        """Record an error; True when this error opened the breaker."""
        with self._lock:
            self._consecutive += 1
            if self.state != HALF_OPEN and self._consecutive < self.failures:
                return False
            opened = self.state != OPEN
            self.state, self._opened_at, self._probing = OPEN, self.clock(), False
            return opened
