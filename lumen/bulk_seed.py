"""``lumen seed --bulk``: a realistic library size quickly, for release engineers and the
benchmarks. Photo rows go in by the batch (COPY on PostgreSQL, executemany on SQLite) and
share a small pool of real image files, stored and content-addressed as uploads store theirs,
so ``lumen storage check`` finds every file and no orphan.

The counters stay exact by themselves: the triggers of core_0005 count each batch in its own
statement (on PostgreSQL one grouped upsert per COPY). No per-photo event is delivered (there
would be a million); the cache tags the new photos touch are purged once at the end.
"""

from __future__ import annotations

import io
import math
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import insert, text
from tqdm import tqdm

from lumen import images
from lumen.auth import hash_password
from lumen.models import Photo, User, utcnow
from lumen.photos import PUBLIC_PHOTOS_TAG, owner_photos_tag
from lumen.users import profile_tag

# The fewest distinct files; more when the photos per user need them (see file_pool_size).
MIN_FILES = 8
COPY_BATCH = 50_000  # rows per COPY statement, each its own transaction
SQLITE_BATCH = 10_000
SEED_PASSWORD = "seeded-user-password"
_COLUMNS = (
    "id",
    "owner_id",
    "caption",
    "visibility",
    "width",
    "height",
    "content_type",
    "size_bytes",
    "sha256",
    "thumb_sha256",
    "thumb_content_type",
    "thumb_size_bytes",
    "created_at",
    "updated_at",
)


def file_pool_size(users: int, photos: int) -> int:
    """How many distinct files: a user holds the same bytes only once (the schema's unique
    (owner_id, sha256): an upload of them again is a 409), so each user's photos need as many
    files as that user has photos, at most ceil(photos / users)."""
    return max(MIN_FILES, math.ceil(photos / users)) if photos else 0


def _new_ids(count: int) -> list[uuid.UUID]:
    """Random version-4 UUIDs, several times faster than uuid4() one by one; from a generator
    seeded by the system, so no two runs repeat an id whatever --seed says."""
    source = random.Random()
    return [uuid.UUID(int=source.getrandbits(128), version=4) for _ in range(count)]


def _time_ordered_id(source: random.Random, created) -> uuid.UUID:
    """A version-7 UUID (RFC 9562): the creation time in milliseconds first, random bits
    after. Photo ids in creation order make the primary-key index grow at its right edge, a
    few hot pages, instead of a random page per row: the bulk of a COPY's cost at a million."""
    ms = int(created.timestamp() * 1000)
    bits = (ms << 80) | (0x7 << 76) | (source.getrandbits(12) << 64)
    return uuid.UUID(int=bits | (0b10 << 62) | source.getrandbits(62))


def _make_users(lumen, count: int) -> list[uuid.UUID]:
    password_hash = hash_password(SEED_PASSWORD)  # one hash: argon2 is slow on purpose
    stamp, now = int(time.time()) % 100000, utcnow()
    ids = _new_ids(count)
    rows = [
        {
            "id": user_id,
            "username": f"bulk{stamp}_{n}",
            "password_hash": password_hash,
            "display_name": f"Seeded user {n}",
            "created_at": now,
            "updated_at": now,
        }
        for n, user_id in enumerate(ids)
    ]
    with lumen.engine.begin() as connection:
        for start in range(0, len(rows), SQLITE_BATCH):
            connection.execute(insert(User), rows[start : start + SQLITE_BATCH])
    return ids


def _make_files(lumen, count: int, rng: random.Random, progress: bool) -> list[dict]:
    """``count`` small real JPEGs and their thumbnails, kept in the storage; per file, the
    photo columns that describe it."""
    from lumen.maintenance import synthetic_image

    storage, thumb_size = lumen.storage, lumen.settings.thumbnail_size
    max_pixels = int(lumen.settings.max_image_megapixels * 1e6)
    files = []
    for _ in tqdm(range(count), desc="image files", unit="file", disable=not progress):
        data = synthetic_image(rng, rng.choice((96, 128, 160)), rng.choice((72, 96, 120)))
        original = storage.receive_bytes(data)
        info, thumb_bytes = images.process(original.path, thumb_size, max_pixels)
        thumb = storage.receive_bytes(thumb_bytes)
        storage.keep(original)
        storage.keep(thumb)
        files.append(
            {
                "width": info.width,
                "height": info.height,
                "content_type": info.content_type,
                "size_bytes": original.size,
                "sha256": original.sha256,
                "thumb_sha256": thumb.sha256,
                "thumb_content_type": images.THUMBNAIL_CONTENT_TYPE,
                "thumb_size_bytes": thumb.size,
            }
        )
    return files


