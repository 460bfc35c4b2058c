"""A database session per request: made on first use, committed when the request succeeded,
rolled back otherwise, and always closed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import falcon
from sqlalchemy.orm import Session

from lumen import events

log = logging.getLogger(__name__)


_AFTER_COMMIT = "lumen.after_commit"
_AFTER_ROLLBACK = "lumen.after_rollback"


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the session's transaction has committed (e.g. delete a file)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def after_rollback(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` if the session's transaction does not commit (e.g. undo a file write).
    Such actions run last-registered first, like an undo log."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append(action)


def _run(session: Session, key: str, reverse: bool = False) -> None:
    actions = session.info.pop(key, [])
    for action in reversed(actions) if reverse else actions:
        try:
            action()
        except Exception:
            log.exception("post-transaction action failed", extra={"action": repr(action)})


def finish(lumen, session: Session, success: bool) -> None:
    """End a unit of work: commit and deliver its events, or roll back and drop them."""
    try:
        if success:
            try:
                events.purge_before_commit(lumen, session)
                session.commit()
            except BaseException:
                success = False
                raise
            session.info.pop(_AFTER_ROLLBACK, None)
            _run(session, _AFTER_COMMIT)
            events.deliver(lumen, session)
        else:
            session.rollback()
    finally:
        if not success:
            session.info.pop(_AFTER_COMMIT, None)
            events.discard(lumen, session)
            _run(session, _AFTER_ROLLBACK, reverse=True)  # undo in the reverse order of doing
        session.close()


@contextlib.contextmanager
def unit_of_work(lumen) -> Iterator[Session]:
    """A session for work outside a request (CLI, warm-up): commit on success."""
    session = lumen.Session()
    try:
        yield session
    except BaseException:
        finish(lumen, session, success=False)
        raise
    finish(lumen, session, success=True)


class DeferredSession:
    """Stands for the request's session where it may not be needed at all (a read the cache
    answers): the session is made by the first use of any of its attributes. Making and
    closing a Session costs a cached photo read about a tenth of its time."""

    __slots__ = ("_context",)

    def __init__(self, context: RequestContext):
        self._context = context

    def __getattr__(self, name: str):
        return getattr(self._context.db, name)


class RequestContext(falcon.Context):
    """``req.context``: ``db`` opens a session only when a resource first touches it
    (``deferred_db`` not even then, only when the session is used); ``user`` and ``token`` are
    the caller's, once authentication has run (None for anonymous)."""

    _lumen = None
    _db = None
    user = None
    token = None

    @property
    def db(self) -> Session:
        if self._db is None:
            self._db = self._lumen.Session()
        return self._db

    @property
    def deferred_db(self) -> Session:
        return DeferredSession(self)  # type: ignore[return-value]


class Request(falcon.Request):
    context_type = RequestContext


class SessionMiddleware:
    def __init__(self, lumen):
        self.lumen = lumen

    def process_request(self, req: Request, resp: falcon.Response) -> None:
        req.context._lumen = self.lumen

    def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        session = req.context._db
        if session is None:
            return
        req.context._db = None
        if not session.in_transaction() and not session.info:
            # Never used (a cache hit): nothing to commit, nor events to deliver.
            session.close()
            return
        ok = req_succeeded and not str(resp.status).startswith(("4", "5"))
        finish(self.lumen, session, success=ok)
