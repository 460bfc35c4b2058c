"""Domain events: recorded on the session during a unit of work, delivered after it commits.

A rolled-back transaction delivers nothing, so a plugin never acts on a change that did not
happen; a committed one always delivers, so a plugin never misses one that did.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_KEY = "lumen.events"

PHOTO_CREATED = "lumen_photo_created"
PHOTO_UPDATED = "lumen_photo_updated"
PHOTO_DELETED = "lumen_photo_deleted"
USER_UPDATED = "lumen_user_updated"


def record(session: Session, hook_name: str, **payload: Any) -> None:
    """Queue an event for delivery once ``session`` commits."""
    session.info.setdefault(_KEY, []).append((hook_name, payload))


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
    """Hand the committed events to every plugin. A failing plugin is logged and the others
    still get the event: the change is committed and cannot be undone."""
    for hook_name, payload in session.info.pop(_KEY, []):
        lumen.call_each(hook_name, lumen=lumen, **payload)
