"""Who may see a photo: everyone sees public photos, an owner sees their own. The one policy,
in the two forms the code needs: a SQL condition for queries, a test for records already read."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from lumen.models import Photo

PUBLIC = "public"


def visible_to(viewer) -> ColumnElement[bool]:
    """The photos ``viewer`` (a User, or None for anonymous) may see, as a WHERE condition."""
    if viewer is None:
        return Photo.visibility == PUBLIC
    return or_(Photo.visibility == PUBLIC, Photo.owner_id == viewer.id)


def may_see(viewer, owner_id, visibility: str) -> bool:
    """Whether ``viewer`` may see a photo of ``owner_id`` with ``visibility``."""
    return visibility == PUBLIC or (viewer is not None and str(viewer.id) == str(owner_id))


def sees_everything_of(viewer, owner_id) -> bool:
    """Whether ``viewer`` sees every photo of ``owner_id`` (their own), not just the public."""
    return viewer is not None and viewer.id == owner_id
