"""The plugin contract cannot rot: every hook has its test and its documentation with its full
signature, docs/plugins.md lists the public API exactly, the built-in plugins import nothing
else, and create_app calls the hooks in the documented order."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import lumen
from lumen import hookimpl, hookspecs

ROOT = Path(__file__).parents[1]
DOCS = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("lumen_"))

pytestmark = pytest.mark.unit


def _signature(name: str) -> str:
    parameters = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(parameters)})"


def test_every_hook_has_a_test_of_its_own():
    sources = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    missing = [name for name in HOOKS if f"def test_hook_{name}(" not in sources]
    assert missing == []


def test_every_hook_is_documented_with_its_full_signature():
    assert len(HOOKS) >= 20
    missing = [_signature(name) for name in HOOKS if f"`{_signature(name)}`" not in DOCS]
    assert missing == []


def test_the_api_section_lists_exactly_the_public_names():
    section = DOCS.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            documented |= set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", row.split("|")[1]))
    assert documented == set(lumen.__all__)
    assert all(hasattr(lumen, name) for name in lumen.__all__)


def _lumen_imports(path: Path) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root == "lumen":
                found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lumen":
                    found.append((alias.name, []))
    return found


def test_built_in_plugins_import_only_the_public_api():
    offending = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for module, names in _lumen_imports(path):
            if module != "lumen" or not set(names) <= set(lumen.__all__):
                offending.append(f"{path.relative_to(ROOT)}: {module} {names}")
    assert offending == []


def test_create_app_calls_the_hooks_in_the_documented_order(tmp_path):
    from lumen.config import load_settings
    from lumen.plugins import make_plugin_manager

    called = []

    class Records:
        @hookimpl
        def lumen_settings(self):
            called.append("settings")

        @hookimpl
        def lumen_startup(self, lumen):
            called.append("startup")

        @hookimpl
        def lumen_health_checks(self, lumen):
            called.append("health checks")

        @hookimpl
        def lumen_metrics(self, lumen, registry):
            called.append("metrics")

        @hookimpl
        def lumen_middleware(self, lumen):
            called.append("middleware")

        @hookimpl
        def lumen_routes(self, lumen):
            called.append("routes")

        @hookimpl
        def lumen_error_handlers(self, lumen):
            called.append("error handlers")

        @hookimpl
        def lumen_openapi(self, lumen, spec):
            called.append("openapi")

    pm = make_plugin_manager([])
    pm.register(Records(), name="records")
    settings = load_settings({"DATABASE_URL": "sqlite://", "STORAGE_PATH": str(tmp_path)})
    app = lumen.create_app(settings, pm)
    app.lumen.shutdown()
    documented = re.findall(r"^\d\. `lumen_(\w+)\(", DOCS, flags=re.MULTILINE)
    assert [name.replace("_", " ") for name in documented] == called
    assert called == [
        "settings",
        "startup",
        "health checks",
        "metrics",
        "middleware",
        "routes",
        "error handlers",
        "openapi",
    ]
