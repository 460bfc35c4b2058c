"""Photos: every row of API.md's photos table, and bad input that changes nothing."""

import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from lumen import hookimpl
from lumen.models import Photo
from tests.conftest import jpeg, multipart


def photo_rows(app) -> int:
    with app.lumen.Session() as session:
        return session.scalar(select(func.count()).select_from(Photo))


def stored_files(app) -> list[Path]:
    root = Path(app.lumen.settings.storage_path)
    return [p for p in root.glob("??/??/*")] if root.exists() else []


def temp_files(app) -> list[Path]:
    tmp = Path(app.lumen.settings.storage_path) / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def post_file(client, user, parts):
    body, content_type = multipart(parts)
    return client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )


def test_upload_returns_the_photo_and_keeps_file_and_thumbnail(client, app, api):
    user = api.user()
    photo = api.upload(user, jpeg(800, 600), caption="Harbour at dusk", visibility="private")
    assert photo["owner_id"] == user["id"]
    assert photo["caption"] == "Harbour at dusk"
    assert photo["visibility"] == "private"
    assert (photo["width"], photo["height"]) == (800, 600)
    assert photo["content_type"] == "image/jpeg"
    assert photo["location"] is None and photo["taken_at"] is None
    assert len(photo["sha256"]) == 64
    assert photo["sha256"][:16] in photo["urls"]["original"]
    assert len(stored_files(app)) == 2  # the original and its thumbnail
    assert temp_files(app) == []


@pytest.mark.parametrize(
    "fmt, content_type", [("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")]
)
def test_every_supported_format(api, fmt, content_type):
    photo = api.upload(api.user(), jpeg(fmt=fmt))
    assert photo["content_type"] == content_type


def test_image_bytes_etag_and_304(client, api):
    user = api.user()
    original = jpeg(300, 200)
    photo = api.upload(user, original)
    got = client.simulate_get(photo["urls"]["original"])
    assert got.status_code == 200
    assert got.content == original
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["etag"] == f'"{photo["sha256"]}"'
    assert "immutable" in got.headers["cache-control"]
    again = client.simulate_get(
        photo["urls"]["original"], headers={"If-None-Match": got.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    thumb = client.simulate_get(photo["urls"]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.content)).size == (300, 200)  # never enlarged
    bad = client.simulate_get(f"/api/v1/photos/{photo['id']}/image", params={"size": "huge"})
    assert bad.status_code == 400 and bad.json["description"].startswith("size:")


def test_thumbnail_is_bounded_by_thumbnail_size(make_app):
    import falcon.testing

    from tests.conftest import Api

    client = falcon.testing.TestClient(make_app(THUMBNAIL_SIZE="64"))
    api = Api(client)
    photo = api.upload(api.user(), jpeg(640, 320))
    thumb = client.simulate_get(photo["urls"]["thumbnail"])
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 32)


def test_duplicate_upload_is_409_with_existing_id(client, app, api):
    user, other = api.user(), api.user()
    data = jpeg()
    first = api.upload(user, data)
    second = post_file(client, user, {"file": ("again.jpg", data)})
    assert second.status_code == 409
    assert second.json["existing_id"] == first["id"]
    assert photo_rows(app) == 1
    # Another owner may upload the same bytes; they are stored once.
    api.upload(other, data)
    assert photo_rows(app) == 2 and len(stored_files(app)) == 2


def test_get_visibility_rules(client, api):
    owner, stranger = api.user(), api.user()
    public = api.upload(owner)
    private = api.upload(owner, visibility="private")
    assert client.simulate_get(f"/api/v1/photos/{public['id']}").status_code == 200
    assert client.simulate_get(f"/api/v1/photos/{private['id']}").status_code == 404
    hidden = client.simulate_get(f"/api/v1/photos/{private['id']}", headers=stranger["headers"])
    assert hidden.status_code == 404
    mine = client.simulate_get(f"/api/v1/photos/{private['id']}", headers=owner["headers"])
    assert mine.status_code == 200
    assert client.simulate_get(private["urls"]["original"]).status_code == 404
    owned_bytes = client.simulate_get(private["urls"]["original"], headers=owner["headers"])
    assert owned_bytes.status_code == 200
    assert owned_bytes.headers["cache-control"] == "private, no-cache"
    assert client.simulate_get("/api/v1/photos/nope").status_code == 404


