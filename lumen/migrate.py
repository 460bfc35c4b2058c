"""Schema migrations: the core's Alembic branch plus one branch per enabled plugin that owns
tables, all brought to their heads together."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

HERE = os.path.dirname(__file__)


def alembic_config(lumen, connection) -> Config:
    config = Config()
    config.set_main_option("script_location", os.path.join(HERE, "migrations"))
    locations = [path for path in lumen.hook.lumen_migrations(lumen=lumen) if path]
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes["connection"] = connection
    return config


def upgrade(lumen, revision: str = "heads") -> None:
    with lumen.engine.begin() as connection:
        command.upgrade(alembic_config(lumen, connection), revision)


def downgrade(lumen, revision: str) -> None:
    with lumen.engine.begin() as connection:
        command.downgrade(alembic_config(lumen, connection), revision)


def current(lumen) -> set[str]:
    with lumen.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def is_fresh(lumen) -> bool:
    """True for a database that has never been migrated."""
    return "alembic_version" not in inspect(lumen.engine).get_table_names()
