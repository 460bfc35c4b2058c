"""Schema migrations: the core's Alembic branch plus one branch per enabled plugin that owns
tables, all brought to their heads together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

HERE = os.path.dirname(__file__)


def alembic_config(lumen, connection) -> Config:
    config = Config()
    config.set_main_option("script_location", os.path.join(HERE, "migrations"))
    locations = [path for path in lumen.hook.lumen_migrations(lumen=lumen) if path]
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _transaction(lumen) -> Iterator[Connection]:
    """One transaction around every step, DDL included. SQLite's driver would run each DDL
    statement outside any transaction (committed at once): it is told to leave transaction
    control to us, and the transaction is begun explicitly."""
    with lumen.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        driver = connection.connection.driver_connection
        previous, driver.isolation_level = driver.isolation_level, None
        try:
            with connection.begin():
                connection.exec_driver_sql("BEGIN")
                yield connection
        finally:
            driver.isolation_level = previous


def upgrade(lumen, revision: str = "heads") -> None:
    with _transaction(lumen) as connection:
        command.upgrade(alembic_config(lumen, connection), revision)


class DataLossRefused(Exception):
    """A downgrade step would drop data no upgrade can bring back; ``str()`` says which."""


def downgrade(lumen, revision: str, allow_data_loss: bool = False) -> None:
    """Step the schema back to ``revision``. Every step runs in one transaction: a step that
    refuses (see :func:`refuse_data_loss`) leaves the schema where it was."""
    with _transaction(lumen) as connection:
        config = alembic_config(lumen, connection)
        config.attributes["allow_data_loss"] = allow_data_loss
        command.downgrade(config, revision)


def refuse_data_loss(what: str, rows_sql: str) -> None:
    """For a migration's ``downgrade()``: refuse to go on when ``rows_sql`` (a count) finds
    rows holding data the step would drop for good, unless the operator allowed it."""
    from alembic import op

    context = op.get_context()
    if context.config is not None and context.config.attributes.get("allow_data_loss"):
        return
    rows = op.get_bind().execute(text(rows_sql)).scalar_one()
    if rows:
        revision = context.get_current_revision() or "?"
        raise DataLossRefused(
            f"downgrading {revision} would drop {what} of {rows} rows, which no upgrade brings "
            "back; take a backup (`lumen backup create`), then pass --allow-data-loss"
        )


def current(lumen) -> set[str]:
    with lumen.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def is_fresh(lumen) -> bool:
    """True for a database that has never been migrated."""
    return "alembic_version" not in inspect(lumen.engine).get_table_names()
