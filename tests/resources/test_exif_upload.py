"""An upload of a real JPEG with EXIF GPS, read back through the API."""

import io

from PIL import Image

from tests.test_images import exif_jpeg


def test_upload_reads_taken_at_size_and_thumbnail(client, api):
    user = api.user()
    data = exif_jpeg(1600, 1200, when="2023:05:01 09:15:00", gps=((48.8566, "N"), (2.3522, "E")))
    photo = api.upload(user, data)
    assert photo["taken_at"].startswith("2023-05-01T09:15:00")
    assert (photo["width"], photo["height"]) == (1600, 1200)
    # Without the locations plugin the nearest city cannot be found: location stays null.
    assert photo["location"] is None
    read = client.simulate_get(f"/api/v1/photos/{photo['id']}").json
    assert read["taken_at"] == photo["taken_at"]
    thumb = client.simulate_get(photo["urls"]["thumbnail"])
    assert Image.open(io.BytesIO(thumb.content)).size == (512, 384)
    # No GPS in the API: the location is what clients see of where it was taken.
    assert "latitude" not in read and "longitude" not in read
