"""/api/v1/users"""

from __future__ import annotations

import falcon

from lumen import users
from lumen.auth import require_user
from lumen.resources.paging import parse_id
from lumen.schemas import UserCreateSchema, UserUpdateSchema, load_body


class UsersResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_post(self, req, resp):
        """Register a user."""
        if not self.lumen.settings.open_registration:
            raise falcon.HTTPForbidden(
                title="Registration closed",
                description="registration is closed on this server (LUMEN_OPEN_REGISTRATION)",
            )
        body = load_body(req, UserCreateSchema())
        try:
            user = users.create_user(req.context.db, **body)
        except users.UsernameTaken:
            raise falcon.HTTPConflict(
                title="Conflict", description="username: is already taken"
            ) from None
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/users/{user.id}"
        resp.media = users.render_user(user, 0)


class UserResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp, user_id):
        """A user's profile."""
        resp.media = users.profile(self.lumen, req.context.db, parse_id(user_id), req.context.user)

    def on_patch(self, req, resp, user_id):
        """Change one's own display name."""
        caller = require_user(req)
        db = req.context.db
        user = users.get_user(db, parse_id(user_id))
        if user.id != caller.id:
            raise falcon.HTTPForbidden(title="Forbidden", description="id: not your profile")
        users.rename(db, user, load_body(req, UserUpdateSchema()))
        _, everything = users.photo_counts(db, user.id)
        resp.media = users.render_user(user, everything)
