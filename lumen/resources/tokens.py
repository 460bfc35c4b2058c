"""/api/v1/tokens: log in, list one's sessions, log out of one or of all."""

from __future__ import annotations

import falcon

from lumen.auth import (
    authenticate,
    issue_token,
    require_user,
    revoke_all_tokens,
    revoke_token,
    unauthorized,
    user_tokens,
)
from lumen.resources.paging import Page
from lumen.schemas import SessionSchema, TokenCreateSchema, TokenSchema, load_body

_token_schema = TokenSchema()
_session_schema = SessionSchema()


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

    def on_get(self, req, resp):
        """The caller's sessions (tokens that still work), newest first; never a secret."""
        caller = require_user(req)
        page = Page.from_request(req)
        tokens, total = user_tokens(req.context.db, caller, page.limit, page.offset)
        current = req.context.token.id
        # This request's use, written at its commit, is shown already.
        used_now = getattr(req.context, "token_used_at", None)
        items = [
            _session_schema.dump(
                {
                    "id": str(token.id),
                    "created_at": token.created_at,
                    "last_used_at": used_now
                    if token.id == current and used_now is not None
                    else token.last_used_at,
                    "expires_at": token.expires_at,
                    "current": token.id == current,
                }
            )
            for token in tokens
        ]
        page.respond(resp, items, total, "/api/v1/tokens")

    def on_delete(self, req, resp):
        """Revoke every token of the caller, this one too: log out everywhere."""
        revoke_all_tokens(self.lumen, req.context.db, require_user(req))
        resp.status = falcon.HTTP_204


class CurrentTokenResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_delete(self, req, resp):
        """Revoke the token this request carries."""
        require_user(req)
        revoke_token(self.lumen, req.context.db, req.context.token)
        resp.status = falcon.HTTP_204
