"""gunicorn's access log as one JSON object per request (``logger_class`` in gunicorn_conf).

Each field is encoded by ``json.dumps``, never interpolated into a template: a newline, a quote,
a backslash or a byte that is not UTF-8 in a path or a header stays inside its string, so every
line parses and no client can forge one. What is logged is chosen, not copied: the query string
and every header but the User-Agent are left out (a token in ``?token=`` or an Authorization
header never reaches the log), and the values of the settings' secrets are masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from datetime import UTC, datetime

from gunicorn.glogging import Logger

from lumen.secrets import Redactor

# A field longer than this is cut: a client must not be able to fill the disk with one request.
FIELD_LIMIT = 2048


def _text(value: str | None) -> str | None:
    """A WSGI string (the bytes received, decoded as latin-1) as the text a client sent: UTF-8
    read as such, any other byte shown as ``\\xNN``."""
    if value is None:
        return None
    try:
        value = value.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        pass  # not a WSGI string: keep it as it is
    return value[:FIELD_LIMIT]


def _request_header(req, name: str) -> str | None:
    for header, value in getattr(req, "headers", None) or ():
        if header.upper() == name:
            return value
    return None


def _status(resp) -> int | None:
    status = getattr(resp, "status_code", None)
    if isinstance(status, int):
        return status
    try:
        return int(str(resp.status).split(None, 1)[0])
    except (AttributeError, ValueError, IndexError):
        return None


def access_entry(resp, req, environ: dict, request_time) -> dict:
    """The fields of one access-log line."""
    path = environ.get("PATH_INFO")
    if path is None:  # an invalid request answered by gunicorn itself: no WSGI environ
        path = getattr(req, "path", None)
    user_agent = environ.get("HTTP_USER_AGENT")
    if user_agent is None:
        user_agent = _request_header(req, "USER-AGENT")
    sent = getattr(resp, "sent", None)
    return {
        "remote": environ.get("REMOTE_ADDR"),
        "method": _text(environ.get("REQUEST_METHOD") or getattr(req, "method", None)),
        "path": _text(path),
        "status": _status(resp),
        "bytes": sent if isinstance(sent, int) else None,
        "duration_us": request_time.seconds * 1_000_000 + request_time.microseconds,
        "user_agent": _text(user_agent),
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "pid": os.getpid(),  # the worker that answered
    }


# A query string in a URI gunicorn writes to its error log ("Invalid request ...: 'GET /x?token=
# ... HTTP/1.1'", "Error handling request /x?..."): dropped, it may carry a token.
_QUERY = re.compile(r"\?[^\s'\"]*")


class _NoQueryStrings(logging.Filter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(_QUERY.sub("?<query omitted>", record.getMessage()))
        record.args = None
        return True


class JSONAccessLogger(Logger):
    """gunicorn's logger, with access lines written as JSON; its error log keeps its format,
    without query strings or the settings' secrets."""

    def __init__(self, cfg):
        self.redact = Redactor(os.environ)
        super().__init__(cfg)

    def setup(self, cfg):
        super().setup(cfg)
        if not any(isinstance(f, _NoQueryStrings) for f in self.error_log.filters):
            self.error_log.addFilter(_NoQueryStrings(self.redact))

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        try:
            entry = access_entry(resp, req, environ, request_time)
            line = json.dumps(entry, separators=(",", ":"))
            # No arguments: logging leaves a message without them as it is (no %-formatting).
            self.access_log.info(self.redact(line))
        except Exception:
            self.error(traceback.format_exc())
