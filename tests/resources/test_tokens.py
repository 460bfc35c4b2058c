"""Sessions: the caller's tokens listed and revoked all at once, last use recorded at most once a
minute, expired tokens purged in bounded batches."""

import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from lumen.auth import PURGE_BATCH, hash_token
from lumen.models import Token, utcnow


def log_in(client, user) -> dict:
    answer = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": "correct horse"}
    )
    assert answer.status_code == 201
    return {"Authorization": f"Bearer {answer.json['token']}", "secret": answer.json["token"]}


def auth(headers: dict) -> dict:
    return {"Authorization": headers["Authorization"]}


def tokens_of(app, user_id) -> list[Token]:
    with app.lumen.Session() as session:
        return session.scalars(
            select(Token).where(Token.user_id == uuid.UUID(user_id)).order_by(Token.created_at)
        ).all()


def token_updates(engine):
    """The UPDATE statements on tokens run meanwhile."""
    return statements(engine, lambda sql: sql.lstrip().upper().startswith("UPDATE TOKENS"))


@contextmanager
def statements(engine, wanted):
    """The SQL statements run meanwhile for which ``wanted(statement)`` is true."""
    seen = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if wanted(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_the_caller_lists_their_sessions_never_a_secret(client, app, api):
    user, other = api.user(), api.user()
    second, third = log_in(client, user), log_in(client, user)
    with app.lumen.Session() as session:  # an expired token is no session any more
        session.add(
            Token(
                user_id=uuid.UUID(user["id"]),
                token_hash=hash_token("expired-" + uuid.uuid4().hex),
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        session.commit()
    answer = client.simulate_get("/api/v1/tokens", headers=auth(second))
    assert answer.status_code == 200
    assert answer.headers["x-total-count"] == "3"
    rows = {str(t.id): t for t in tokens_of(app, user["id"])}
    listed = answer.json
    assert [s["id"] for s in listed] == sorted(
        (i for i in rows if rows[i].expires_at > utcnow()),
        key=lambda i: rows[i].created_at,
        reverse=True,
    )
    assert [s["current"] for s in listed] == [False, True, False]
    assert listed[1]["last_used_at"] is not None  # this request uses it
    assert listed[0]["last_used_at"] is None  # never used yet
    assert all(s["expires_at"].endswith("+00:00") for s in listed)
    for secret in (user["token"], second["secret"], third["secret"]):
        assert secret not in answer.text and hash_token(secret) not in answer.text
    assert other["id"] not in answer.text
    paged = client.simulate_get("/api/v1/tokens", params={"limit": 1}, headers=auth(second))
    assert [s["id"] for s in paged.json] == [listed[0]["id"]] and 'rel="next"' in paged.headers[
        "link"
    ]
    assert client.simulate_get("/api/v1/tokens").status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(client, app, api):
    user = api.user()
    me = f"/api/v1/users/{user['id']}"
    with token_updates(app.lumen.engine) as updates:
        for _ in range(5):
            assert client.simulate_get(me, headers=user["headers"]).status_code == 200
    assert len(updates) == 1
    (token,) = tokens_of(app, user["id"])
    first_use = token.last_used_at
    assert utcnow() - first_use < timedelta(minutes=1)

    # A minute later the next request writes it again, once.
    with app.lumen.Session() as session:
        session.get(Token, token.id).last_used_at = first_use - timedelta(seconds=61)
        session.commit()
    with token_updates(app.lumen.engine) as updates:
        for _ in range(3):
            client.simulate_get(me, headers=user["headers"])
    assert len(updates) == 1
    assert tokens_of(app, user["id"])[0].last_used_at >= first_use

    # A request that fails records nothing.
    with app.lumen.Session() as session:
        session.get(Token, token.id).last_used_at = None
        session.commit()
    missing = "/api/v1/photos/00000000-0000-0000-0000-000000000001"
    assert client.simulate_get(missing, headers=user["headers"]).status_code == 404
    assert tokens_of(app, user["id"])[0].last_used_at is None


@pytest.mark.security
def test_deleting_all_tokens_logs_the_caller_out_everywhere(client, app, api):
    user, other = api.user(), api.user()
    sessions = [user["headers"], log_in(client, user), log_in(client, user)]
    me = f"/api/v1/users/{user['id']}"
    assert client.simulate_delete("/api/v1/tokens").status_code == 401
    assert client.simulate_delete("/api/v1/tokens", headers=auth(sessions[1])).status_code == 204
    for headers in sessions:
        refused = client.simulate_get(me, headers=auth(headers))
        assert refused.status_code == 401
    assert tokens_of(app, user["id"]) == []
    assert client.simulate_get(me, headers=other["headers"]).status_code == 200
    # A new login works as before.
    assert client.simulate_get(me, headers=auth(log_in(client, user))).status_code == 200


@pytest.mark.security
def test_issuing_a_token_purges_expired_tokens_in_bounded_batches(client, app, api):
    user, other = api.user(), api.user()
    now = utcnow()
    expired = PURGE_BATCH + 50
    with app.lumen.Session() as session:
        session.add_all(
            Token(
                user_id=uuid.UUID((user, other)[n % 2]["id"]),
                token_hash=hash_token(f"old-{n}-{uuid.uuid4().hex}"),
                created_at=now - timedelta(days=60),
                expires_at=now - timedelta(days=30, minutes=n),
            )
            for n in range(expired)
        )
        session.commit()

    def count_expired():
        with app.lumen.Session() as session:
            return session.scalar(
                select(func.count()).select_from(Token).where(Token.expires_at <= utcnow())
            )

    assert count_expired() == expired
    log_in(client, user)
    assert count_expired() == 50  # one batch, the oldest first
    with app.lumen.Session() as session:
        oldest_left = session.scalar(select(func.min(Token.expires_at)))
    assert oldest_left > now - timedelta(days=30, minutes=expired - PURGE_BATCH)
    log_in(client, other)
    assert count_expired() == 0
    # Tokens that still work are never purged.
    assert len(tokens_of(app, user["id"])) == 2 and len(tokens_of(app, other["id"])) == 2
    assert client.simulate_get("/api/v1/tokens", headers=user["headers"]).status_code == 200
