"""/api/v1/users"""

from __future__ import annotations

import falcon
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lumen import events
from lumen.auth import hash_password, require_user
from lumen.models import Photo, User
from lumen.resources.paging import parse_id
from lumen.schemas import UserCreateSchema, UserSchema, UserUpdateSchema, load_body

_user_schema = UserSchema()


class UsernameTaken(Exception):
    pass


def create_user(session: Session, username: str, password: str, display_name=None) -> User:
    """Create a user; raises UsernameTaken. Shared by the API and ``lumen users create``."""
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UsernameTaken(username)
    user = User(username=username, password_hash=hash_password(password), display_name=display_name)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request took the name between check and insert
        raise UsernameTaken(username) from None
    return user


def visible_photo_count(session: Session, user_id, viewer) -> int:
    query = select(func.count()).select_from(Photo).where(Photo.owner_id == user_id)
    if viewer is None or viewer.id != user_id:
        query = query.where(Photo.visibility == "public")
    return session.scalar(query)


def visibility_filter(viewer):
    """What the viewer may see: public photos and the viewer's own."""
    if viewer is None:
        return Photo.visibility == "public"
    return or_(Photo.visibility == "public", Photo.owner_id == viewer.id)


def render_user(user: User, photo_count: int) -> dict:
    return _user_schema.dump(
        {
            "id": str(user.id),
            "username": user.username,
            "display_name": user.display_name,
            "photo_count": photo_count,
            "created_at": user.created_at,
        }
    )


def load_profile(session: Session, user_id) -> dict:
    """What the cache keeps of a profile: the user as others see it, and the count of all
    their photos, which only the user sees."""
    user = get_user(session, user_id)
    public, everything = session.execute(
        select(func.count().filter(Photo.visibility == "public"), func.count())
        .select_from(Photo)
        .where(Photo.owner_id == user.id)
    ).one()
    return {"user": render_user(user, public), "all_photos": everything}


def get_user(session: Session, user_id) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise falcon.HTTPNotFound(title="Not found", description="id: no such user")
    return user


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
            user = create_user(req.context.db, **body)
        except UsernameTaken:
            raise falcon.HTTPConflict(
                title="Conflict", description="username: is already taken"
            ) from None
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/users/{user.id}"
        resp.media = render_user(user, 0)


class UserResource:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp, user_id):
        """A user's profile."""
        user_id = parse_id(user_id)
        profile = self.lumen.cached(
            f"user:{user_id}:profile", lambda: load_profile(req.context.db, user_id)
        )
        viewer = req.context.user
        body = profile["user"]
        if viewer is not None and viewer.id == user_id:
            body = {**body, "photo_count": profile["all_photos"]}
        resp.media = body

    def on_patch(self, req, resp, user_id):
        """Change one's own display name."""
        caller = require_user(req)
        db = req.context.db
        user = get_user(db, parse_id(user_id))
        if user.id != caller.id:
            raise falcon.HTTPForbidden(title="Forbidden", description="id: not your profile")
        body = load_body(req, UserUpdateSchema())
        changes = events.apply_changes(user, body)
        db.flush()
        if changes:
            events.record(db, events.USER_UPDATED, user=user, changes=changes)
        resp.media = render_user(user, visible_photo_count(db, user.id, caller))
