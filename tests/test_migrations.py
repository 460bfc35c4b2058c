"""Alembic: the core branch and every enabled plugin's branch go up to their heads and back."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    DefaultClause,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    text,
)

from lumen import migrate
from lumen.app import Lumen
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from tests.conftest import run_lumen, service_env


def make_lumen(url, plugins):
    settings = load_settings({"DATABASE_URL": url, "LUMEN_PLUGINS": plugins})
    return Lumen(settings, make_plugin_manager(settings.enabled_plugins))


def test_core_up_and_down(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    lumen = make_lumen(url, "none")
    assert migrate.is_fresh(lumen)
    migrate.upgrade(lumen)
    assert {"users", "tokens", "photos"} <= set(inspect(lumen.engine).get_table_names())
    steps = []
    while migrate.current(lumen):
        steps.append(migrate.current(lumen))
        migrate.downgrade(lumen, "core@-1")
    assert steps == [{"core_0004"}, {"core_0003"}, {"core_0002"}, {"core_0001"}]
    assert "photos" not in inspect(lumen.engine).get_table_names()
    lumen.engine.dispose()


def test_enabling_a_plugin_adds_its_branch(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    core_only = make_lumen(url, "none")
    migrate.upgrade(core_only)
    before = set(inspect(create_engine(url)).get_table_names())
    with_plugins = make_lumen(url, "locations")
    migrate.upgrade(with_plugins)
    heads = migrate.current(with_plugins)
    assert "core_0004" in heads and len(heads) == 2
    after = set(inspect(create_engine(url)).get_table_names())
    assert after > before  # the locations plugin's tables
    core_only.engine.dispose()
    with_plugins.engine.dispose()


def all_metadata() -> MetaData:
    """The tables of the core and of every plugin that owns tables, as the code declares them."""
    from lumen.models import Base
    from lumen_plugins.locations.tables import metadata as locations

    combined = MetaData()
    for source in (Base.metadata, locations):
        for table in source.tables.values():
            table.to_metadata(combined)
    return combined


def schema_drift(engine, metadata: MetaData) -> list:
    """Every difference Alembic's autogenerate sees between the database and ``metadata``:
    tables, columns, indexes, constraints, and (inside nested lists) modify_type,
    modify_nullable and modify_default (a server default), none of them thrown away."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, metadata)


def kinds(diff: list) -> set[str]:
    return {(entry[0] if isinstance(entry, list) else entry)[0] for entry in diff}


def test_schema_matches_the_models(backend):
    """The migrations (core and plugins, all to their heads) create exactly what the code
    declares: no difference of any kind, on SQLite and on PostgreSQL."""
    assert schema_drift(backend[2], all_metadata()) == []


def test_the_drift_check_sees_a_changed_column_type_nullability_and_default(backend):
    """A column changed in the code without a migration is drift: each kind is reported."""
    metadata = all_metadata()
    users = metadata.tables["users"]
    users.c.display_name.type = String(200)  # a type change
    users.c.username.nullable = True  # a nullability change
    photos = metadata.tables["photos"]
    photos.c.visibility.server_default = DefaultClause(text("'public'"))  # a new default
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    Index("ix_users_display_name", users.c.display_name)
    diff = schema_drift(backend[2], metadata)
    assert kinds(diff) == {
        "modify_type",
        "modify_nullable",
        "modify_default",
        "add_table",
        "add_index",
    }
    changed = {(entry[0][0], entry[0][2], entry[0][3]) for entry in diff if isinstance(entry, list)}
    assert changed == {
        ("modify_type", "users", "display_name"),
        ("modify_nullable", "users", "username"),
        ("modify_default", "photos", "visibility"),
    }


def test_the_drift_check_sees_a_table_the_code_no_longer_declares(backend):
    metadata = all_metadata()
    metadata.remove(metadata.tables["locations_top_cities"])
    diff = schema_drift(backend[2], metadata)
    assert [(entry[0], entry[1].name) for entry in diff] == [
        ("remove_table", "locations_top_cities")
    ]


def test_lumen_db_downgrade_steps_a_plugin_branch_back_and_upgrade_restores_it(
    fresh_database, tmp_path
):
    """`lumen db downgrade locations@-1` removes the plugin's tables and only those; the core
    branch stays at its head, and `lumen db upgrade` brings the plugin back without drift."""
    _, url = fresh_database
    env = service_env(DATABASE_URL=url, LUMEN_PLUGINS="locations", STORAGE_PATH=str(tmp_path))

    up = run_lumen("db", "upgrade", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "database at: core_0004, locations_0001"

    down = run_lumen("db", "downgrade", "locations@-1", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "database at: core_0004"
    engine = create_engine(load_settings({"DATABASE_URL": url}).database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert not {t for t in tables if t.startswith("locations_")}
        assert {"users", "tokens", "photos"} <= tables

        current = run_lumen("db", "current", env=env, cwd=tmp_path)
        assert current.stdout.strip() == "core_0004"

        again = run_lumen("db", "upgrade", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "database at: core_0004, locations_0001"
        assert schema_drift(engine, all_metadata()) == []
    finally:
        engine.dispose()
