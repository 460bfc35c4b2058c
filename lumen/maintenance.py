"""Work on the data outside requests: consistency of storage and rows, and synthetic data."""

from __future__ import annotations

import hashlib
import io
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from PIL import Image, ImageDraw
from sqlalchemy import select
from tqdm import tqdm

from lumen import events, images, photo_counts
from lumen.auth import hash_password
from lumen.models import Photo, User, utcnow
from lumen.photos import new_photo, record_event
from lumen.session import after_commit, after_rollback

# A file younger than this may belong to an upload whose row has not committed yet.
GRACE_S = 3600


@dataclass
class StorageReport:
    orphan_files: list[str] = field(default_factory=list)  # paths below STORAGE_PATH
    missing_files: list[str] = field(default_factory=list)  # photo ids whose files are gone
    stale_temporary: int = 0
    # With ``verify``: sha256 of each file whose bytes no longer hash to it -> photo ids.
    corrupt_files: dict[str, list[str]] = field(default_factory=dict)
    # Photo counters (lumen.photo_counts) that differ from COUNT(*), one line each.
    wrong_counters: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.orphan_files
            or self.missing_files
            or self.stale_temporary
            or self.corrupt_files
            or self.wrong_counters
        )


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def check_storage(
    lumen, fix: bool = False, verify: bool = False, progress: bool = True
) -> StorageReport:
    """Find files no photo refers to and photos whose files are gone; with ``fix``, remove
    both (a photo without its file can never be served again). Files younger than GRACE_S
    are left alone: they may belong to an upload still in progress. With ``verify``, every
    file a photo refers to is read and hashed again: corrupt files are listed (never removed:
    the cure is a restore from backup). The photo counters are compared with COUNT(*) too,
    and ``fix`` computes them again."""
    storage, report = lumen.storage, StorageReport()
    rows = _file_rows(lumen)
    report.missing_files = sorted(
        str(row.id) for row in rows if not all(storage.exists(sha) for sha in _shas(row))
    )
    if verify:
        report.corrupt_files = _corrupt_files(storage, rows, progress)
    released: set[str] = set()  # files of the photos removed here: orphans at once
    if fix and report.missing_files:
        with lumen.unit_of_work() as session:
            gone = session.scalars(
                select(Photo).where(Photo.id.in_([uuid.UUID(i) for i in report.missing_files]))
            ).all()
            for photo in gone:
                released |= set(_shas(photo))
                session.delete(photo)
                record_event(session, events.PHOTO_DELETED, photo, changes={})
        rows = _file_rows(lumen)  # the removed photos' remaining files are orphans now
    referenced = {sha for row in rows for sha in _shas(row)}
    now = time.time()
    orphans = [
        path
        for path in storage.files()
        if (path.name not in referenced or path != storage.path_for(path.name))
        and (path.name in released or now - path.stat().st_mtime > GRACE_S)
    ]
    report.orphan_files = sorted(str(path.relative_to(storage.root)) for path in orphans)
    tmp = storage.root / "tmp"
    stale = [p for p in tmp.glob("*") if now - p.stat().st_mtime > GRACE_S]
    report.stale_temporary = len(stale)
    report.wrong_counters = photo_counts.wrong_counters(lumen.engine)
    if fix and report.wrong_counters:
        with lumen.unit_of_work() as session:
            photo_counts.refill(session)
    if fix:
        for path in orphans:
            if path == storage.path_for(path.name):
                storage.delete_unreferenced(path.name)  # waits for a backup that copies
            else:
                path.unlink(missing_ok=True)
        for path in stale:
            path.unlink(missing_ok=True)
    return report


def _corrupt_files(storage, rows, progress: bool) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for row in rows:
        for sha in _shas(row):
            users.setdefault(sha, []).append(str(row.id))
    corrupt = {}
    bar = tqdm(sorted(users), desc="verifying", unit="file", disable=None if progress else True)
    for sha in bar:
        path = storage.path_for(sha)
        if path.is_file() and file_sha256(path) != sha:
            corrupt[sha] = sorted(users[sha])
    return corrupt


def _shas(row) -> tuple[str, ...]:
    """The files of a photo: original, thumbnail, and the public copy where there is one."""
    return tuple(s for s in (row.sha256, row.thumb_sha256, row.public_sha256) if s is not None)


