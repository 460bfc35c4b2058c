"""Storage quotas: MAX_USER_STORAGE_GB per user, MAX_STORAGE_GB for the store, where identical
bytes are stored once and counted once."""

import io
from pathlib import Path

import falcon.testing
import pytest
from PIL import Image

from lumen import photos
from lumen.config import ConfigError, load_settings
from tests.conftest import Api, multipart

pytestmark = pytest.mark.security


def noise(side: int, seed: int) -> bytes:
    """A JPEG that does not compress: its size is about what is asked."""
    out = io.BytesIO()
    image = Image.effect_noise((side, side), 100 + seed).convert("RGB")
    image.save(out, "JPEG", quality=95)
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
