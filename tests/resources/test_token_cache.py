"""Each worker's cache of verified tokens (lumen.token_cache), on real Redis: a signed-in request
costs no token query once the token is cached; a revocation, an expiry, a fence or a Redis that
does not answer all send the next request to the database; a revocation Redis does not confirm
is refused."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import falcon.testing
import pytest
from sqlalchemy import update

from lumen.models import Token, utcnow
from tests.conftest import Api, free_port
from tests.resources.test_tokens import statements, token_updates

pytestmark = pytest.mark.integration


def token_reads(engine):
    """The SELECTs that read tokens, run meanwhile."""
    return statements(
        engine, lambda sql: sql.lstrip().upper().startswith("SELECT") and "FROM tokens" in sql
    )


@pytest.fixture
def cached(make_app, redis_url, redis_client):  # redis_client: removes the keys after
    app = make_app(REDIS_URL=redis_url)
    client = falcon.testing.TestClient(app)
    return app, client, Api(client)


def test_a_cached_token_costs_no_query_and_a_revoked_one_is_refused_at_once(cached):
    app, client, api = cached
    user = api.user()
    me = f"/api/v1/users/{user['id']}/photos"
    with token_updates(app.lumen.engine) as writes:
        assert client.simulate_get(me, headers=user["headers"]).status_code == 200
        with token_reads(app.lumen.engine) as reads:
            for _ in range(3):
                assert client.simulate_get(me, headers=user["headers"]).status_code == 200
    assert reads == []
    assert len(writes) == 1  # the cached copy knows it was used: not written again
    assert client.simulate_delete("/api/v1/tokens/current", headers=user["headers"]).status == (
        "204 No Content"
    )
    refused = client.simulate_get(me, headers=user["headers"])
    assert refused.status_code == 401
    assert "revoked" in refused.json["description"]


def test_logging_out_everywhere_refuses_every_cached_token(cached):
    app, client, api = cached
    user = api.user()
    second = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": "correct horse"}
    ).json["token"]
    both = [user["headers"], {"Authorization": f"Bearer {second}"}]
    for headers in both:
        assert client.simulate_get("/api/v1/tokens", headers=headers).status_code == 200
    assert client.simulate_delete("/api/v1/tokens", headers=both[1]).status_code == 204
    for headers in both:
        assert client.simulate_get("/api/v1/tokens", headers=headers).status_code == 401


def test_a_cached_token_expires_on_time(cached):
    app, client, api = cached
    user = api.user()
    me = f"/api/v1/users/{user['id']}"
    assert client.simulate_get(me, headers=user["headers"]).status_code == 200
    ((key, _),) = app.lumen.state["core.tokens"]._entries.items()
    past = utcnow() - timedelta(seconds=1)
    app.lumen.state["core.tokens"].update(
        key, lambda entry: (dataclasses.replace(entry[0], expires_at=past), *entry[1:])
    )
    assert client.simulate_get(me, headers=user["headers"]).status_code == 401


def test_while_fenced_or_missing_every_request_reads_the_database(cached, redis_client):
    app, client, api = cached
    user = api.user()
    key = app.lumen.settings.token_cache_key
    me = f"/api/v1/users/{user['id']}"
    assert client.simulate_get(me, headers=user["headers"]).status_code == 200
    for value in (b"fence:abc", None):
        if value is None:
            redis_client.delete(key)
        else:
            redis_client.set(key, value)
        with token_reads(app.lumen.engine) as reads:
            assert client.simulate_get(me, headers=user["headers"]).status_code == 200
        assert len(reads) == 1, value
    # A token revoked behind Lumen's back (SQL by hand) is refused once the key changes.
    with app.lumen.engine.begin() as connection:
        connection.execute(update(Token).values(expires_at=utcnow()))
    redis_client.set(key, b"renewed")
    assert client.simulate_get(me, headers=user["headers"]).status_code == 401


def test_without_redis_answering_tokens_are_read_and_revocation_is_refused(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = falcon.testing.TestClient(app)
    user = Api(client).user()
    me = f"/api/v1/users/{user['id']}"
    for _ in range(2):
        with token_reads(app.lumen.engine) as reads:
            assert client.simulate_get(me, headers=user["headers"]).status_code == 200
        assert len(reads) == 1
    refused = client.simulate_delete("/api/v1/tokens/current", headers=user["headers"])
    # Not made: a worker that reaches Redis could go on using its cached copy.
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert client.simulate_get(me, headers=user["headers"]).status_code == 200