def test_list_newest_first_with_total_links_and_filters(client, api):
    ada, bob = api.user(), api.user()
    ids = [api.upload(ada)["id"] for _ in range(5)]
    private = api.upload(ada, visibility="private")["id"]
    bob_photo = api.upload(bob)["id"]
    page = client.simulate_get("/api/v1/photos", params={"limit": 2})
    assert page.status_code == 200
    assert page.headers["x-total-count"] == "6"
    assert [p["id"] for p in page.json] == [bob_photo, ids[4]]
    assert 'rel="next"' in page.headers["link"] and 'rel="prev"' not in page.headers["link"]
    last = client.simulate_get("/api/v1/photos", params={"limit": 2, "offset": 4})
    assert [p["id"] for p in last.json] == [ids[1], ids[0]]
    assert 'rel="prev"' in last.headers["link"] and 'rel="next"' not in last.headers["link"]
    as_ada = client.simulate_get("/api/v1/photos", headers=ada["headers"])
    assert as_ada.headers["x-total-count"] == "7" and as_ada.json[1]["id"] == private
    by_owner = client.simulate_get("/api/v1/photos", params={"owner_id": bob["id"]})
    assert [p["id"] for p in by_owner.json] == [bob_photo]
    user_list = client.simulate_get(f"/api/v1/users/{ada['id']}/photos", headers=bob["headers"])
    assert user_list.headers["x-total-count"] == "5"
    own_list = client.simulate_get(f"/api/v1/users/{ada['id']}/photos", headers=ada["headers"])
    assert own_list.headers["x-total-count"] == "6"
    missing = client.simulate_get("/api/v1/users/00000000-0000-0000-0000-000000000000/photos")
    assert missing.status_code == 404


@pytest.mark.security
@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"owner_id": "not-a-uuid"}, "owner_id"),
        ({"location_id": "x"}, "location_id"),
    ],
)
def test_bad_list_parameters_are_400(client, params, field):
    result = client.simulate_get("/api/v1/photos", params=params)
    assert result.status_code == 400
    assert field in result.json["description"]


def test_patch_changes_caption_and_visibility(client, api):
    owner, stranger = api.user(), api.user()
    photo = api.upload(owner)
    url = f"/api/v1/photos/{photo['id']}"
    changed = client.simulate_patch(
        url, json={"caption": "New", "visibility": "private"}, headers=owner["headers"]
    )
    assert changed.status_code == 200
    assert changed.json["caption"] == "New" and changed.json["visibility"] == "private"
    assert client.simulate_get(url).status_code == 404  # private now
    # Another user's private photo is 404; another user's public photo is 403.
    assert (
        client.simulate_patch(url, json={"caption": "x"}, headers=stranger["headers"]).status_code
        == 404
    )
    client.simulate_patch(url, json={"visibility": "public"}, headers=owner["headers"])
    forbidden = client.simulate_patch(url, json={"caption": "x"}, headers=stranger["headers"])
    assert forbidden.status_code == 403
    assert client.simulate_patch(url, json={"caption": "x"}).status_code == 401
    assert client.simulate_get(url).json["caption"] == "New"


@pytest.mark.security
@pytest.mark.parametrize(
    "body, field",
    [
        ({"caption": "x" * 10_000}, "caption"),
        ({"visibility": "friends"}, "visibility"),
        ({"location_id": 123456789}, "location_id"),
        ({"location_id": "abc"}, "location_id"),
        ({"owner_id": "00000000-0000-0000-0000-000000000000"}, "owner_id"),
    ],
)
def test_bad_patch_is_400_and_changes_nothing(client, api, body, field):
    owner = api.user()
    photo = api.upload(owner, caption="Kept")
    url = f"/api/v1/photos/{photo['id']}"
    result = client.simulate_patch(url, json=body, headers=owner["headers"])
    assert result.status_code == 400
    assert result.json["description"].startswith(f"{field}:")
    after = client.simulate_get(url).json
    assert after["caption"] == "Kept" and after["updated_at"] == photo["updated_at"]


