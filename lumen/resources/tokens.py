"""/api/v1/tokens"""

from __future__ import annotations

import falcon

from lumen.auth import authenticate, issue_token, require_user, unauthorized
from lumen.schemas import TokenCreateSchema, TokenSchema, load_body

_token_schema = TokenSchema()


class TokensResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_post(self, req, resp):
        """Exchange a username and password for a bearer token."""
        body = load_body(req, TokenCreateSchema())
        user = authenticate(req.context.db, body["username"], body["password"])
        if user is None:
            raise unauthorized("username or password: the credentials are not valid")
        secret, token = issue_token(req.context.db, user, self.lumen.settings.token_ttl_hours)
        resp.status = falcon.HTTP_201
        resp.media = _token_schema.dump(
            {"token": secret, "user_id": str(user.id), "expires_at": token.expires_at}
        )


class CurrentTokenResource:
    def on_delete(self, req, resp):
        """Revoke the token this request carries."""
        require_user(req)
        req.context.db.delete(req.context.token)
        resp.status = falcon.HTTP_204
