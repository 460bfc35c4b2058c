"""docs/quickstart.md cannot drift: `lumen serve` starts as the page says, every `sh` block runs
in one shell against it, in order, and each answer is checked against the block shown after it
(a JSON answer must hold every field shown, with the value shown; a text answer must be it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow

PAGE = Path(__file__).parents[1] / "docs" / "quickstart.md"
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARK = "=====quickstart-block-{}====="


def blocks() -> list[tuple[str, str]]:
    """(command, expected answer) for each runnable block, in the page's order."""
    found = [(kind, extra.strip(), body) for kind, extra, body in _BLOCK.findall(PAGE.read_text())]
    steps = []
    for index, (kind, extra, body) in enumerate(found):
        if kind != "sh" or extra == "skip":
            continue
        following = found[index + 1] if index + 1 < len(found) else None
        assert following and following[0] in ("json", "text"), f"no answer after:\n{body}"
        steps.append((body, following[0], following[2]))
    return steps


def contains(actual, expected) -> bool:
    """Every field of ``expected`` is in ``actual`` with the same value, at any depth."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) >= len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=False))
        )
    return actual == expected


def test_every_command_of_the_quickstart_gives_the_answer_shown(tmp_path):
    steps = blocks()
    assert len(steps) >= 8
    port = free_port()
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
        "HOME": str(tmp_path),
        # A smaller gazetteer than the default: the page's commands are the same.
        "LOCATIONS_DATASET": "cities15000",
        "WEB_CONCURRENCY": "2",
        **{k: v for k, v in os.environ.items() if k.startswith(("COVERAGE", "PYTHON"))},
    }
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "from lumen.cli import main; main()", "serve"]
        + ["--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60, proc=server)
        script = "set -euo pipefail\n" + "\n".join(
            f"echo '{MARK.format(n)}'\n{command}" for n, (command, _, _) in enumerate(steps)
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env={**env, "LUMEN": f"http://127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert done.returncode == 0, done.stderr + (tmp_path / "serve.log").read_text()
    outputs = re.split(r"=====quickstart-block-\d+=====\n", done.stdout)[1:]
    assert len(outputs) == len(steps)
    for (command, kind, expected), output in zip(steps, outputs, strict=True):
        if kind == "json":
            answer = json.loads(output)
            assert contains(answer, json.loads(expected)), (command, answer)
        else:
            assert output.strip() == expected.strip(), (command, output)