def test_delete_removes_row_file_and_thumbnail(client, app, api):
    owner, stranger = api.user(), api.user()
    photo = api.upload(owner)
    url = f"/api/v1/photos/{photo['id']}"
    assert client.simulate_delete(url, headers=stranger["headers"]).status_code == 403
    assert client.simulate_delete(url).status_code == 401
    assert len(stored_files(app)) == 2
    assert client.simulate_delete(url, headers=owner["headers"]).status_code == 204
    assert client.simulate_get(url).status_code == 404
    assert client.simulate_get(photo["urls"]["original"]).status_code == 404
    assert stored_files(app) == [] and photo_rows(app) == 0
    assert client.simulate_delete(url, headers=owner["headers"]).status_code == 404


def test_delete_keeps_bytes_another_photo_still_uses(client, app, api):
    ada, bob = api.user(), api.user()
    data = jpeg()
    mine = api.upload(ada, data)
    theirs = api.upload(bob, data)
    client.simulate_delete(f"/api/v1/photos/{mine['id']}", headers=ada["headers"])
    assert client.simulate_get(theirs["urls"]["original"]).content == data


# --- bad uploads change nothing ---------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = jpeg(400, 300)
    return data[: len(data) // 2]


def bomb_png() -> bytes:
    # A tiny file that would decode to more pixels than Pillow allows.
    image = Image.new("1", (20_000, 20_000))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.security
@pytest.mark.parametrize(
    "parts, status, field",
    [
        ({"caption": "no file"}, 400, "file"),
        ({"file": ("empty.jpg", b"")}, 400, "file"),
        ({"file": ("text.jpg", b"just some text, not an image")}, 415, "file"),
        ({"file": ("half.jpg", truncated_jpeg())}, 415, "file"),
        ({"file": ("bomb.png", bomb_png())}, 413, "file"),
        ({"file": ("a.jpg", jpeg()), "caption": "x" * 10_000}, 400, "caption"),
        ({"file": ("a.jpg", jpeg()), "visibility": "friends"}, 400, "visibility"),
        ({"file": ("a.jpg", jpeg()), "location_id": "99"}, 400, "location_id"),
        ({"file": ("a.jpg", jpeg()), "location_id": "abc"}, 400, "location_id"),
        ({"file": ("a.jpg", jpeg()), "owner_id": "someone"}, 400, "owner_id"),
    ],
)
def test_bad_upload_writes_nothing(client, app, api, parts, status, field):
    user = api.user()
    result = post_file(client, user, parts)
    assert result.status_code == status, result.text
    assert result.json["description"].startswith(f"{field}:")
    assert photo_rows(app) == 0
    assert stored_files(app) == [] and temp_files(app) == []


@pytest.mark.security
def test_upload_needs_a_valid_token(client, app):
    body, content_type = multipart({"file": ("a.jpg", jpeg())})
    anonymous = client.simulate_post(
        "/api/v1/photos", body=body, headers={"Content-Type": content_type}
    )
    assert anonymous.status_code == 401
    revoked = client.simulate_post(
        "/api/v1/photos",
        body=body,
        headers={"Content-Type": content_type, "Authorization": "Bearer " + "x" * 43},
    )
    assert revoked.status_code == 401
    assert photo_rows(app) == 0


def test_upload_over_max_upload_mb_is_413(make_app):
    import falcon.testing

    from tests.conftest import Api

    app = make_app(MAX_UPLOAD_MB="0.01")  # about 10 KB
    client = falcon.testing.TestClient(app)
    api = Api(client)
    user = api.user()
    noise = Image.effect_noise((200, 200), 100).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "PNG")
    result = post_file(client, user, {"file": ("big.png", out.getvalue())})
    assert result.status_code == 413
    assert result.json["description"].startswith("file:")
    assert photo_rows(app) == 0 and temp_files(app) == []


def test_quota_is_507_and_writes_nothing(make_app):
    import falcon.testing

    from tests.conftest import Api

    app = make_app(MAX_STORAGE_GB=str(20_000 / 1024**3))  # about 20 KB
    client = falcon.testing.TestClient(app)
    api = Api(client)
    user = api.user()
    api.upload(user, jpeg(50, 50))  # small: fits
    noise = io.BytesIO()
    Image.effect_noise((200, 200), 100).convert("RGB").save(noise, "JPEG", quality=95)
    result = post_file(client, user, {"file": ("a.jpg", noise.getvalue())})
    assert result.status_code == 507
    assert result.json["description"].startswith("file:")
    assert photo_rows(app) == 1 and len(stored_files(app)) == 2


def test_wrong_content_type_is_415(client, api):
    user = api.user()
    result = client.simulate_post("/api/v1/photos", json={"file": "abc"}, headers=user["headers"])
    assert result.status_code == 415


