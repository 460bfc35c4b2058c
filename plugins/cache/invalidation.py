"""Which domain event touches which cache entries (the table in docs/cache.md).

Each event becomes a plan: the generations to bump (every entry stamped with one of them stops
being served, in O(1) however many there are) and the entries to delete at once (a photo's own
entries, so their memory goes now rather than at their TTL).
"""

from __future__ import annotations

from dataclasses import dataclass

from lumen_plugins.cache.keys import Keys

PHOTO_CREATED = "lumen_photo_created"
PHOTO_UPDATED = "lumen_photo_updated"
PHOTO_DELETED = "lumen_photo_deleted"
USER_UPDATED = "lumen_user_updated"


@dataclass(frozen=True)
class Plan:
    generations: tuple[str, ...]
    deletions: tuple[str, ...] = ()


def photo_changed(keys: Keys, event: str, photo, changes: dict) -> Plan:
    """Created, updated or deleted ``photo``; ``changes`` maps field -> (old, new)."""
    owner = photo.owner_id
    # The owner's lists hold every one of their photos (scope "all"); any change shows there.
    generations = [keys.user_photos_generation(owner)]
    deletions = []
    if event != PHOTO_CREATED:
        # A new photo has no entry of its own yet: nothing could have read its id before it
        # was committed.
        generations.append(keys.photo_generation(photo.id))
        deletions = [keys.entry(f"{kind}:{photo.id}").data for kind in ("meta", "urls")]
    if event != PHOTO_UPDATED or "visibility" in changes:
        # The profile counts the owner's photos, and the public ones apart.
        generations.append(keys.user_profile_generation(owner))
    if photo.visibility == "public" or "public" in changes.get("visibility", ()):
        generations.append(keys.public_generation)
    return Plan(tuple(generations), tuple(deletions))


def user_changed(keys: Keys, user, changes: dict) -> Plan:
    """The profile holds the user's fields; photos and lists do not."""
    return Plan((keys.user_profile_generation(user.id),))
