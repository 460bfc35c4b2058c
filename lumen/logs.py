"""Structured logs: JSON lines (LOG_FORMAT=json) or key=value text, never a secret."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class _Redacting(logging.Formatter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text


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


def secrets_of(settings) -> list[str]:
    """Every secret value the settings hold, so no log line can carry one."""
    found = [settings.redis_password, settings.db_password]
    for url in (settings.database_url, settings.redis_url):
        if url:
            found.append(urlsplit(url).password)
    return [s for s in found if s]


def configure(settings) -> None:
    formatter_type = JSONFormatter if settings.log_format == "json" else TextFormatter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_type(secrets_of(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_lumen", False):
            root.removeHandler(old)
    handler._lumen = True
    root.addHandler(handler)
    root.setLevel(settings.log_level)