def test_failed_commit_takes_back_the_files(app, api, monkeypatch):
    """A transaction that does not commit leaves no file behind."""
    from sqlalchemy.orm import Session

    user = api.user()

    def failing_commit(self):
        raise RuntimeError("commit failed")

    monkeypatch.setattr(Session, "commit", failing_commit)
    body, content_type = multipart({"file": ("a.jpg", jpeg())})
    result = api.client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )
    monkeypatch.undo()
    assert result.status_code == 500
    assert photo_rows(app) == 0
    assert stored_files(app) == []


def test_photo_json_has_exactly_the_documented_shape(client, api):
    """The photo JSON is built by hand for speed; it must match PhotoSchema (and so the
    OpenAPI document) field for field, and load back through it."""
    from lumen.schemas import PhotoSchema

    photo = api.upload(api.user())
    assert set(photo) == set(PhotoSchema().fields)
    assert set(photo["urls"]) == {"original", "thumbnail"}
    assert PhotoSchema().dump(PhotoSchema().load(photo)) == photo


# --- lists: links, filters and limits, exactly --------------------------------------------------


def links(answer) -> dict[str, dict[str, str]]:
    """The Link header as {rel: query parameters of its target}, each target under this path."""
    from urllib.parse import parse_qsl, urlsplit

    found = {}
    header = answer.headers.get("link")
    for part in header.split(", ") if header else ():
        target, rel = part.split("; ")
        assert target.startswith("<") and target.endswith(">"), part
        url = urlsplit(target[1:-1])
        assert rel.startswith('rel="') and rel.endswith('"'), part
        found[rel[5:-1]] = {"path": url.path, **dict(parse_qsl(url.query))}
    return found


def test_link_targets_carry_the_filters_the_limit_and_a_cursor_or_the_previous_offset(client, api):
    ada, bob = api.user(), api.user()
    ids = [api.upload(ada)["id"] for _ in range(5)][::-1]  # newest first
    api.upload(bob)
    path = f"/api/v1/users/{ada['id']}/photos"
    first = client.simulate_get("/api/v1/photos", params={"owner_id": ada["id"], "limit": 2})
    (rel,) = links(first)
    assert rel == "next"
    following = links(first)["next"]
    assert following.keys() == {"path", "owner_id", "limit", "cursor"}
    assert (following["path"], following["owner_id"], following["limit"]) == (
        "/api/v1/photos",
        ada["id"],
        "2",
    )
    # An offset page (kept for compatibility) goes on by cursor and back by offset.
    middle = client.simulate_get(path, params={"limit": 2, "offset": 1})
    assert [p["id"] for p in middle.json] == ids[1:3]
    assert links(middle)["prev"] == {"path": path, "limit": "2", "offset": "0"}
    assert links(middle)["next"].keys() == {"path", "limit", "cursor"}
    after_middle = {k: v for k, v in links(middle)["next"].items() if k != "path"}
    assert [p["id"] for p in client.simulate_get(path, params=after_middle).json] == ids[3:5]
    # Following the links walks every photo once, in order, and ends with no next.
    seen, params = [], {"limit": "2"}
    for _ in range(5):
        page = client.simulate_get(path, params=params)
        seen += [p["id"] for p in page.json]
        if "next" not in links(page):
            break
        params = {k: v for k, v in links(page)["next"].items() if k != "path"}
    assert seen == ids
    assert links(page).keys() == {"prev"}
    back = {k: v for k, v in links(page)["prev"].items() if k != "path"}
    assert [p["id"] for p in client.simulate_get(path, params=back).json] == ids[2:4]
    # Exactly at the end: a page holding every photo has no next.
    exact = client.simulate_get(path, params={"limit": 5})
    assert len(exact.json) == 5 and "next" not in links(exact) and "link" not in exact.headers


class FakeGazetteer:
    """Two cities, answered through the lookup hook the locations plugin implements."""

    CITIES = {
        101: {"id": 101, "name": "Aachen", "country_code": "DE"},
        202: {"id": 202, "name": "Bergen", "country_code": "NO"},
    }

    @hookimpl
    def lumen_location_lookup(self, lumen, location_ids):
        return {i: self.CITIES[i] for i in location_ids if i in self.CITIES}


