"""The suite's own rules hold: with pyproject's pytest settings, a warning, an unraisable
exception or an exception in a thread the test started fails that test; coverage counts
branches in every process, gunicorn's settings module included."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PYPROJECT = tomllib.loads(
    (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
)
FILTERS = PYPROJECT["tool"]["pytest"]["ini_options"]["filterwarnings"]

INNER = """
import gc
import threading
import warnings


def test_a_warning():
    warnings.warn("deprecated", DeprecationWarning)


def test_an_exception_in_a_thread():
    def boom():
        raise AssertionError("a writer got a 500")

    thread = threading.Thread(target=boom)
    thread.start()
    thread.join()


def test_an_unraisable_exception():
    class Broken:
        def __del__(self):
            raise RuntimeError("in __del__")

    Broken()
    gc.collect()


def test_a_clean_test():
    assert True
"""


@pytest.fixture
def inner(pytester):
    lines = "\n".join(f"    {value!r}," for value in FILTERS)
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\nfilterwarnings = [\n{lines}\n]\n")
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:cov", "-q")


def test_warnings_unraisable_and_thread_exceptions_fail_their_test(inner):
    outcomes = inner.parseoutcomes()
    assert outcomes.get("passed") == 1
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3
    output = inner.stdout.str()
    for name in ("test_a_warning", "test_an_exception_in_a_thread", "test_an_unraisable_exception"):
        assert f"test_inner.py::{name}" in output
    assert "test_inner.py::test_a_clean_test" not in output.split("short test summary")[-1]
    assert "a writer got a 500" in output


def test_coverage_counts_branches_in_every_process_and_omits_no_lumen_module():
    run = PYPROJECT["tool"]["coverage"]["run"]
    assert run["branch"] is True and run["parallel"] is True
    assert set(run["patch"]) == {"subprocess", "fork", "_exit", "execv"}
    assert set(run["source_pkgs"]) == {"lumen", "lumen_plugins"}
    assert all(not pattern.endswith(".py") for pattern in run.get("omit", []))
    assert PYPROJECT["tool"]["coverage"]["report"]["fail_under"] >= 95


_seen: dict[str, int] = {}


def lumen_handlers() -> list:
    import logging

    return [h for h in logging.getLogger().handlers if getattr(h, "_lumen", False)]


def test_configuring_the_logs_in_a_test_adds_a_root_handler():
    """The first of a pair: what an in-process `lumen ...` run does to the root logger."""
    import logging

    from lumen import logs
    from lumen.config import load_settings

    before = _seen["level"] = logging.getLogger().level
    logs.configure(load_settings({"LOG_LEVEL": "ERROR" if before != logging.ERROR else "DEBUG"}))
    assert len(lumen_handlers()) == 1
    assert logging.getLogger().level != before


def test_the_next_test_finds_the_root_logger_as_it_was():
    """The second: conftest's autouse fixture removed the handler and restored the level."""
    import logging

    assert lumen_handlers() == []
    assert logging.getLogger().level == _seen.get("level", logging.getLogger().level)
