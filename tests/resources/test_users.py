"""Users and tokens: every row of API.md's users and tokens table."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from lumen.models import Token, User, utcnow


def count(app, model):
    with app.lumen.Session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_register_returns_the_user(client):
    result = client.simulate_post(
        "/api/v1/users", json={"username": "ada", "password": "analytical", "display_name": "Ada"}
    )
    assert result.status_code == 201
    body = result.json
    assert body["username"] == "ada"
    assert body["display_name"] == "Ada"
    assert body["photo_count"] == 0
    assert body["created_at"].endswith("+00:00")
    assert "password" not in body and "password_hash" not in body
    assert result.headers["location"] == f"/api/v1/users/{body['id']}"


def test_taken_username_is_409(client, app, api):
    api.user("grace")
    result = client.simulate_post("/api/v1/users", json={"username": "grace", "password": "x" * 8})
    assert result.status_code == 409
    assert result.json["description"].startswith("username:")
    assert count(app, User) == 1


@pytest.mark.security
@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "ab", "password": "longenough"}, "username"),
        ({"username": "a" * 33, "password": "longenough"}, "username"),
        ({"username": "Upper", "password": "longenough"}, "username"),
        ({"username": "bad name", "password": "longenough"}, "username"),
        ({"username": "ok_name\n", "password": "longenough"}, "username"),
        ({"username": "okname", "password": "short"}, "password"),
        ({"username": "okname"}, "password"),
        (
            {"username": "okname", "password": "longenough", "display_name": "x" * 101},
            "display_name",
        ),
        ({"username": "okname", "password": "longenough", "admin": True}, "admin"),
    ],
)
def test_bad_registration_is_400_naming_the_field(client, app, body, field):
    result = client.simulate_post("/api/v1/users", json=body)
    assert result.status_code == 400
    assert result.json["description"].startswith(f"{field}:")
    assert count(app, User) == 0


def test_closed_registration_is_403(make_app):
    import falcon.testing

    app = make_app(LUMEN_OPEN_REGISTRATION="false")
    client = falcon.testing.TestClient(app)
    result = client.simulate_post("/api/v1/users", json={"username": "ada", "password": "x" * 8})
    assert result.status_code == 403
    assert count(app, User) == 0


def test_non_json_and_huge_bodies(client, app):
    assert client.simulate_post("/api/v1/users", body="username=ada").status_code == 415
    bad = client.simulate_post(
        "/api/v1/users", body="{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json["description"].startswith("body:")
    huge = client.simulate_post(
        "/api/v1/users",
        json={"username": "ada", "password": "x" * 8, "display_name": "y" * (1024 * 1024)},
    )
    assert huge.status_code == 413
    assert count(app, User) == 0


def test_token_login_and_bad_credentials(client, app, api):
    user = api.user("alan", password="enigma-machine")
    good = client.simulate_post(
        "/api/v1/tokens", json={"username": "alan", "password": "enigma-machine"}
    )
    assert good.status_code == 201
    assert good.json["user_id"] == user["id"]
    assert good.json["expires_at"].endswith("+00:00")  # RFC 3339, UTC
    for username, password in [("alan", "wrong-password"), ("nobody", "enigma-machine")]:
        bad = client.simulate_post(
            "/api/v1/tokens", json={"username": username, "password": password}
        )
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == "Bearer"
    # The token is stored only as a hash.
    with app.lumen.Session() as session:
        hashes = session.scalars(select(Token.token_hash)).all()
    assert good.json["token"] not in hashes and len(hashes) == 2


def test_revoked_token_stops_working_at_once(client, api):
    user = api.user()
    me = f"/api/v1/users/{user['id']}"
    assert (
        client.simulate_patch(me, json={"display_name": "x"}, headers=user["headers"]).status_code
        == 200
    )
    assert (
        client.simulate_delete("/api/v1/tokens/current", headers=user["headers"]).status_code == 204
    )
    again = client.simulate_patch(me, json={"display_name": "y"}, headers=user["headers"])
    assert again.status_code == 401
    assert client.simulate_delete("/api/v1/tokens/current").status_code == 401


@pytest.mark.security
def test_expired_token_is_401(client, app, api):
    from datetime import timedelta

    from lumen.models import utcnow

    user = api.user()
    with app.lumen.Session() as session:
        for token in session.scalars(select(Token)):
            token.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    result = client.simulate_get(f"/api/v1/users/{user['id']}", headers=user["headers"])
    assert result.status_code == 401
    assert "expired" in result.json["description"]


@pytest.mark.security
@pytest.mark.parametrize(
    "header", ["Bearer", "Basic dXNlcjpwYXNz", "Bearer short", "bearer " + "a" * 43, "Bearer a b"]
)
def test_malformed_authorization_is_401(client, header):
    result = client.simulate_get("/api/v1/photos", headers={"Authorization": header})
    assert result.status_code == 401
    assert result.json["description"].startswith("Authorization:")


def test_profile_read_and_update(client, api):
    ada, bob = api.user(display_name="Ada"), api.user()
    url = f"/api/v1/users/{ada['id']}"
    assert client.simulate_get(url).json["display_name"] == "Ada"
    updated = client.simulate_patch(url, json={"display_name": "Countess"}, headers=ada["headers"])
    assert updated.status_code == 200 and updated.json["display_name"] == "Countess"
    assert client.simulate_get(url).json["display_name"] == "Countess"
    other = client.simulate_patch(url, json={"display_name": "Hacked"}, headers=bob["headers"])
    assert other.status_code == 403
    anonymous = client.simulate_patch(url, json={"display_name": "Hacked"})
    assert anonymous.status_code == 401
    too_long = client.simulate_patch(url, json={"display_name": "z" * 101}, headers=ada["headers"])
    assert too_long.status_code == 400 and too_long.json["description"].startswith("display_name:")
    assert client.simulate_get(url).json["display_name"] == "Countess"


def test_unknown_user_is_404(client):
    assert client.simulate_get("/api/v1/users/not-a-uuid").status_code == 404
    missing = client.simulate_get("/api/v1/users/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json["title"]


def test_photo_count_counts_what_the_caller_may_see(client, api):
    ada, bob = api.user(), api.user()
    api.upload(ada)
    api.upload(ada, visibility="private")
    url = f"/api/v1/users/{ada['id']}"
    assert client.simulate_get(url).json["photo_count"] == 1
    assert client.simulate_get(url, headers=bob["headers"]).json["photo_count"] == 1
    assert client.simulate_get(url, headers=ada["headers"]).json["photo_count"] == 2


def issued(client, api, ttl_hours: float) -> tuple[dict, datetime]:
    """A token and when it must expire: ``ttl_hours`` after the request, give or take it."""
    user = api.user()
    before = datetime.now(UTC)
    answer = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": "correct horse"}
    )
    after = datetime.now(UTC)
    assert answer.status_code == 201
    expires_at = datetime.fromisoformat(answer.json["expires_at"])
    assert expires_at.utcoffset() == timedelta(0)
    ttl = timedelta(hours=ttl_hours)
    assert before + ttl - timedelta(seconds=1) <= expires_at <= after + ttl + timedelta(seconds=1)
    return answer.json, expires_at


@pytest.mark.security
def test_token_ttl_hours_sets_when_a_token_expires(make_app):
    import falcon.testing

    from tests.conftest import Api

    app = make_app(TOKEN_TTL_HOURS="2")
    client = falcon.testing.TestClient(app)
    token, expires_at = issued(client, Api(client), 2)
    headers = {"Authorization": f"Bearer {token['token']}"}
    me = f"/api/v1/users/{token['user_id']}"
    assert client.simulate_get(me, headers=headers).status_code == 200
    # At its expiry instant the token stops working (expiry is inclusive).
    with app.lumen.Session() as session:
        row = session.scalar(
            select(Token)
            .where(Token.user_id == uuid.UUID(token["user_id"]))
            .order_by(Token.created_at.desc())
        )
        assert abs(row.expires_at - expires_at) < timedelta(seconds=1)
        row.expires_at = utcnow()
        session.commit()
    refused = client.simulate_get(me, headers=headers)
    assert refused.status_code == 401
    assert refused.json["description"] == (
        "Authorization: the token is invalid, expired or revoked"
    )


def test_tokens_last_thirty_days_by_default(client, api):
    issued(client, api, 720)


@pytest.mark.security
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "abc"])
def test_a_bad_token_ttl_hours_is_refused_naming_it(value):
    from lumen.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as raised:
        load_settings({"TOKEN_TTL_HOURS": value})
    assert str(raised.value).startswith(f"invalid setting TOKEN_TTL_HOURS={value!r}: ")


@pytest.mark.security
@pytest.mark.parametrize(
    "body, status",
    [
        ({"username": "abc", "password": "x" * 8}, 201),
        ({"username": "a" * 32, "password": "x" * 8}, 201),
        ({"username": "ab", "password": "x" * 8}, 400),
        ({"username": "a" * 33, "password": "x" * 8}, 400),
        ({"username": "seven", "password": "x" * 7}, 400),
        ({"username": "long", "password": "x" * 1024}, 201),
        ({"username": "longer", "password": "x" * 1025}, 400),
        ({"username": "named", "password": "x" * 8, "display_name": "d" * 100}, 201),
        ({"username": "named2", "password": "x" * 8, "display_name": "d" * 101}, 400),
    ],
)
def test_registration_fields_exactly_at_and_one_past_their_limits(client, app, body, status):
    answer = client.simulate_post("/api/v1/users", json=body)
    assert answer.status_code == status, answer.text
    assert count(app, User) == (1 if status == 201 else 0)
    if status == 400:
        field = "display_name" if "display_name" in body else None
        field = field or ("password" if len(body["password"]) not in range(8, 1025) else "username")
        assert answer.json["description"].startswith(f"{field}: ")


@pytest.mark.parametrize("extra, status", [(0, 200), (1, 413)])
def test_a_json_body_of_exactly_one_mebibyte_and_one_byte_more(client, api, extra, status):
    import json

    user = api.user()
    url = f"/api/v1/users/{user['id']}"
    body = json.dumps({"display_name": "Ada"})
    body = body[:-1] + " " * (1024 * 1024 - len(body) + extra) + "}"  # white space pads it
    assert len(body) == 1024 * 1024 + extra
    headers = {**user["headers"], "Content-Type": "application/json"}
    answer = client.simulate_patch(url, body=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert client.simulate_get(url).json["display_name"] == ("Ada" if status == 200 else None)
