"""Structured logs: JSON lines (LOG_FORMAT=json) or key=value text, never a secret."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from lumen.secrets import Redactor

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class _Redacting(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact


class JSONFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str))


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds")
        fields = " ".join(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in _extras(record).items()
        )
        line = (
            f"{when} {record.levelname:<7} {record.name}: {record.getMessage()} {fields}".rstrip()
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


def configure(settings) -> None:
    formatter_type = JSONFormatter if settings.log_format == "json" else TextFormatter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_type(Redactor(settings.environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_lumen", False):
            root.removeHandler(old)
    handler._lumen = True
    root.addHandler(handler)
    root.setLevel(settings.log_level)
