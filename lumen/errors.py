"""Every error is JSON: ``{"title", "description"}``; never HTML, never a traceback."""

from __future__ import annotations

import logging

import falcon
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from lumen import jsonenc

log = logging.getLogger(__name__)


class DatabaseUnavailable(falcon.HTTPServiceUnavailable):
    def __init__(self):
        super().__init__(
            title="Database unavailable",
            description="The database cannot be reached; try again shortly.",
            retry_after=5,
        )


class CacheUnavailable(falcon.HTTPServiceUnavailable):
    """A change that must purge the cache before it commits could not: it was not made."""

    def __init__(self):
        super().__init__(
            title="Cache unavailable",
            description="The change was not made: the cache cannot be reached; try again shortly.",
            retry_after=5,
        )


def invalid(field: str, rule: str, status=falcon.HTTP_400) -> falcon.HTTPError:
    """A 4xx naming the offending field and the rule it broke."""
    return falcon.HTTPError(status, title="Invalid input", description=f"{field}: {rule}")


_DEFAULT_DESCRIPTIONS = {
    404: "path: no resource here",
    405: "method: not allowed on this resource",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    # Always JSON, whatever the client accepts: clients rely on one error shape.
    body = exc.to_dict()
    if not body.get("description"):
        # Falcon's own 404 and 405 carry a title only; clients rely on both fields.
        body["description"] = _DEFAULT_DESCRIPTIONS.get(exc.status_code, body["title"])
    resp.content_type = falcon.MEDIA_JSON
    # text first: a body a resource set before failing would otherwise win over this one.
    resp.text = None
    resp.data = jsonenc.dumps(body)


def handle_unexpected(req, resp, exc, params) -> None:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"method": req.method, "path": req.path},
    )
    raise falcon.HTTPInternalServerError(
        title="Internal Server Error", description="An unexpected error occurred."
    )


# SQLite reports both a busy database and a bad statement as OperationalError; only these
# mean "try again later".
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


def database_unavailable(exc: Exception) -> bool:
    """True when the error says the database cannot serve now, not that the request is wrong."""
    if isinstance(exc, PoolTimeoutError) or getattr(exc, "connection_invalidated", False):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        return str(exc.orig).lower().startswith(_SQLITE_UNAVAILABLE)
    return True  # PostgreSQL: connection and server-state errors; SQL errors are other classes


def unavailable_reason(exc: Exception) -> str:
    """What the operator needs to read in the log: the pool's wait or the server's own words
    (``too many connections for role ...``, ``connection refused``), on one line, cut short."""
    if isinstance(exc, PoolTimeoutError):
        return "no pooled connection came free within DB_POOL_TIMEOUT"
    orig = getattr(exc, "orig", None) or exc
    words = " ".join(str(orig).split())
    return words[:300] or type(orig).__name__


def handle_database_error(req, resp, exc, params) -> None:
    if database_unavailable(exc):
        log.warning(
            "database unavailable: %s",
            unavailable_reason(exc),
            extra={"error": type(exc).__name__, "path": req.path},
        )
        raise DatabaseUnavailable()
    handle_unexpected(req, resp, exc, params)


def install(app: falcon.App) -> None:
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(DBAPIError, handle_database_error)
    app.add_error_handler(PoolTimeoutError, handle_database_error)
