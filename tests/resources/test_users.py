"""Users and tokens: every row of API.md's users and tokens table."""

import pytest
from sqlalchemy import func, select

from lumen.models import Token, User


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
    assert good.json["expires_at"]
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
