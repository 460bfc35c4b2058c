"""What anyone but the owner downloads carries no location metadata; the owner gets the exact
bytes they uploaded, under a URL and an ETag of their own that no shared cache keeps."""

import hashlib
import io
import os
import time
from pathlib import Path

import falcon.testing
import pytest
from PIL import ExifTags, Image, ImageChops

from lumen import images
from lumen.maintenance import check_storage
from tests.conftest import Api
from tests.test_images import exif_jpeg

pytestmark = pytest.mark.security

PARIS = ((48.8566, "N"), (2.3522, "E"))


def stored_files(app) -> list[Path]:
    root = Path(app.lumen.settings.storage_path)
    return sorted(root.glob("??/??/*")) if root.exists() else []


def located_jpeg(color=(10, 120, 200)) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Camera"
    gps = Image.open(io.BytesIO(exif_jpeg(gps=PARIS))).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    out = io.BytesIO()
    Image.effect_noise((120, 80), 40).convert("RGB").save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def gps_of(data: bytes) -> dict:
    return dict(Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo))


def same_pixels(a: bytes, b: bytes) -> bool:
    first, second = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
    return ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


def check_privacy(client, api, caller_first: str, tmp_path: Path):
    """Upload a located photo; read it as ``caller_first`` first (to fill any cache), then as
    everyone: only its owner ever gets the exact bytes."""
    owner, stranger = api.user(), api.user()
    data = located_jpeg()
    assert gps_of(data)
    photo = api.upload(owner, data)
    url = f"/api/v1/photos/{photo['id']}"
    callers = {"owner": owner["headers"], "stranger": stranger["headers"], "anonymous": {}}
    order = [caller_first] + [c for c in callers if c != caller_first]
    seen = {c: client.simulate_get(url, headers=callers[c]).json for c in order}
    listed = {c: client.simulate_get("/api/v1/photos", headers=callers[c]).json for c in order}
    own_url = photo["urls"]["original"]
    assert own_url.endswith(f"v={photo['sha256'][:16]}")
    assert seen["owner"] == photo == listed["owner"][0]
    assert (photo["sha256"], photo["size_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    public_url = seen["anonymous"]["urls"]["original"]
    assert public_url != own_url
    # Others see the copy: its URL, and its hash and size, never the original's (which would
    # let a guess of the removed bytes be checked).
    copy = client.simulate_get(public_url).content
    for who in ("stranger", "anonymous"):
        for body in (seen[who], listed[who][0]):
            assert body["urls"]["original"] == public_url
            assert body["sha256"] == hashlib.sha256(copy).hexdigest() != photo["sha256"]
            assert body["size_bytes"] == len(copy)
            assert photo["sha256"] not in str(body)

    mine = client.simulate_get(own_url, headers=owner["headers"])
    assert mine.content == data
    assert mine.headers["etag"] == f'"{photo["sha256"]}"'
    assert mine.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert "Authorization" in mine.headers["vary"]

    for who in ("stranger", "anonymous"):
        # By their own URL, by the owner's URL, and with the owner's ETag: never the exact bytes.
        for target in (public_url, own_url):
            got = client.simulate_get(target, headers=callers[who])
            assert got.status_code == 200
            assert got.content != data and gps_of(got.content) == {}
            (tmp_path / "got").write_bytes(got.content)
            assert images.without_location(tmp_path / "got") is None  # nothing locating
            assert Image.open(io.BytesIO(got.content)).getexif() == {274: 6}  # orientation kept
            assert same_pixels(got.content, data)
            assert got.headers["etag"] == f'"{seen[who]["sha256"]}"' != mine.headers["etag"]
            assert "Authorization" in got.headers["vary"]
            immutable = got.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert immutable == (target == public_url)
        revalidated = client.simulate_get(
            own_url, headers={**callers[who], "If-None-Match": mine.headers["etag"]}
        )
        assert revalidated.status_code == 200 and gps_of(revalidated.content) == {}
    thumb = client.simulate_get(photo["urls"]["thumbnail"])
    assert Image.open(io.BytesIO(thumb.content)).getexif() == {}
    return photo


@pytest.mark.parametrize("caller_first", ["owner", "anonymous"])
def test_only_the_owner_downloads_the_location(client, api, caller_first, tmp_path):
    check_privacy(client, api, caller_first, tmp_path)


@pytest.mark.parametrize("caller_first", ["owner", "anonymous"])
def test_only_the_owner_downloads_the_location_through_the_cache(
    make_app, redis_url, redis_prefix, redis_client, caller_first, tmp_path
):
    app = make_app(LUMEN_PLUGINS="cache", REDIS_URL=redis_url, CACHE_KEY_PREFIX=redis_prefix)
    client = falcon.testing.TestClient(app)
    check_privacy(client, Api(client), caller_first, tmp_path)
    assert any(redis_client.scan_iter(f"{redis_prefix}*"))  # the records were cached


def test_a_photo_without_location_is_one_file_for_everyone(client, app, api):
    owner = api.user()
    data = exif_jpeg(when="2024:01:02 03:04:05")  # EXIF, but no location
    photo = api.upload(owner, data)
    assert len(stored_files(app)) == 2
    anonymous = client.simulate_get(f"/api/v1/photos/{photo['id']}").json
    assert anonymous["urls"] == photo["urls"]
    got = client.simulate_get(photo["urls"]["original"])
    assert got.content == data and "vary" not in got.headers


def test_storage_check_and_delete_know_the_public_copy(client, app, api):
    ada, bob = api.user(), api.user()
    data = located_jpeg()
    mine, theirs = api.upload(ada, data), api.upload(bob, data)
    files = stored_files(app)
    assert len(files) == 3  # original, thumbnail, public copy: shared by both photos
    hour_ago = time.time() - 7200
    for path in files:
        os.utime(path, (hour_ago, hour_ago))
    report = check_storage(app.lumen)
    assert report.orphan_files == [] and report.missing_files == []

    client.simulate_delete(f"/api/v1/photos/{mine['id']}", headers=ada["headers"])
    assert stored_files(app) == files  # bob's photo still uses all three
    public_url = client.simulate_get(f"/api/v1/photos/{theirs['id']}").json["urls"]["original"]
    assert gps_of(client.simulate_get(public_url).content) == {}
    client.simulate_delete(f"/api/v1/photos/{theirs['id']}", headers=bob["headers"])
    assert stored_files(app) == []

    # A public copy that went missing is a photo with a missing file.
    photo = api.upload(ada, data)
    public = client.simulate_get(f"/api/v1/photos/{photo['id']}").json["urls"]["original"]
    sha = [p for p in stored_files(app) if p.name.startswith(public.rsplit("v=", 1)[1])]
    sha[0].unlink()
    assert check_storage(app.lumen).missing_files == [photo["id"]]


def test_a_failed_commit_takes_back_the_public_copy(app, api, monkeypatch):
    from sqlalchemy.orm import Session

    from tests.conftest import multipart

    user = api.user()
    monkeypatch.setattr(Session, "commit", lambda self: (_ for _ in ()).throw(RuntimeError()))
    body, content_type = multipart({"file": ("a.jpg", located_jpeg())})
    result = api.client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )
    monkeypatch.undo()
    assert result.status_code == 500
    assert stored_files(app) == []


def test_photos_from_before_public_copies_get_theirs(client, app, api, environ, monkeypatch):
    """Photos uploaded before core_0003 have no public copy: `lumen storage strip-locations`
    makes one for each whose original carries a location, once."""
    from click.testing import CliRunner
    from sqlalchemy import select, update

    from lumen.cli import Context, cli
    from lumen.maintenance import strip_locations
    from lumen.models import Photo

    owner = api.user()
    data = located_jpeg()
    located = api.upload(owner, data)
    api.upload(owner, exif_jpeg())  # no location: no copy to make
    with app.lumen.Session() as session:  # as it was before the migration
        public_sha = session.scalar(
            select(Photo.public_sha256).where(Photo.public_sha256.is_not(None))
        )
        session.execute(update(Photo).values(public_sha256=None, public_size_bytes=None))
        session.commit()
    app.lumen.storage.delete(public_sha)
    assert client.simulate_get(located["urls"]["original"]).content == data  # the old leak

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    ran = CliRunner().invoke(cli, ["storage", "strip-locations"], obj=Context())
    assert ran.exit_code == 0, ran.output
    assert ran.output.strip() == "made 1 copies without location metadata"
    public_url = client.simulate_get(f"/api/v1/photos/{located['id']}").json["urls"]["original"]
    assert public_url.endswith(f"v={public_sha[:16]}")  # the same copy an upload makes
    got = client.simulate_get(public_url)
    assert gps_of(got.content) == {} and same_pixels(got.content, data)
    mine = client.simulate_get(located["urls"]["original"], headers=owner["headers"])
    assert mine.content == data
    assert check_storage(app.lumen).clean
    assert strip_locations(app.lumen) == 0  # done once


def test_an_image_whose_metadata_cannot_be_removed_is_refused(app, api, monkeypatch):
    """Better no upload than a location served to everyone: 415, and nothing kept."""
    from tests.conftest import multipart

    def unwalkable(*args):
        raise images._Malformed("test")

    def failing(path):
        raise OSError("encoder broke")

    monkeypatch.setattr(images, "_jpeg", unwalkable)
    monkeypatch.setattr(images, "_reencoded", failing)
    user = api.user()
    body, content_type = multipart({"file": ("a.jpg", located_jpeg())})
    result = api.client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )
    assert result.status_code == 415
    assert result.json["description"] == ("file: its metadata cannot be removed (encoder broke)")
    assert stored_files(app) == []
    tmp = Path(app.lumen.settings.storage_path) / "tmp"
    assert list(tmp.iterdir()) == []
