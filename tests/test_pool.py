"""The database pool settings, each on an app with an engine of its own built from them
(DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT, DB_POOL_RECYCLE, DB_POOL_CLASS), on SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
import time

import falcon.testing
import pytest
from sqlalchemy import event
from sqlalchemy.pool import NullPool, QueuePool

from lumen.app import create_app
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager


@pytest.fixture
def own_app(environ, clean_db):
    """Build an app whose engine (and pool) comes from its own settings, not the session's;
    counts the DBAPI connections it opens and closes."""
    built = []

    def build(**overrides):
        settings = load_settings({**environ, **overrides})
        app = create_app(settings, make_plugin_manager(settings.enabled_plugins))
        app.opened, app.closed = [], []
        event.listen(app.lumen.engine, "connect", lambda conn, rec: app.opened.append(conn))
        event.listen(app.lumen.engine, "close", lambda conn, rec: app.closed.append(conn))
        built.append(app)
        return app, falcon.testing.TestClient(app)

    yield build
    for app in built:
        app.lumen.shutdown()


def test_an_exhausted_pool_is_503_with_retry_after_once_db_pool_timeout_passes(own_app, caplog):
    app, client = own_app(DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0", DB_POOL_TIMEOUT="0.2")
    assert client.simulate_get("/api/v1/photos").status_code == 200
    held = app.lumen.engine.connect()  # the only connection the pool may hand out
    try:
        with caplog.at_level(logging.WARNING, logger="lumen.errors"):
            answer = client.simulate_get("/api/v1/photos")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert answer.json == {
            "title": "Database unavailable",
            "description": "The database cannot be reached; try again shortly.",
        }
        lines = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
        assert [(r.getMessage(), r.error) for r in lines] == [
            (
                "database unavailable: no pooled connection came free within DB_POOL_TIMEOUT",
                "TimeoutError",
            )
        ]
    finally:
        held.close()
    assert client.simulate_get("/api/v1/photos").status_code == 200  # the pool recovers


def test_max_overflow_lends_connections_beyond_the_pool_size(own_app):
    app, client = own_app(DB_POOL_SIZE="1", DB_MAX_OVERFLOW="1", DB_POOL_TIMEOUT="0.2")
    held = app.lumen.engine.connect()
    try:
        assert client.simulate_get("/api/v1/photos").status_code == 200  # the overflow one
        second = app.lumen.engine.connect()
        try:
            assert client.simulate_get("/api/v1/photos").status_code == 503
        finally:
            second.close()
    finally:
        held.close()


def test_db_pool_class_null_opens_and_closes_a_connection_per_request(own_app):
    app, client = own_app(DB_POOL_CLASS="null")
    assert isinstance(app.lumen.engine.pool, NullPool)
    for _ in range(3):
        assert client.simulate_get("/api/v1/photos").status_code == 200
    assert len(app.opened) == len(app.closed) == 3


def test_the_default_pool_reuses_one_connection(own_app):
    app, client = own_app(DB_POOL_SIZE="1")
    assert isinstance(app.lumen.engine.pool, QueuePool)
    for _ in range(10):
        assert client.simulate_get("/api/v1/photos").status_code == 200
    assert (len(app.opened), len(app.closed)) == (1, 0)


def test_db_pool_recycle_replaces_a_connection_older_than_it(own_app):
    app, client = own_app(DB_POOL_SIZE="1", DB_POOL_RECYCLE="1")
    assert client.simulate_get("/api/v1/photos").status_code == 200
    first = app.opened[0]
    deadline = time.monotonic() + 30
    while len(app.opened) < 2:  # the connection turns one second old while requests go on
        assert time.monotonic() < deadline, "the connection was never recycled"
        assert client.simulate_get("/api/v1/photos").status_code == 200
        time.sleep(0.05)
    assert app.closed == [first]  # the old one is closed, not leaked
