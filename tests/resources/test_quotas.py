"""Storage quotas: MAX_USER_STORAGE_GB per user, MAX_STORAGE_GB for the store, where identical
bytes are stored once and counted once."""

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import falcon.testing
import pytest
from PIL import Image
from sqlalchemy import event

from lumen import hookimpl, photos
from lumen.config import ConfigError, load_settings
from tests.conftest import Api, multipart
from tests.test_image_location import gps_exif

pytestmark = pytest.mark.security


def noise(side: int, seed: int, **extra) -> bytes:
    """A JPEG that does not compress: its size is about what is asked."""
    out = io.BytesIO()
    image = Image.effect_noise((side, side), 100 + seed).convert("RGB")
    image.save(out, "JPEG", quality=95, **extra)
    return out.getvalue()


def stored_files(app) -> list[Path]:
    root = Path(app.lumen.settings.storage_path)
    return sorted(root.glob("??/??/*")) if root.exists() else []


def upload(client, user, data):
    body, content_type = multipart({"file": ("a.jpg", data)})
    return client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )


def footprint(app, data: bytes) -> int:
    """What one photo of ``data`` takes on disk: the original and its thumbnail."""
    api = Api(falcon.testing.TestClient(app))
    user = api.user()
    photo = api.upload(user, data)
    size = sum(p.stat().st_size for p in stored_files(app))
    api.client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=user["headers"])
    assert stored_files(app) == []
    return size


def test_identical_bytes_are_stored_once_and_count_once(make_app):
    probe = make_app()
    data = noise(120, 1)
    one_photo = footprint(probe, data)
    # Room for one photo's files and a little more, not for two.
    app = make_app(MAX_STORAGE_GB=repr((one_photo * 1.5) / 1024**3))
    client = falcon.testing.TestClient(app)
    api = Api(client)
    ada, bob, cyd = api.user(), api.user(), api.user()
    stored_before = stored_files(app)
    assert upload(client, ada, data).status_code == 201
    # The same bytes from another user take no new room: accepted, stored once.
    assert upload(client, bob, data).status_code == 201
    assert len(stored_files(app)) == len(stored_before) + 2
    with app.lumen.Session() as session:
        on_disk = sum(p.stat().st_size for p in stored_files(app))
        assert photos.stored_bytes(session) == on_disk
    refused = upload(client, cyd, noise(120, 2))
    assert refused.status_code == 507
    assert refused.json["description"] == (
        "file: the storage quota (MAX_STORAGE_GB) would be exceeded"
    )
    assert len(stored_files(app)) == len(stored_before) + 2


def test_one_user_cannot_fill_the_store_for_everyone(make_app):
    data = [noise(120, n) for n in range(3)]
    probe = make_app()
    one_photo = footprint(probe, data[0])
    app = make_app(MAX_USER_STORAGE_GB=repr((one_photo * 2.5) / 1024**3))
    client = falcon.testing.TestClient(app)
    api = Api(client)
    greedy, other = api.user(), api.user()
    assert upload(client, greedy, data[0]).status_code == 201
    assert upload(client, greedy, data[1]).status_code == 201
    files = stored_files(app)
    refused = upload(client, greedy, data[2])
    assert refused.status_code == 507
    assert refused.json["description"] == (
        "file: your storage quota (MAX_USER_STORAGE_GB) would be exceeded"
    )
    assert stored_files(app) == files
    listed = client.simulate_get("/api/v1/photos", params={"owner_id": greedy["id"]})
    assert listed.headers["x-total-count"] == "2"
    # Everyone else still has room, and bytes another user already stored count for each
    # user who has a photo of them.
    assert upload(client, other, data[2]).status_code == 201
    assert upload(client, other, data[0]).status_code == 201
    assert upload(client, other, data[1]).status_code == 507
    # Deleting frees the user's room.
    mine = client.simulate_get("/api/v1/photos", params={"owner_id": greedy["id"]}).json
    client.simulate_delete(f"/api/v1/photos/{mine[0]['id']}", headers=greedy["headers"])
    assert upload(client, greedy, data[2]).status_code == 201


@pytest.mark.parametrize("value, ok", [(None, True), ("0.5", True), ("0", False), ("x", False)])
def test_max_user_storage_gb_is_unset_or_a_positive_number(value, ok):
    environ = {} if value is None else {"MAX_USER_STORAGE_GB": value}
    if ok:
        expected = None if value is None else 0.5
        assert load_settings(environ).max_user_storage_gb == expected
    else:
        with pytest.raises(ConfigError, match="MAX_USER_STORAGE_GB"):
            load_settings(environ)


class Rendezvous:
    """Holds the first upload between its quota check and its insert (in the nearest-city
    lookup, which an upload with GPS makes there) until the second upload has either passed
    its own check (no lock: both then insert) or reached the lock that makes it wait."""

    def __init__(self):
        self.state = threading.Condition()
        self.in_lookup, self.at_lock = set(), set()

    def note_statement(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE USERS"):
            with self.state:
                self.at_lock.add(threading.get_ident())
                self.state.notify_all()

    @hookimpl
    def lumen_nearest_location(self, lumen, latitude, longitude):
        me = threading.get_ident()
        with self.state:
            self.in_lookup.add(me)
            self.state.notify_all()
            # A safety bound only: either event comes at once.
            self.state.wait_for(lambda: (self.in_lookup | self.at_lock) - {me}, timeout=60)
        return None


def test_parallel_uploads_of_one_user_cannot_all_pass_the_quota(make_app):
    # With GPS (so the upload asks for the nearest city), and pixels of their own (so the
    # thumbnails differ and neither upload waits for the other's file lock).
    data = [noise(120, n, exif=gps_exif().tobytes()) for n in range(3)]
    probe = make_app()
    one_photo = footprint(probe, data[0])
    rendezvous = Rendezvous()
    app = make_app(rendezvous, MAX_USER_STORAGE_GB=repr((one_photo * 1.5) / 1024**3))
    client = falcon.testing.TestClient(app)
    user = Api(client).user()
    event.listen(app.lumen.engine, "before_cursor_execute", rendezvous.note_statement)
    try:
        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(lambda d: upload(client, user, d).status_code, data[1:]))
    finally:
        event.remove(app.lumen.engine, "before_cursor_execute", rendezvous.note_statement)
    assert statuses == [201, 507]
    listed = client.simulate_get("/api/v1/photos", params={"owner_id": user["id"]})
    assert listed.headers["x-total-count"] == "1"
