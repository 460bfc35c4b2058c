"""Domain events: recorded on the session during a unit of work, delivered after it commits.

A rolled-back transaction delivers nothing, so a plugin never acts on a change that did not
happen; a committed one always delivers, so a plugin never misses one that did. Each event
names the cache tags it purges; after the commit the core purges them all at once
(``lumen_purge``), then hands each event to the plugins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from lumen.plugins import collect

log = logging.getLogger(__name__)

_KEY = "lumen.events"

PHOTO_CREATED = "lumen_photo_created"
PHOTO_UPDATED = "lumen_photo_updated"
PHOTO_DELETED = "lumen_photo_deleted"
USER_UPDATED = "lumen_user_updated"


def record(session: Session, hook_name: str, purges: Iterable[str] = (), **payload: Any) -> None:
    """Queue an event for delivery once ``session`` commits, with the cache tags it purges."""
    session.info.setdefault(_KEY, []).append((hook_name, tuple(purges), payload))


def apply_changes(obj: Any, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set ``values`` on ``obj``; return what actually changed as {field: (old, new)}, the
    ``changes`` argument of the update events."""
    changes = {
        field: (getattr(obj, field), value)
        for field, value in values.items()
        if getattr(obj, field) != value
    }
    for field, (_, new) in changes.items():
        setattr(obj, field, new)
    return changes


def discard(session: Session) -> None:
    session.info.pop(_KEY, None)


def deliver(lumen, session: Session) -> None:
    """Purge what the committed events purge, then hand each event to every plugin. A failing
    plugin is logged and the others still run: the change is committed and cannot be undone."""
    queued = session.info.pop(_KEY, [])
    tags = sorted({tag for _, purges, _ in queued for tag in purges})
    if tags:
        collect(lumen.pm, "lumen_purge", isolate=True, lumen=lumen, tags=tuple(tags))
    for hook_name, _, payload in queued:
        collect(lumen.pm, hook_name, isolate=True, lumen=lumen, **payload)
