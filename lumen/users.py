"""Users: creating them, their profiles (cached), and renaming them."""

from __future__ import annotations

import falcon
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lumen import events
from lumen.auth import hash_password
from lumen.caching import CachedRead
from lumen.models import User
from lumen.photo_counts import owner_counts
from lumen.schemas import UserSchema
from lumen.visibility import PUBLIC, sees_everything_of

_user_schema = UserSchema()


def profile_tag(user_id) -> str:
    """What a profile depends on: the user's fields and the counts of their photos."""
    return f"user:{user_id}:profile"


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


def get_user(session: Session, user_id) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise falcon.HTTPNotFound(title="Not found", description="id: no such user")
    return user


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


def photo_counts(session: Session, user_id) -> tuple[int, int]:
    """(public photos, all photos) of a user, from the counters (lumen.photo_counts)."""
    counts = owner_counts(session, user_id)
    return counts.get(PUBLIC, 0), sum(counts.values())


def load_profile(session: Session, user_id) -> dict:
    """What the cache keeps of a profile: the user as others see it, and the count of all
    their photos, which only the user sees."""
    user = get_user(session, user_id)
    public, everything = photo_counts(session, user.id)
    return {"user": render_user(user, public), "all_photos": everything}


def profile_read(session: Session, user_id) -> CachedRead:
    return CachedRead(
        f"user:{user_id}:profile", (profile_tag(user_id),), lambda: load_profile(session, user_id)
    )


def profile(lumen, session: Session, user_id, viewer) -> dict:
    """The profile as ``viewer`` sees it (through the cache)."""
    cached = profile_read(session, user_id).through(lumen)
    if sees_everything_of(viewer, user_id):
        return {**cached["user"], "photo_count": cached["all_photos"]}
    return cached["user"]


def rename(session: Session, user: User, values: dict) -> dict:
    """Apply a profile edit; returns what changed."""
    changes = events.apply_changes(user, values)
    session.flush()
    if changes:
        events.record(
            session, events.USER_UPDATED, purges=(profile_tag(user.id),), user=user, changes=changes
        )
    return changes
