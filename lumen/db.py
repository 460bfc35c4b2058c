"""The one SQLAlchemy engine of a process, and the figures of its pool."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
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
