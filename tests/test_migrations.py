"""Alembic: the core branch and every enabled plugin's branch go up to their heads and back."""

import uuid
from datetime import UTC, datetime

import pytest
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
    assert steps == [{"core_0005"}, {"core_0004"}, {"core_0003"}, {"core_0002"}, {"core_0001"}]
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
    assert "core_0005" in heads and len(heads) == 2
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
    """`lumen db downgrade locations@-1` steps the plugin's branch back one revision at a time
    (the names' and the answers' copies of their cities, the typo index, then every table of
    the plugin) and
    only it; the core branch stays at its head, and `lumen db upgrade` brings the plugin back
    without drift."""
    _, url = fresh_database
    env = service_env(DATABASE_URL=url, LUMEN_PLUGINS="locations", STORAGE_PATH=str(tmp_path))

    up = run_lumen("db", "upgrade", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "database at: core_0005, locations_0004"

    engine = create_engine(load_settings({"DATABASE_URL": url}).database_url)
    try:
        down = run_lumen("db", "downgrade", "locations@-1", env=env, cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "database at: core_0005, locations_0003"
        name_columns = {c["name"] for c in inspect(engine).get_columns("locations_names")}
        assert "rank" in name_columns and "city_name" not in name_columns
        down = run_lumen("db", "downgrade", "locations@-1", env=env, cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "database at: core_0005, locations_0002"
        answer_columns = {c["name"] for c in inspect(engine).get_columns("locations_top_cities")}
        assert "matched_name" in answer_columns and "population" not in answer_columns
        down = run_lumen("db", "downgrade", "locations@-1", env=env, cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "database at: core_0005, locations_0001"
        tables = set(inspect(engine).get_table_names())
        assert "locations_typo_keys" not in tables and "locations_names" in tables
        down = run_lumen("db", "downgrade", "locations@-1", env=env, cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "database at: core_0005"
        tables = set(inspect(engine).get_table_names())
        assert not {t for t in tables if t.startswith("locations_")}
        assert {"users", "tokens", "photos"} <= tables

        current = run_lumen("db", "current", env=env, cwd=tmp_path)
        assert current.stdout.strip() == "core_0005"

        again = run_lumen("db", "upgrade", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "database at: core_0005, locations_0004"
        assert schema_drift(engine, all_metadata()) == []
    finally:
        engine.dispose()


# --- rollbacks: every revision up, down and up again, with data in the tables -------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
USER_ID, PHOTO_ID = uuid.UUID(int=1), uuid.UUID(int=2)


def _seed_core_0001(connection):
    from lumen.models import Photo, Token, User

    connection.execute(
        User.__table__.insert().values(id=USER_ID, username="rollback", password_hash="x")
    )
    connection.execute(
        Token.__table__.insert().values(
            id=uuid.UUID(int=3), user_id=USER_ID, token_hash="h" * 64, expires_at=NOW
        )
    )
    connection.execute(
        Photo.__table__.insert().values(
            id=PHOTO_ID,
            owner_id=USER_ID,
            caption="kept through every step",
            width=4,
            height=3,
            content_type="image/jpeg",
            size_bytes=10,
            sha256="a" * 64,
            thumb_sha256="b" * 64,
            thumb_content_type="image/webp",
            thumb_size_bytes=5,
        )
    )


def _seed_core_0002(connection):
    connection.execute(text("UPDATE tokens SET last_used_at = :now"), {"now": NOW})


def _seed_core_0003(connection):
    connection.execute(
        text("UPDATE photos SET public_sha256 = :sha, public_size_bytes = 9"), {"sha": "c" * 64}
    )


def _seed_core_0004(connection):
    from lumen.models import Maintenance

    connection.execute(
        Maintenance.__table__.insert().values(id=1, message="rollback test", retry_after=5)
    )


def _seed_core_0005(connection):
    # A photo more, counted by the triggers (the one of core_0001 was counted by the fill).
    from lumen.models import Photo

    connection.execute(
        Photo.__table__.insert().values(
            id=uuid.uuid4(),
            owner_id=USER_ID,
            visibility="private",
            width=4,
            height=3,
            content_type="image/jpeg",
            size_bytes=10,
            sha256=uuid.uuid4().hex * 2,
            thumb_sha256="b" * 64,
            thumb_content_type="image/webp",
            thumb_size_bytes=5,
        )
    )
    counts = dict(connection.execute(text("SELECT visibility, n FROM owner_photo_counts")).all())
    assert counts == {
        "public": 1,
        "private": connection.execute(
            text("SELECT count(*) FROM photos WHERE visibility = 'private'")
        ).scalar_one(),
    }


# A city's columns, as the cities table, (from locations_0003) its precomputed answers and
# (from locations_0004) its names hold them.
ZURICH = {
    "name": "Zürich",
    "country_code": "CH",
    "latitude": 47.4,
    "longitude": 8.5,
    "population": 400000,
    "rank": 1,
}


def _seed_locations_0001(connection):
    from lumen_plugins.locations import tables

    connection.execute(tables.cities.insert().values(id=1, cell=7, **ZURICH))


def _seed_locations_0002(connection):
    from lumen_plugins.locations import tables

    connection.execute(tables.typo_keys.insert().values(key="zrich", name_folded="zurich"))


def _seed_locations_0003(connection):
    from lumen_plugins.locations import tables

    # Its city's columns are copies: a downgrade keeps the row and drops only them.
    answer = tables.top_cities
    connection.execute(answer.delete().where(answer.c.prefix == "z"))
    connection.execute(
        answer.insert().values(
            scope="", prefix="z", position=0, city_id=1, matched_name="Zürich", **ZURICH
        )
    )


def _seed_locations_0004(connection):
    from lumen_plugins.locations import tables

    # Its city's columns are copies: a downgrade keeps the name and drops only them.
    name = tables.names
    connection.execute(name.delete().where(name.c.city_id == 1))
    copies = {key: value for key, value in ZURICH.items() if key != "name"}
    connection.execute(
        name.insert().values(
            name_folded="zurich",
            city_id=1,
            name="Zurich",
            is_main=False,
            city_name="Zürich",
            **copies,
        )
    )


def _row_after_upgrade(url: str, revision: str, table: str, insert: str) -> dict:
    """The one row of ``table`` after ``revision`` upgraded a database holding Zürich's city
    row and the row ``insert`` wrote at the revision before."""
    lumen = make_lumen(url, "locations")
    try:
        migrate.upgrade(lumen, f"{revision}-1")
        with lumen.engine.begin() as connection:
            _seed_locations_0001(connection)
            connection.execute(text(insert))
        migrate.upgrade(lumen, revision)
        with lumen.engine.connect() as connection:
            return dict(connection.execute(text(f"SELECT * FROM {table}")).one()._mapping)
    finally:
        lumen.engine.dispose()


def test_names_get_their_cities_columns_on_upgrade(fresh_database):
    """locations_0004 fills the copies from the cities already imported."""
    row = _row_after_upgrade(
        fresh_database[1],
        "locations_0004",
        "locations_names",
        "INSERT INTO locations_names (name_folded, city_id, name, is_main, country_code, rank) "
        "VALUES ('zuri', 1, 'Zuri', false, 'CH', 1)",
    )
    assert row == {
        "name_folded": "zuri",
        "city_id": 1,
        "name": "Zuri",
        "is_main": False,
        "country_code": "CH",
        "rank": 1,
        "city_name": "Zürich",
        "admin1_code": None,
        "latitude": 47.4,
        "longitude": 8.5,
        "population": 400000,
        "timezone": None,
    }


def test_precomputed_answers_get_their_cities_columns_on_upgrade(fresh_database):
    """locations_0003 fills the copies from the cities already imported."""
    row = _row_after_upgrade(
        fresh_database[1],
        "locations_0003",
        "locations_top_cities",
        "INSERT INTO locations_top_cities (scope, prefix, position, city_id, matched_name) "
        "VALUES ('', 'z', 0, 1, 'Zurich')",
    )
    assert row == {
        "scope": "",
        "prefix": "z",
        "position": 0,
        "city_id": 1,
        "matched_name": "Zurich",
        **ZURICH,
        "admin1_code": None,
        "timezone": None,
    }


# Each revision's data; a revision missing here fails the test, so a new migration gets one.
SEEDS = {
    "core_0001": _seed_core_0001,
    "core_0002": _seed_core_0002,
    "core_0003": _seed_core_0003,
    "core_0004": _seed_core_0004,
    "core_0005": _seed_core_0005,
    "locations_0001": _seed_locations_0001,
    "locations_0002": _seed_locations_0002,
    "locations_0003": _seed_locations_0003,
    "locations_0004": _seed_locations_0004,
}
# The downgrades that drop data no upgrade brings back: refused unless allowed. (Cities come
# back with `lumen locations import`, the maintenance flag with `lumen maintenance on`.)
LOSES_DATA = {"core_0001", "core_0002", "core_0003"}


def branches(lumen) -> dict[str, list[str]]:
    """Every branch's revisions, base first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(lumen, None))
    found = {}
    for base in script.get_bases():
        revision, chain = script.get_revision(base), []
        while revision is not None:
            chain.append(revision.revision)
            following = revision.nextrev
            revision = script.get_revision(next(iter(following))) if following else None
        found[next(iter(script.get_revision(base).branch_labels))] = chain
    return dict(sorted(found.items()))


def contents(engine) -> dict[str, dict[str, list]]:
    """Every table's rows, column by column (sorted), but Alembic's own."""
    found = {}
    inspector = inspect(engine)
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            for column in inspector.get_columns(table):
                name = column["name"]
                values = connection.execute(text(f'SELECT "{name}" FROM {table}')).scalars()
                found.setdefault(table, {})[name] = sorted(map(str, values))
    return found


def unchanged(before: dict, after: dict, columns_of: dict) -> bool:
    """Whether every column of ``columns_of`` holds in ``after`` what it held ``before``."""
    return all(
        after[table][column] == before[table][column]
        for table, columns in columns_of.items()
        for column in columns
    )


def test_every_revision_goes_up_down_and_up_again_with_data(fresh_database):
    """Each revision of the core and of each plugin: upgraded onto data, downgraded (refused
    first where data would be lost for good, and nothing changed by the refusal), upgraded
    again; the data of every table and column the revision does not own survives both steps
    (SQLite's batch table copies included), and the end is the models' schema."""
    _, url = fresh_database
    lumen = make_lumen(url, "locations")
    try:
        found = branches(lumen)
        assert set(found) == {"core", "locations"}
        assert [rev for chain in found.values() for rev in chain] == list(SEEDS)
        for branch, chain in found.items():
            for revision in chain:
                migrate.upgrade(lumen, revision)
                with lumen.engine.begin() as connection:
                    SEEDS[revision](connection)
                before = contents(lumen.engine)
                if revision in LOSES_DATA:
                    with pytest.raises(migrate.DataLossRefused, match="--allow-data-loss"):
                        migrate.downgrade(lumen, f"{branch}@-1")
                    assert revision in migrate.current(lumen)
                    assert contents(lumen.engine) == before
                migrate.downgrade(lumen, f"{branch}@-1", allow_data_loss=True)
                assert revision not in migrate.current(lumen)
                down = contents(lumen.engine)
                assert unchanged(before, down, down)
                migrate.upgrade(lumen, revision)
                assert revision in migrate.current(lumen)
                assert unchanged(before, contents(lumen.engine), down)
                with lumen.engine.begin() as connection:
                    SEEDS[revision](connection)  # what the downgrade dropped, for the next
        migrate.upgrade(lumen)
        assert schema_drift(lumen.engine, all_metadata()) == []
    finally:
        lumen.engine.dispose()


def test_lumen_db_downgrade_refuses_to_drop_data_unless_told(fresh_database, tmp_path):
    """`lumen db downgrade core_0002` over photos with public copies: the step that would
    drop them is refused with the reason and the way out, and the steps before it are undone
    too (one transaction); `--allow-data-loss` goes ahead."""
    _, url = fresh_database
    env = service_env(DATABASE_URL=url, LUMEN_PLUGINS="none", STORAGE_PATH=str(tmp_path))
    assert run_lumen("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    engine = create_engine(load_settings({"DATABASE_URL": url}).database_url)
    try:
        with engine.begin() as connection:
            _seed_core_0001(connection)
            _seed_core_0003(connection)
    finally:
        engine.dispose()

    refused = run_lumen("db", "downgrade", "core_0002", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "lumen: downgrading core_0003 would drop the photos' copies without location metadata "
        "of 1 rows, which no upgrade brings back; take a backup (`lumen backup create`), "
        "then pass --allow-data-loss"
    )
    assert run_lumen("db", "current", env=env, cwd=tmp_path).stdout.strip() == "core_0005"

    allowed = run_lumen("db", "downgrade", "core_0002", "--allow-data-loss", env=env, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "database at: core_0002"
