"""Structured logs: JSON lines on request, and never a secret."""

import json
import logging

import pytest

from lumen import logs
from lumen.config import load_settings

pytestmark = pytest.mark.security


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_fields_and_no_secrets(capsys):
    settings = load_settings(
        {
            "LOG_FORMAT": "json",
            "DATABASE_URL": "postgresql://lumen:hunter22@db/lumen",
            "REDIS_PASSWORD": "sesame99",
        }
    )
    logs.configure(settings)
    log = logging.getLogger("lumen.test")
    log.info("connecting to %s", settings.database_url, extra={"redis_password": "sesame99"})
    try:
        raise RuntimeError("failed with password hunter22")
    except RuntimeError:
        log.exception("it broke")
    lines = capsys.readouterr().err.strip().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries[0]["level"] == "INFO" and entries[0]["logger"] == "lumen.test"
    assert "redis_password" in entries[0]
    assert entries[1]["level"] == "ERROR" and "RuntimeError" in entries[1]["exception"]
    text = "\n".join(lines)
    assert "hunter22" not in text and "sesame99" not in text


def test_text_format_and_level(capsys):
    logs.configure(load_settings({"LOG_LEVEL": "WARNING"}))
    log = logging.getLogger("lumen.test")
    log.info("hidden")
    log.warning("shown", extra={"rule": "too long"})
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING lumen.test: shown rule='too long'" in err
