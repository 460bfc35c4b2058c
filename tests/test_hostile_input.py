"""Hostile input through the API, on SQLite and PostgreSQL: each case is a 4xx JSON error whose
description names the field and the rule, and the same answer on both backends (see
docs/reliability.md for the list)."""

from __future__ import annotations

import json
import struct
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select

from lumen.models import Photo, User
from lumen.resources.paging import UUID_RULE, Cursor
from lumen.schemas import (
    CAPTION_CONTROLS_RULE,
    DISPLAY_NAME_CONTROLS_RULE,
    FORM_TEXT_RULE,
    NESTING_RULE,
    NUL_RULE,
    SURROGATE_RULE,
)
from tests.conftest import jpeg, multipart

pytestmark = pytest.mark.security


def count(app, model) -> int:
    with app.lumen.Session() as session:
        return session.scalar(select(func.count()).select_from(model))


def assert_invalid(result, field: str, rule: str, status: int = 400) -> None:
    assert result.status_code == status, result.text
    assert set(result.json) >= {"title", "description"}, result.text
    assert result.json["description"] == f"{field}: {rule}"


def json_endpoints(api):
    """(method, path, headers, a valid body) for every endpoint that reads a JSON body."""
    owner = api.user()
    photo = api.upload(owner)
    return [
        ("POST", "/api/v1/users", {}, {"username": "someone", "password": "long enough"}),
        ("POST", "/api/v1/tokens", {}, {"username": "someone", "password": "long enough"}),
        ("PATCH", f"/api/v1/users/{owner['id']}", owner["headers"], {"display_name": "N"}),
        ("PATCH", f"/api/v1/photos/{photo['id']}", owner["headers"], {"caption": "C"}),
    ]


def send(client, method, path, headers, body: bytes | str):
    return client.simulate_request(
        method, path, body=body, headers={**headers, "Content-Type": "application/json"}
    )


# --- item 7: nesting -------------------------------------------------------------------------


def test_deeply_nested_bodies_are_400_on_every_json_endpoint(client, api):
    endpoints = json_endpoints(api)
    deep = 100_000
    bodies = [
        "[" * deep + "]" * deep,
        '{"username": ' + "[" * deep + "]" * deep + "}",
        '{"caption": ' + '{"a": ' * deep + "1" + "}" * deep + "}",
    ]
    for method, path, headers, _valid in endpoints:
        for body in bodies:
            result = send(client, method, path, headers, body)
            assert_invalid(result, "body", NESTING_RULE)


def test_a_nested_value_a_parser_can_read_is_refused_by_the_schema(client):
    body = {"username": [[["ada"]]], "password": "long enough"}
    result = client.simulate_post("/api/v1/users", json=body)
    assert result.status_code == 400
    assert result.json["description"].startswith("username:")


# --- item 8: NUL and lone surrogates ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [("a\\u0000b", NUL_RULE), ("a\\ud800b", SURROGATE_RULE), ("\\udfff", SURROGATE_RULE)],
)
def test_nul_and_lone_surrogates_are_400_naming_the_field_in_every_json_body(
    client, app, api, text, rule
):
    for method, path, headers, valid in json_endpoints(api):
        for field in valid:
            raw = json.dumps(valid)[:-1] + f', "{field}": "{text}"}}'  # the last value counts
            assert_invalid(send(client, method, path, headers, raw), field, rule)
            # Deeper inside a value, and as a key.
            nested = json.dumps({**valid, field: ["x"]}).replace('["x"]', f'["{text}"]')
            assert_invalid(send(client, method, path, headers, nested), field, rule)
            keyed = json.dumps(valid)[:-1] + f', "{text}": 1}}'
            assert_invalid(send(client, method, path, headers, keyed), "body", rule)
    assert count(app, User) == 1  # the owner json_endpoints made


def test_a_surrogate_pair_is_one_character_and_accepted(client):
    body = '{"username": "pair", "password": "long enough", "display_name": "\\ud83d\\ude00"}'
    result = send(client, "POST", "/api/v1/users", {}, body)
    assert result.status_code == 201, result.text
    assert result.json["display_name"] == "\U0001f600"


def multipart_text(name: str, data: bytes, charset: str | None = None) -> tuple[bytes, str]:
    """A form with a real image and one text part of raw bytes, in a declared charset."""
    boundary = uuid.uuid4().hex
    content_type = f"text/plain; charset={charset}" if charset else "text/plain"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + jpeg()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("data", "charset", "rule"),
    [
        (b"a\x00b", None, NUL_RULE),
        # A part may name its charset; some decode to lone surrogates.
        (b"a\\ud800b", "unicode_escape", SURROGATE_RULE),
        (b"a\\x00b", "unicode_escape", NUL_RULE),
        (b"a\\u202eb", "unicode_escape", CAPTION_CONTROLS_RULE),
    ],
)
def test_a_caption_in_a_form_is_held_to_the_same_rules(client, app, api, data, charset, rule):
    user = api.user()
    body, content_type = multipart_text("caption", data, charset)
    result = client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )
    assert_invalid(result, "caption", rule)
    assert count(app, Photo) == 0


