"""lumen.reading(): statements that each run on their own, outside a transaction, on a pooled
connection that goes back to the pool as it was lent (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from lumen import db
from lumen.config import load_settings
from tests.conftest import POOL_ENV
from tests.faults import TcpProxy


@pytest.fixture
def probe_table(backend):
    """A table of this test's own, dropped afterwards."""
    engine = backend[2]
    name = f"reading_probe_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {name} (n INTEGER)"))
    yield name
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {name}"))


def _count(engine, table: str) -> int:
    with engine.connect() as other:
        return other.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_each_statement_stands_on_its_own_at_once(backend, probe_table):
    engine = backend[2]
    with db.reading(engine) as connection:
        connection.execute(text(f"INSERT INTO {probe_table} VALUES (1)"))
        # Another connection sees it before the block ends: no transaction held it back.
        assert _count(engine, probe_table) == 1
        with pytest.raises(DBAPIError):
            connection.execute(text("SELECT * FROM no_such_table"))
        # A failed statement undoes nothing before it, and the connection goes on.
        assert connection.execute(text(f"SELECT count(*) FROM {probe_table}")).scalar_one() == 1


def test_the_connection_goes_back_to_the_pool_transactional(backend, probe_table):
    engine = backend[2]
    for _ in range(3):  # the pool lends the same connection again
        with db.reading(engine) as connection:
            connection.execute(text("SELECT 1"))
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(text(f"INSERT INTO {probe_table} VALUES (2)"))
        assert _count(engine, probe_table) == 0  # not committed yet
        raise RuntimeError("rolls the insert back")
    assert _count(engine, probe_table) == 0


def test_on_postgresql_nothing_but_the_ping_and_the_statements_is_sent(backend):
    if backend[0] != "postgresql":
        pytest.skip("SQLite has no round trips")
    url = make_url(backend[1])
    proxy = TcpProxy((url.host, url.port or 5432), record=True)
    try:
        through = url.set(port=proxy.port).render_as_string(hide_password=False)
        engine = db.make_engine(load_settings({"DATABASE_URL": through, **POOL_ENV}))
        with engine.connect() as connection:  # connected, and the dialect's first queries done
            connection.execute(text("SELECT 1"))
        del proxy.sent[:]
        for number in range(2):
            with db.reading(engine) as connection:
                connection.execute(text(f"SELECT {number} AS first"))
                connection.execute(text(f"SELECT {number} AS second"))
        engine.dispose()
    finally:
        proxy.close()
    # Simple-query messages: "Q", a length, the statement, a zero byte. No BEGIN, COMMIT,
    # ROLLBACK or SET: only the pool's pre-ping (none on a NullPool) and the statements.
    statements = [m.decode() for m in re.findall(rb"Q....([^\x00]*)\x00", bytes(proxy.sent))]
    ping = ["SELECT 1"] if engine.pool._pre_ping else []
    assert statements == [
        *ping,
        "SELECT 0 AS first",
        "SELECT 0 AS second",
        *ping,
        "SELECT 1 AS first",
        "SELECT 1 AS second",
    ]


def test_lumen_reading_is_the_apps_engine(app):
    with app.lumen.reading() as connection:
        assert connection.engine is app.lumen.engine
        assert connection.execute(text("SELECT 41 + 1")).scalar_one() == 42
