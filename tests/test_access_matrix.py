"""Access control over every route the app serves (generated from its route table, so a new
route joins by itself), for five callers: anonymous, the owner, another user, an expired token and
a revoked token. Nobody but the owner reads anything of a private photo (its id, caption or
hashes) through any route, list, count or image; nobody changes or deletes what is not theirs;
a bad token is a 401 wherever tokens are read."""

from __future__ import annotations

import re
from datetime import timedelta

import falcon.testing
import pytest
from sqlalchemy import update

from lumen.auth import hash_token
from lumen.models import Token, utcnow
from tests.conftest import Api

pytestmark = pytest.mark.security

PLUGINS = "cors,locations,health,metrics,security_headers,compression,conditional,docs"
METHODS = ("GET", "PATCH", "DELETE", "POST")
SECRET_CAPTION = "the private caption nobody else may read"


class World:
    def __init__(self, app):
        self.app = app
        self.client = falcon.testing.TestClient(app)
        api = Api(self.client)
        self.owner, self.other = api.user(), api.user()
        self.public = api.upload(self.owner, caption="public")
        self.private = api.upload(self.owner, caption=SECRET_CAPTION, visibility="private")
        expired, revoked = api.user(), api.user()
        with app.lumen.engine.begin() as connection:
            connection.execute(
                update(Token)
                .where(Token.token_hash == hash_token(expired["token"]))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        assert (
            self.client.simulate_delete(
                "/api/v1/tokens/current", headers=revoked["headers"]
            ).status_code
            == 204
        )
        self.callers = {
            "anonymous": {},
            "owner": self.owner["headers"],
            "other": self.other["headers"],
            "expired": expired["headers"],
            "revoked": revoked["headers"],
        }

    def secrets(self) -> list[str]:
        photo = self.private
        return [photo["id"], SECRET_CAPTION, photo["sha256"], photo["urls"]["thumbnail"]]

    def path(self, template: str) -> str:
        values = {
            "photo_id": self.private["id"],
            "user_id": self.owner["id"],
            "location_id": "2950159",
            "name": "swagger-ui.css",
        }
        return re.sub(r"{(\w+)(?::[^}]*)?}", lambda m: values[m[1]], template)


@pytest.fixture
def world(make_app):
    app = make_app(LUMEN_PLUGINS=PLUGINS, METRICS_ENABLED="true", LOCATIONS_AUTO_IMPORT="false")
    return World(app)


def _routes(app):
    for template, (_, resource) in sorted(app.lumen.routes.items()):
        for method in METHODS:
            if hasattr(resource, f"on_{method.lower()}"):
                yield template, method, resource


def _call(world: World, method: str, path: str, headers: dict):
    body = {"caption": "changed by someone"} if method == "PATCH" else None
    if method == "PATCH" and "/users/" in path:
        body = {"display_name": "changed by someone"}
    return world.client.simulate_request(
        method, path, headers={**headers, "Accept-Encoding": "identity"}, json=body
    )


def test_nobody_but_the_owner_reads_a_private_photo_through_any_route(world):
    checked = 0
    for template, method, _ in _routes(world.app):
        if method != "GET":
            continue
        path = world.path(template)
        for caller in ("anonymous", "other"):
            answer = _call(world, "GET", path, world.callers[caller])
            for secret in world.secrets():
                assert secret not in answer.text, (caller, path)
            if "X-Total-Count" in answer.headers and "/users/" in path:
                assert answer.headers["X-Total-Count"] == "1", (caller, path)
            checked += 1
    assert checked >= 20
    print(f"\nFIGURES access matrix reads: requests={checked} leaks=0")
    profile = _call(world, "GET", world.path("/api/v1/users/{user_id}"), world.callers["other"])
    assert profile.json["photo_count"] == 1
    mine = _call(world, "GET", world.path("/api/v1/photos/{photo_id}"), world.callers["owner"])
    assert mine.status_code == 200 and mine.json["caption"] == SECRET_CAPTION


def test_a_bad_token_is_refused_wherever_tokens_are_read(world):
    sent = 0
    for template, method, resource in _routes(world.app):
        if not getattr(resource, "authenticate", True):
            continue
        path = world.path(template)
        for caller in ("expired", "revoked"):
            answer = _call(world, method, path, world.callers[caller])
            assert answer.status_code == 401, (caller, method, path)
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            sent += 1
    print(f"\nFIGURES access matrix bad tokens: requests={sent} accepted=0")


def test_nobody_changes_or_deletes_what_is_not_theirs(world):
    writes = [(t, m) for t, m, _ in _routes(world.app) if m in ("PATCH", "DELETE")]
    assert {t for t, _ in writes} >= {"/api/v1/photos/{photo_id}", "/api/v1/users/{user_id}"}
    sent = 0
    for template, method in writes:
        if template.startswith("/api/v1/tokens"):
            continue  # a caller's own tokens: nothing of anyone else's
        path = world.path(template)
        assert _call(world, method, path, world.callers["anonymous"]).status_code == 401
        refused = _call(world, method, path, world.callers["other"])
        sent += 2
        # A private photo of another user is not even there for them; a profile is, and is 403.
        assert refused.status_code == (404 if "photos" in path else 403), (method, path)
        public_path = path.replace(world.private["id"], world.public["id"])
        if public_path != path:
            assert _call(world, method, public_path, world.callers["other"]).status_code == 403
            sent += 1
    print(f"\nFIGURES access matrix writes: requests={sent} changed=0")
    owner = world.callers["owner"]
    photo = _call(world, "GET", world.path("/api/v1/photos/{photo_id}"), owner).json
    assert photo["caption"] == SECRET_CAPTION
    user = _call(world, "GET", world.path("/api/v1/users/{user_id}"), owner).json
    assert user["display_name"] == world.owner["display_name"]
    public = _call(world, "GET", f"/api/v1/photos/{world.public['id']}", {}).json
    assert public["caption"] == "public"