def test_the_location_filter_lists_the_photos_of_that_city_only(make_app):
    import falcon.testing

    from tests.conftest import Api

    client = falcon.testing.TestClient(make_app(FakeGazetteer()))
    api = Api(client)
    owner = api.user()
    aachen = [api.upload(owner, location_id="101")["id"] for _ in range(2)][::-1]
    bergen = api.upload(owner, location_id="202")["id"]
    api.upload(owner)  # nowhere
    private = api.upload(owner, location_id="101", visibility="private")["id"]

    listed = client.simulate_get("/api/v1/photos", params={"location_id": "101"})
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json] == aachen
    assert listed.headers["x-total-count"] == "2"
    assert {p["location"]["name"] for p in listed.json} == {"Aachen"}
    own = client.simulate_get(
        "/api/v1/photos", params={"location_id": "101"}, headers=owner["headers"]
    )
    assert [p["id"] for p in own.json] == [private, *aachen]
    other = client.simulate_get("/api/v1/photos", params={"location_id": "202"})
    assert [p["id"] for p in other.json] == [bergen]
    paged = client.simulate_get("/api/v1/photos", params={"location_id": "101", "limit": 1})
    assert links(paged)["next"]["location_id"] == "101"
    nowhere = client.simulate_get("/api/v1/photos", params={"location_id": "303"})
    assert (nowhere.status_code, nowhere.json) == (200, [])


@pytest.mark.parametrize(
    "params, status",
    [
        ({"limit": "1"}, 200),
        ({"limit": "100"}, 200),
        ({"limit": "101"}, 400),
        ({"limit": "0"}, 400),
        ({"offset": "0"}, 200),
        ({"offset": "-1"}, 400),
        ({"offset": "10000"}, 200),
        ({"offset": "10001"}, 400),
        ({"location_id": "1"}, 200),
        ({"location_id": "0"}, 400),
        ({"location_id": str(2**31 - 1)}, 200),
        ({"location_id": str(2**31)}, 400),
    ],
)
def test_list_parameters_exactly_at_and_one_past_their_limits(client, params, status):
    answer = client.simulate_get("/api/v1/photos", params=params)
    assert answer.status_code == status, answer.text
    if status == 400:
        (name,) = params
        assert answer.json["description"].startswith(f"{name}: must be")
    else:
        assert answer.json == []


def test_a_list_of_exactly_limit_photos_and_one_more(client, api):
    owner = api.user()
    for _ in range(3):
        api.upload(owner)
    three = client.simulate_get("/api/v1/photos", params={"limit": 3})
    assert len(three.json) == 3 and "link" not in three.headers
    two = client.simulate_get("/api/v1/photos", params={"limit": 2})
    assert len(two.json) == 2 and "cursor" in links(two)["next"]
    following = {k: v for k, v in links(two)["next"].items() if k != "path"}
    rest = client.simulate_get("/api/v1/photos", params=following)
    assert len(rest.json) == 1 and "next" not in links(rest)


@pytest.mark.parametrize("length, status", [(2000, 200), (2001, 400)])
def test_a_caption_exactly_at_its_limit_and_one_past_it(client, api, length, status):
    owner = api.user()
    photo = api.upload(owner, caption="before")
    url = f"/api/v1/photos/{photo['id']}"
    answer = client.simulate_patch(url, json={"caption": "é" * length}, headers=owner["headers"])
    assert answer.status_code == status
    kept = client.simulate_get(url).json["caption"]
    assert kept == ("é" * length if status == 200 else "before")
    if status == 400:
        assert answer.json["description"] == "caption: must be at most 2000 characters"


@pytest.mark.parametrize("extra, status", [(0, 201), (1, 413)])
def test_an_upload_exactly_at_max_upload_mb_and_one_byte_past_it(make_app, extra, status):
    import falcon.testing

    from tests.conftest import Api

    image = jpeg(32, 32)
    limit_mb = len(image) / (1024 * 1024)
    app = make_app(MAX_UPLOAD_MB=repr(limit_mb))
    api = Api(falcon.testing.TestClient(app))
    # A JPEG decoder stops at its end-of-image marker: trailing bytes change only the size.
    data = image if extra == 0 else image + b"\0"
    assert int(app.lumen.settings.max_upload_mb * 1024 * 1024) == len(image)
    api.upload(api.user(), data, expect=status)
    assert photo_rows(app) == (1 if status == 201 else 0)
