"""The one SQLAlchemy engine of a process, reads outside a transaction, and the figures of its
pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from lumen.config import Settings


def make_engine(settings: Settings) -> Engine:
    """A pooled engine built from the settings.

    PostgreSQL and file SQLite get a QueuePool sized by DB_POOL_*, with pre-ping (a dead
    connection is replaced, not handed out) and recycling. In-memory SQLite gets a StaticPool,
    since each new connection would otherwise see an empty database. DB_POOL_CLASS=null gives
    a NullPool, for deployments where PgBouncer pools instead.
    """
    url = settings.database_url
    # libpq waits for ever by default; its own timeout is whole seconds, at least 2.
    connect = {} if url.startswith("sqlite") else {"connect_timeout": settings.db_connect_timeout}
    if url.startswith("sqlite") and (":memory:" in url or url in ("sqlite://", "sqlite:///")):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif settings.db_pool_class == "null":
        engine = create_engine(url, poolclass=NullPool, connect_args=connect)
    else:
        options: dict[str, Any] = {"connect_args": connect}
        if url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_recycle=settings.db_pool_recycle,
            pool_pre_ping=True,
            **options,
        )
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers in other gunicorn workers go on while one writes; foreign keys are off
    # by default in SQLite; busy_timeout makes a writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements each run on their own, outside a transaction: no BEGIN
    and no COMMIT or ROLLBACK round trip, for reads that need no snapshot across statements.

    On psycopg2 the driver's own ``autocommit`` switch is flipped for the checkout, as
    SQLAlchemy's pre-ping does. SQLAlchemy's ``isolation_level="AUTOCOMMIT"`` goes through
    psycopg2's ``set_isolation_level``, which sends ``SET default_transaction_isolation`` to
    the server on the way in and again when the pool resets the connection: two round trips a
    checkout, as many as the transaction it saves. Elsewhere (SQLite) that option costs nothing.
    """
    with engine.connect() as connection:
        if engine.dialect.driver != "psycopg2":
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
            return
        driver = connection.connection.dbapi_connection
        driver.autocommit = True
        try:
            yield connection
        finally:
            # Back as the pool hands it out, unless a failure closed it (the pool replaces it).
            if not driver.closed:
                driver.autocommit = False


def pool_figures(engine: Engine) -> dict[str, int]:
    """Size, checked-out and overflow connections of the engine's pool (zeros where the pool
    kind keeps no such figures)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return {"size": 1, "checked_out": 0, "overflow": 0, "checked_in": 0}
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "overflow": max(pool.overflow(), 0),
        "checked_in": pool.checkedin(),
    }
