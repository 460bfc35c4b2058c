"""The cache contract the core declares beside its domain: which reads are cached under which
key and tags, and which tags each change purges (the table in docs/cache.md is checked against
the running service in tests/plugins/test_cache.py)."""

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from lumen import events, photos, users
from lumen.resources.paging import Cursor, Page

pytestmark = pytest.mark.unit

PHOTO, OWNER = uuid.uuid4(), uuid.uuid4()
NAMES = {
    photos.photo_tag(PHOTO): "photo",
    photos.owner_photos_tag(OWNER): "photos",
    users.profile_tag(OWNER): "profile",
    photos.PUBLIC_PHOTOS_TAG: "public",
}


def _photo(visibility):
    return SimpleNamespace(id=PHOTO, owner_id=OWNER, visibility=visibility)


def _all_fields(visibility):
    return {"caption": (None, "c"), "visibility": (None, visibility), "location_id": (None, None)}


@pytest.mark.parametrize(
    ("event", "visibility", "changes", "expected"),
    [
        (events.PHOTO_CREATED, "public", "all", {"photos", "profile", "public"}),
        (events.PHOTO_CREATED, "private", "all", {"photos", "profile"}),
        (events.PHOTO_DELETED, "public", "all", {"photo", "photos", "profile", "public"}),
        (events.PHOTO_DELETED, "private", "all", {"photo", "photos", "profile"}),
        (
            events.PHOTO_UPDATED,
            "private",
            {"visibility": ("public", "private")},
            {"photo", "photos", "profile", "public"},
        ),
        (events.PHOTO_UPDATED, "public", {"caption": ("a", "b")}, {"photo", "photos", "public"}),
        (events.PHOTO_UPDATED, "private", {"location_id": (1, 2)}, {"photo", "photos"}),
    ],
)
def test_photo_events_purge_the_tags_of_what_they_change(event, visibility, changes, expected):
    changes = _all_fields(visibility) if changes == "all" else changes
    purged = photos.purges(event, _photo(visibility), changes)
    assert {NAMES[tag] for tag in purged} == expected


def test_reads_name_the_tags_they_depend_on():
    read = photos.photo_read(None, None, PHOTO)
    assert (read.key, read.tags) == (f"photo:{PHOTO}:v2", (f"photo:{PHOTO}", photos.CITIES_TAG))
    front = photos.list_read(None, None, None, Page(20, 0), None, None)
    assert (front.key, front.tags) == ("photos:public:20:0:v3", ("photos:public", "cities"))
    viewer = SimpleNamespace(id=OWNER)
    own = photos.list_read(None, None, viewer, Page(20, 0), OWNER, None)
    assert own.key == f"user:{OWNER}:photos:all:20:0:v3"
    assert own.tags == (photos.owner_photos_tag(OWNER), photos.CITIES_TAG)
    theirs = photos.list_read(None, None, None, Page(20, 0), OWNER, None)
    assert theirs.key == f"user:{OWNER}:photos:public:20:0:v3"


def test_only_first_pages_of_unfiltered_lists_are_cached():
    last = photos.MAX_CACHED_OFFSET - 1
    assert photos.list_read(None, None, None, Page(20, last), None, None).key is not None
    beyond = Page(20, photos.MAX_CACHED_OFFSET)
    assert photos.list_read(None, None, None, beyond, None, None).key is None
    assert photos.list_read(None, None, None, beyond, OWNER, None).key is None
    assert photos.list_read(None, None, None, Page(20, 0), None, 7).key is None
    # A cursor's pages are as many as the photos: never cached.
    cursor = Cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())
    assert photos.list_read(None, None, None, Page(20, 0, cursor), None, None).key is None
    assert photos.list_read(None, None, None, Page(20, 0, cursor), OWNER, None).key is None
    # A signed-in caller's mixed list (public photos and their own) is theirs alone.
    viewer = SimpleNamespace(id=uuid.uuid4())
    assert photos.list_read(None, None, viewer, Page(20, 0), None, None).key is None