@pytest.mark.parametrize(
    ("data", "charset"),
    [(b"a\xffb", None), (b"\xed\xa0\x80", None), (b"abc", "no-such-charset")],
)
def test_a_form_field_that_is_not_text_is_400_naming_it(client, app, api, data, charset):
    user = api.user()
    body, content_type = multipart_text("caption", data, charset)
    result = client.simulate_post(
        "/api/v1/photos", body=body, headers={**user["headers"], "Content-Type": content_type}
    )
    assert_invalid(result, "caption", FORM_TEXT_RULE)
    assert count(app, Photo) == 0


@pytest.mark.parametrize(
    ("path", "query", "field", "rule"),
    [
        ("/api/v1/photos", "owner_id=%00", "owner_id", UUID_RULE),
        ("/api/v1/photos", "location_id=1%00", "location_id", "must be an integer from 1 to "),
        ("/api/v1/photos", "limit=%00", "limit", "must be an integer from 1 to 100"),
        ("/api/v1/photos", "offset=%ED%A0%80", "offset", "must be an integer from 0 to "),
    ],
)
def test_nul_in_query_parameters_is_400_naming_them(client, path, query, field, rule):
    result = client.simulate_get(path, query_string=query)
    assert result.status_code == 400, result.text
    assert result.json["description"].startswith(f"{field}: {rule}")


# --- item 11: ids only in their canonical form -----------------------------------------------


def spellings(canonical: str) -> list[str]:
    """Other ways of writing the same UUID that uuid.UUID() accepts."""
    arabic = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in canonical)
    return [
        arabic,
        canonical.upper(),
        "{" + canonical + "}",
        canonical.replace("-", ""),
        "urn:uuid:" + canonical,
    ]


def test_ids_resolve_only_in_canonical_form(client, api):
    owner = api.user()
    photo = api.upload(owner)
    assert client.simulate_get(f"/api/v1/users/{owner['id']}").status_code == 200
    for user_id in spellings(owner["id"]):
        for path in (f"/api/v1/users/{user_id}", f"/api/v1/users/{user_id}/photos"):
            result = client.simulate_get(path)
            assert result.status_code == 404, (path, result.text)
            assert result.json["description"] == "id: no such resource"
        listed = client.simulate_get("/api/v1/photos", params={"owner_id": user_id})
        assert_invalid(listed, "owner_id", UUID_RULE)
    for photo_id in spellings(photo["id"]):
        assert client.simulate_get(f"/api/v1/photos/{photo_id}").status_code == 404


def test_link_headers_are_built_from_canonical_values(client, api):
    owner = api.user()
    for _ in range(3):
        api.upload(owner)
    pages = [
        (f"/api/v1/users/{owner['id']}/photos", "limit=1&offset=1&junk=%D9%A3"),
        ("/api/v1/photos", f"owner_id={owner['id']}&limit=1&offset=1&junk=%D9%A3"),
    ]
    for path, query in pages:
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 200, result.text
        link = result.headers["link"]
        assert link.isascii() and "junk" not in link, link
        owner_query = "" if "users" in path else f"owner_id={owner['id']}&"
        second = client.simulate_get(path, query_string=query.replace("&junk=%D9%A3", "")).json
        cursor = Cursor(datetime.fromisoformat(second[0]["created_at"]), uuid.UUID(second[0]["id"]))
        assert link == (
            f'<{path}?{owner_query}limit=1&cursor={cursor.encode()}>; rel="next", '
            f'<{path}?{owner_query}limit=1&offset=0>; rel="prev"'
        )


# --- item 12: controls and bidi overrides in what other users see ----------------------------


@pytest.mark.parametrize(
    "name",
    [
        "evil\u202elapyap",  # right-to-left override: displays as "evilpaypal"
        "a\u202ab",
        "a\u202cb",
        "a\u2066b",
        "a\u2069b",
        "\x1b[31mred",
        "two\nlines",
        "tab\there",
        "next\x85line",  # C1
        "del\x7f",
    ],
)
def test_display_names_refuse_controls_and_bidi_overrides(client, app, api, name):
    refused = client.simulate_post(
        "/api/v1/users",
        json={"username": "mallory", "password": "long enough", "display_name": name},
    )
    assert_invalid(refused, "display_name", DISPLAY_NAME_CONTROLS_RULE)
    user = api.user(display_name="Plain")
    patched = client.simulate_patch(
        f"/api/v1/users/{user['id']}", json={"display_name": name}, headers=user["headers"]
    )
    assert_invalid(patched, "display_name", DISPLAY_NAME_CONTROLS_RULE)
    assert client.simulate_get(f"/api/v1/users/{user['id']}").json["display_name"] == "Plain"


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f469\u200d\U0001f4bb",  # woman technologist: an emoji joined by ZWJ
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian with ZWNJ
        "\u05e9\u05dc\u05d5\u05dd \u200fAda",  # Hebrew with a right-to-left mark
        "Zo\u00eb \u738b",
    ],
)
def test_display_names_keep_joiners_and_scripts(client, name):
    result = client.simulate_post(
        "/api/v1/users",
        json={"username": "joiner", "password": "long enough", "display_name": name},
    )
    assert result.status_code == 201, result.text
    assert result.json["display_name"] == name


