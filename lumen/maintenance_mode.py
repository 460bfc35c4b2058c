"""Maintenance mode: writes are refused with 503, reads are served.

The flag is a row of the ``maintenance`` table, so every worker of every host sees the same
state; each worker reads it at most every ``REFRESH_S`` seconds (a primary-key read of a table
of at most one row), so a switch reaches them all within a second.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import falcon
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from lumen.models import Maintenance, utcnow

log = logging.getLogger(__name__)

# Twice a second: a switch is seen by every worker within a second, the query included.
REFRESH_S = 0.5
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_MESSAGE = "The service is under maintenance; try again shortly."
DEFAULT_RETRY_AFTER = 60


@dataclass(frozen=True)
class State:
    message: str
    retry_after: int
    since: datetime


def current(engine) -> State | None:
    """The maintenance state in the database now (None: off)."""
    with engine.connect() as connection:
        row = connection.execute(select(Maintenance).where(Maintenance.id == 1)).first()
    return State(row.message, row.retry_after, row.since) if row is not None else None


def switch_on(engine, message: str = DEFAULT_MESSAGE, retry_after: int = DEFAULT_RETRY_AFTER):
    """Turn maintenance mode on (or change its message); returns the new state."""
    state = State(message, retry_after, utcnow())
    with engine.begin() as connection:
        connection.execute(delete(Maintenance))
        connection.execute(
            Maintenance.__table__.insert().values(
                id=1, message=message, retry_after=retry_after, since=state.since
            )
        )
    return state


def switch_off(engine) -> bool:
    """Turn maintenance mode off; returns whether it was on."""
    with engine.begin() as connection:
        return connection.execute(delete(Maintenance)).rowcount > 0


class Flag:
    """This worker's view of the flag, refreshed at most every REFRESH_S seconds. A database
    that cannot be read keeps the last state seen: the database errors of the request itself
    say what is wrong."""

    def __init__(self, engine, refresh_s: float = REFRESH_S):
        self.engine, self.refresh_s = engine, refresh_s
        self._state: State | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def state(self) -> State | None:
        if time.monotonic() - self._read_at >= self.refresh_s:
            with self._lock:
                if time.monotonic() - self._read_at >= self.refresh_s:
                    try:
                        self._state = current(self.engine)
                    except DBAPIError as exc:
                        log.warning("maintenance flag unreadable", extra={"error": str(exc)})
                    self._read_at = time.monotonic()
        return self._state


class MaintenanceMiddleware:
    """Refuses every write with 503, Retry-After and the operator's message while the flag is
    on; reads pass. Sits outside the session, so a refused write opens no transaction."""

    def __init__(self, flag: Flag):
        self.flag = flag

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method in READ_METHODS:
            return
        state = self.flag.state()
        if state is not None:
            raise falcon.HTTPServiceUnavailable(
                title="Maintenance", description=state.message, retry_after=state.retry_after
            )


def health_check(flag: Flag) -> dict:
    """``maintenance:mode``: warn while writes are refused."""
    state = flag.state()
    entry = {
        "componentType": "system",
        "observedValue": state is not None,
        "observedUnit": "on",
        "status": "pass" if state is None else "warn",
    }
    if state is not None:
        entry["output"] = f"maintenance mode since {state.since.isoformat()}: {state.message}"
    return entry
