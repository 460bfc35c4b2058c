"""Domain events: recorded on the session during a unit of work, delivered after it commits.

A rolled-back transaction delivers nothing, so a plugin never acts on a change that did not
happen; a committed one always delivers, so a plugin never misses one that did. Each event
names the cache tags it purges; after the commit the core purges them all at once
(``lumen_purge``), then hands each event to the plugins.

An event that narrows what may be seen (a photo made private, a photo deleted) is purged
before the commit as well (``lumen_purge_before_commit``): a worker that cannot reach the
cache then refuses the change (503, rolled back) rather than commit it while other workers go
on serving what it hid. A purge after the commit alone could be lost with that worker's
connection, and until it is made good the others would serve the old, public, value.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from lumen.errors import CacheUnavailable
from lumen.plugins import collect

log = logging.getLogger(__name__)

_KEY = "lumen.events"
_NARROWING = "lumen.events.narrowing"  # tags of the narrowing events, to purge before commit
_PURGED_BEFORE_COMMIT = "lumen.events.purged_before_commit"  # (change id, tags)

PHOTO_CREATED = "lumen_photo_created"
PHOTO_UPDATED = "lumen_photo_updated"
PHOTO_DELETED = "lumen_photo_deleted"
USER_UPDATED = "lumen_user_updated"


def record(
    session: Session,
    hook_name: str,
    purges: Iterable[str] = (),
    narrows: bool = False,
    **payload: Any,
) -> None:
    """Queue an event for delivery once ``session`` commits, with the cache tags it purges.
    ``narrows``: the change hides something that could be seen before, so its tags are purged
    before the commit too, and a failure of that purge refuses the change."""
    purges = tuple(purges)
    session.info.setdefault(_KEY, []).append((hook_name, purges, payload))
    if narrows:
        session.info.setdefault(_NARROWING, set()).update(purges)


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


def purge_before_commit(lumen, session: Session) -> None:
    """Purge the tags of the narrowing events queued on ``session``, which is about to commit.
    Raises CacheUnavailable (503) when a plugin cannot: the caller must roll back."""
    tags = tuple(sorted(session.info.pop(_NARROWING, ())))
    if not tags:
        return
    # Ties this purge to the one after the commit (or the rollback) that ends it.
    change = secrets.token_hex(8)
    session.info[_PURGED_BEFORE_COMMIT] = (change, tags)
    try:
        collect(lumen.pm, "lumen_purge_before_commit", lumen=lumen, tags=tags, change=change)
    except Exception as exc:
        log.error(
            "cache purge before commit failed: the change is refused",
            extra={"tags": list(tags), "error": repr(exc)},
        )
        raise CacheUnavailable() from exc


def discard(lumen, session: Session) -> None:
    """Drop the events of a unit of work that did not commit. Tags purged before the commit
    are purged again, which ends that purge (the cache may store them again)."""
    session.info.pop(_KEY, None)
    session.info.pop(_NARROWING, None)
    purged = session.info.pop(_PURGED_BEFORE_COMMIT, None)
    if purged is not None:
        change, tags = purged
        lumen.purge(tags, change)


def deliver(lumen, session: Session) -> None:
    """Purge what the committed events purge, then hand each event to every plugin. A failing
    plugin is logged and the others still run: the change is committed and cannot be undone."""
    queued = session.info.pop(_KEY, [])
    change = session.info.pop(_PURGED_BEFORE_COMMIT, (None,))[0]
    tags = sorted({tag for _, purges, _ in queued for tag in purges})
    if tags:
        lumen.purge(tags, change)
    for hook_name, _, payload in queued:
        collect(lumen.pm, hook_name, isolate=True, lumen=lumen, **payload)
