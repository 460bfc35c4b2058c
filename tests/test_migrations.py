"""Alembic: the core branch and every enabled plugin's branch go up to their heads and back."""

from sqlalchemy import create_engine, inspect

from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager


def make_lumen(url, plugins):
    settings = load_settings({"DATABASE_URL": url, "LUMEN_PLUGINS": plugins})
    return Lumen(settings, make_plugin_manager(settings.enabled_plugins))


def test_core_up_and_down(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    lumen = make_lumen(url, "none")
    assert migrate.is_fresh(lumen)
    migrate.upgrade(lumen)
    assert {"users", "tokens", "photos"} <= set(inspect(lumen.engine).get_table_names())
    assert migrate.current(lumen) == {"core_0001"}
    migrate.downgrade(lumen, "core@-1")
    assert "photos" not in inspect(lumen.engine).get_table_names()
    assert migrate.current(lumen) == set()
    lumen.engine.dispose()


def test_enabling_a_plugin_adds_its_branch(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    core_only = make_lumen(url, "none")
    migrate.upgrade(core_only)
    before = set(inspect(create_engine(url)).get_table_names())
    with_plugins = make_lumen(url, "locations")
    migrate.upgrade(with_plugins)
    heads = migrate.current(with_plugins)
    assert "core_0001" in heads and len(heads) == 2
    after = set(inspect(create_engine(url)).get_table_names())
    assert after > before  # the locations plugin's tables
    core_only.engine.dispose()
    with_plugins.engine.dispose()


def test_schema_matches_the_models(backend):
    """The migrations create exactly what the models describe (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from lumen.models import Base

    with backend[2].connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    core = [d for d in diff if _table_of(d) in {"users", "tokens", "photos"}]
    assert core == []


def _table_of(diff) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None:
            return table.name
        if name in {"users", "tokens", "photos"}:
            return name
    return None