def test_captions_keep_tabs_and_line_breaks_and_refuse_other_controls(client, api):
    owner = api.user()
    photo = api.upload(owner)
    url = f"/api/v1/photos/{photo['id']}"
    for caption in ("line one\nline two", "a\tb", "windows\r\nline", "\U0001f469\u200d\U0001f4bb"):
        result = client.simulate_patch(url, json={"caption": caption}, headers=owner["headers"])
        assert result.status_code == 200, result.text
        assert result.json["caption"] == caption
    nul = client.simulate_patch(url, json={"caption": "a\x00b"}, headers=owner["headers"])
    assert_invalid(nul, "caption", NUL_RULE)
    for caption in ("a\rb", "a\x1bb", "a\x9bb", "\u202etxt.exe", "a\u2068b"):
        result = client.simulate_patch(url, json={"caption": caption}, headers=owner["headers"])
        assert_invalid(result, "caption", CAPTION_CONTROLS_RULE)
    body, content_type = multipart({"file": ("a.jpg", jpeg()), "caption": "x\u202ey"})
    uploaded = client.simulate_post(
        "/api/v1/photos", body=body, headers={**owner["headers"], "Content-Type": content_type}
    )
    assert_invalid(uploaded, "caption", CAPTION_CONTROLS_RULE)


# --- item 9 and item 2 through the API -------------------------------------------------------


def malformed_exif_jpeg(width=64, height=48) -> bytes:
    """A JPEG whose EXIF says "rotate 90 degrees" and holds a SHORT tag written as a negative
    SSHORT: Pillow reads it, and ImageOps.exif_transpose then fails re-encoding it
    (struct.error: ushort format requires 0 <= number <= 65535)."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 8, 1, struct.pack("<hh", -3, 0))]
    tiff = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, number, value in entries:
        tiff += struct.pack("<HHI", tag, kind, number) + value
    payload = b"Exif\x00\x00" + tiff + struct.pack("<I", 0)
    plain = jpeg(width, height)
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


def test_a_malformed_exif_block_is_not_a_500(client, api):
    owner = api.user()
    body, content_type = multipart({"file": ("a.jpg", malformed_exif_jpeg(64, 48))})
    result = client.simulate_post(
        "/api/v1/photos", body=body, headers={**owner["headers"], "Content-Type": content_type}
    )
    assert result.status_code == 201, result.text
    assert (result.json["width"], result.json["height"]) == (48, 64)  # turned upright


def test_more_pixels_than_max_image_megapixels_is_413_naming_the_rule(make_app, backend):
    import falcon.testing

    from tests.conftest import Api

    app = make_app(MAX_IMAGE_MEGAPIXELS="0.003")  # 3,000 pixels
    client = falcon.testing.TestClient(app)
    api = Api(client)
    owner = api.user()
    api.upload(owner, jpeg(60, 50))  # exactly 3,000
    body, content_type = multipart({"file": ("a.jpg", jpeg(61, 50))})
    result = client.simulate_post(
        "/api/v1/photos", body=body, headers={**owner["headers"], "Content-Type": content_type}
    )
    assert_invalid(
        result, "file", "must be at most 0.003 megapixels (MAX_IMAGE_MEGAPIXELS), not 61x50", 413
    )
    assert count(app, Photo) == 1
    assert not [p for p in app.lumen.storage.files() if p.parent.name == "tmp"]


def test_the_schemas_hold_the_rules_without_a_json_body():
    """`lumen users create` validates through UserCreateSchema, not load_body."""
    from marshmallow import ValidationError

    from lumen.schemas import UserCreateSchema

    for body, field, rule in (
        ({"password": "long\x00enough"}, "password", NUL_RULE),
        ({"password": "long\ud800enough"}, "password", SURROGATE_RULE),
        ({"display_name": "a\u202eb"}, "display_name", DISPLAY_NAME_CONTROLS_RULE),
    ):
        with pytest.raises(ValidationError) as refused:
            UserCreateSchema().load({"username": "cli_user", "password": "long enough", **body})
        assert refused.value.normalized_messages() == {field: [rule]}