def _rows(owners, files, photos: int, start: int, stop: int, rng, private_share: float):
    """Photo n belongs to owner n mod U and shows file (n div U) mod F: with F >= photos/U,
    no owner gets the same file twice. Newest last, a second apart."""
    now, users, source = utcnow(), len(owners), random.Random()
    for n in range(start, stop):
        created = now - timedelta(seconds=photos - n)
        yield {
            "id": _time_ordered_id(source, created),
            "owner_id": owners[n % users],
            "caption": f"Seeded photo {n}",
            "visibility": "private" if rng.random() < private_share else "public",
            **files[(n // users) % len(files)],
            "created_at": created,
            "updated_at": created,
        }


def _copy_text(rows) -> io.StringIO:
    """Rows in COPY's text format (no value here holds a tab, newline or backslash)."""
    out = io.StringIO()
    write = out.write
    for row in rows:
        write(
            f"{row['id']}\t{row['owner_id']}\t{row['caption']}\t{row['visibility']}\t"
            f"{row['width']}\t{row['height']}\t{row['content_type']}\t{row['size_bytes']}\t"
            f"{row['sha256']}\t{row['thumb_sha256']}\t{row['thumb_content_type']}\t"
            f"{row['thumb_size_bytes']}\t{row['created_at'].isoformat()}\t"
            f"{row['updated_at'].isoformat()}\n"
        )
    out.seek(0)
    return out


def _insert_batches(lumen, make_batch, ranges, bar) -> None:
    """Insert the batches ``make_batch`` builds for each range, one transaction each. The
    next batch is built in a thread while the database takes the current one: on PostgreSQL
    the two overlap (psycopg2 waits for the server without the GIL)."""
    postgres = lumen.engine.dialect.name == "postgresql"
    copy = f"COPY photos ({', '.join(_COLUMNS)}) FROM STDIN"
    with ThreadPoolExecutor(max_workers=1) as builder:
        pending = builder.submit(make_batch, *ranges[0]) if ranges else None
        for index in range(len(ranges)):
            count, batch = pending.result()
            if index + 1 < len(ranges):
                pending = builder.submit(make_batch, *ranges[index + 1])
            with lumen.engine.begin() as connection:
                if postgres:
                    cursor = connection.connection.dbapi_connection.cursor()
                    cursor.copy_expert(copy, batch)
                    cursor.close()
                else:
                    connection.execute(insert(Photo), batch)
            bar.update(count)


def bulk_seed(
    lumen,
    users: int,
    photos: int,
    seed_value: int = 1,
    private_share: float = 0.2,
    progress: bool = True,
) -> tuple[int, int]:
    """Create ``users`` users (password ``seeded-user-password``) and ``photos`` photos
    spread evenly over them in batches. Returns (users, photos) created."""
    if photos and users < 1:
        raise ValueError("--bulk needs --users of at least 1 (the photos' new owners)")
    rng = random.Random(seed_value)
    owners = _make_users(lumen, users)
    files = _make_files(lumen, file_pool_size(users, photos), rng, progress)
    postgres = lumen.engine.dialect.name == "postgresql"
    size = COPY_BATCH if postgres else SQLITE_BATCH
    ranges = [(start, min(start + size, photos)) for start in range(0, photos, size)]

    def make_batch(start: int, stop: int):
        rows = list(_rows(owners, files, photos, start, stop, rng, private_share))
        return len(rows), _copy_text(rows) if postgres else rows

    bar = tqdm(total=photos, desc="photos", unit="photo", disable=not progress)
    _insert_batches(lumen, make_batch, ranges, bar)
    bar.close()
    with lumen.engine.begin() as connection:
        # Fresh statistics, so the planner knows the new size of the table at once.
        connection.execute(text("ANALYZE photos"))
    tags = [PUBLIC_PHOTOS_TAG]
    for owner in owners:
        tags += [owner_photos_tag(owner), profile_tag(owner)]
    lumen.purge(tuple(tags))
    return users, photos