def _file_rows(lumen):
    with lumen.Session() as session:
        columns = (Photo.id, Photo.sha256, Photo.thumb_sha256, Photo.public_sha256)
        return session.execute(select(*columns)).all()


def strip_locations(lumen, batch: int = 100) -> int:
    """Give each photo that has no public copy (those uploaded before core_0003) one when its
    original carries location metadata, as an upload now does. Idempotent; returns how many
    copies were made. Each photo is its own transaction, under the files' lock."""
    storage, made, after = lumen.storage, 0, None
    while True:
        query = select(Photo.id, Photo.sha256).where(Photo.public_sha256.is_(None))
        if after is not None:
            query = query.where(Photo.id > after)
        with lumen.Session() as session:
            rows = session.execute(query.order_by(Photo.id).limit(batch)).all()
        if not rows:
            return made
        for row in rows:
            after = row.id
            if not storage.exists(row.sha256):
                continue  # `lumen storage check` reports it
            stripped = images.without_location(storage.path_for(row.sha256))
            if stripped is None:
                continue
            public = storage.receive_bytes(stripped)
            with lumen.unit_of_work() as session:
                release = storage.lock(row.sha256, public.sha256)
                after_commit(session, release)
                after_rollback(session, release)
                photo = session.get(Photo, row.id)
                if photo is None or photo.public_sha256 is not None:
                    public.discard()  # deleted or done meanwhile
                    continue
                if storage.keep(public):
                    after_rollback(session, lambda sha=public.sha256: storage.delete(sha))
                photo.public_sha256, photo.public_size_bytes = public.sha256, public.size
                # Cached records and lists name the original's URL: purge them.
                record_event(session, events.PHOTO_UPDATED, photo, changes={})
            made += 1


def synthetic_image(rng: random.Random, width: int, height: int) -> bytes:
    """A small real JPEG: a gradient of random colours with a few shapes."""
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = [x0, y0, x0 + rng.randrange(8, width), y0 + rng.randrange(8, height)]
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def seed(
    lumen,
    users: int,
    photos: int,
    seed_value: int = 1,
    private_share: float = 0.2,
    progress: bool = True,
    owners: list | None = None,
) -> tuple[int, int]:
    """Create ``users`` users (password ``seeded-user-password``) and ``photos`` photos spread
    over them (or over the existing users ``owners``, ids), with real image files. Returns
    (users, photos) created."""
    rng = random.Random(seed_value)
    storage, thumb_size = lumen.storage, lumen.settings.thumbnail_size
    max_pixels = int(lumen.settings.max_image_megapixels * 1e6)
    password_hash = hash_password("seeded-user-password")  # one hash: argon2 is slow on purpose
    stamp = int(time.time())
    with lumen.unit_of_work() as session:
        made = [
            User(
                username=f"seed{stamp % 100000}_{n}",
                password_hash=password_hash,
                display_name=f"Seeded user {n}",
            )
            for n in range(users)
        ]
        session.add_all(made)
        session.flush()
        owners = (
            owners or [u.id for u in made] or session.scalars(select(User.id).limit(1000)).all()
        )
    if not owners:
        raise ValueError("no users to own the photos: seed some users too")
    now = utcnow()
    bar = tqdm(total=photos, desc="photos", unit="photo", disable=not progress)
    created = 0
    while created < photos:
        batch = min(200, photos - created)
        with lumen.unit_of_work() as session:
            for _ in range(batch):
                size = rng.choice((320, 480, 640)), rng.choice((240, 360, 480))
                data = synthetic_image(rng, *size)
                original = storage.receive_bytes(data)
                info, thumb_bytes = images.process(original.path, thumb_size, max_pixels)
                thumb = storage.receive_bytes(thumb_bytes)
                storage.keep(original)
                storage.keep(thumb)
                photo = new_photo(
                    rng.choice(owners),
                    original,
                    thumb,
                    info,
                    caption=f"Seeded photo {created}",
                    visibility="private" if rng.random() < private_share else "public",
                    created_at=now - timedelta(seconds=photos - created),
                )
                session.add(photo)
                record_event(session, events.PHOTO_CREATED, photo, changes={})
                created += 1
        bar.update(batch)
    bar.close()
    return len(made), created
