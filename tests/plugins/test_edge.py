"""The edge plugins on the real app (both backends): security headers on every kind of answer,
compression on and off, ETags and 304s of JSON reads, their start-up errors, and all three under
gunicorn."""

from __future__ import annotations

import gzip
import http.client
import json

import falcon.testing
import pytest

from lumen.config import ConfigError
from lumen_plugins.compression import accepted
from lumen_plugins.conditional import matches
from tests.conftest import Api

EDGE = "security_headers,compression,conditional,health"
pytestmark = pytest.mark.security


@pytest.fixture
def edge(make_app):
    app = make_app(LUMEN_PLUGINS=EDGE, COMPRESSION_MIN_BYTES="200")
    return Api(falcon.testing.TestClient(app))


def _photos(api: Api, count: int):
    owner = api.user()
    return owner, [api.upload(owner, caption=f"photo {n} " + "x" * 80) for n in range(count)]


# --- security headers --------------------------------------------------------------------------

EVERYWHERE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _has(result, headers: dict) -> None:
    for name, value in headers.items():
        assert result.headers.get(name) == value, (name, result.headers)


def test_every_kind_of_answer_carries_the_headers(edge):
    owner, [photo] = _photos(edge, 1)
    client = edge.client
    answers = {
        "json": client.simulate_get(f"/api/v1/photos/{photo['id']}"),
        "error": client.simulate_get("/api/v1/photos/00000000-0000-0000-0000-000000000000"),
        "unrouted": client.simulate_get("/nowhere"),
        "image": client.simulate_get(f"/api/v1/photos/{photo['id']}/image"),
        "probe": client.simulate_get("/livez"),
        "write": client.simulate_patch(
            f"/api/v1/photos/{photo['id']}", json={"caption": "c"}, headers=owner["headers"]
        ),
    }
    for kind, result in answers.items():
        _has(result, EVERYWHERE)
        assert "Strict-Transport-Security" not in result.headers, kind  # not in development
    json_csp = "default-src 'none'; frame-ancestors 'none'"
    for kind in ("json", "error", "unrouted", "write"):
        assert answers[kind].headers["Content-Security-Policy"] == json_csp, kind
        assert answers[kind].headers["Cross-Origin-Resource-Policy"] == "same-origin", kind
    image = answers["image"]
    assert image.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert image.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_cache_control_says_who_may_keep_a_json_answer(edge, make_app):
    owner, [photo] = _photos(edge, 1)
    client, url = edge.client, f"/api/v1/photos/{photo['id']}"
    anonymous = client.simulate_get(url)
    assert anonymous.headers["Cache-Control"] == "public, max-age=0"
    assert "Authorization" in anonymous.headers["Vary"]
    signed_in = client.simulate_get(url, headers=owner["headers"])
    assert signed_in.headers["Cache-Control"] == "private, no-cache"
    missing = client.simulate_get("/api/v1/photos/00000000-0000-0000-0000-000000000000")
    assert missing.headers["Cache-Control"] == "no-store"
    written = client.simulate_patch(url, json={"caption": "d"}, headers=owner["headers"])
    assert written.status_code == 200 and written.headers["Cache-Control"] == "no-store"
    # A resource's own Cache-Control stands: probes are never stored, images are immutable.
    assert client.simulate_get("/livez").headers["Cache-Control"] == "no-store"
    image = client.simulate_get(photo["urls"]["original"])
    assert "immutable" in image.headers["Cache-Control"]
    longer = make_app(LUMEN_PLUGINS=EDGE, PUBLIC_CACHE_MAX_AGE="30")
    again = falcon.testing.TestClient(longer).simulate_get(url)
    assert again.headers["Cache-Control"] == "public, max-age=30"


def test_production_adds_strict_transport_security(make_app):
    app = make_app(LUMEN_PLUGINS="security_headers", ENVIRONMENT="production", HSTS_MAX_AGE="600")
    result = falcon.testing.TestClient(app).simulate_get("/nowhere")
    assert result.headers["Strict-Transport-Security"] == "max-age=600; includeSubDomains"


# --- compression -------------------------------------------------------------------------------


def test_large_json_is_gzipped_for_clients_that_accept_it(edge):
    _photos(edge, 4)
    client = edge.client
    plain = client.simulate_get("/api/v1/photos")
    assert "Content-Encoding" not in plain.headers
    assert "Accept-Encoding" in plain.headers["Vary"]
    zipped = client.simulate_get("/api/v1/photos", headers={"Accept-Encoding": "br;q=0, gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert len(zipped.content) < len(plain.content)
    assert json.loads(gzip.decompress(zipped.content)) == plain.json
    refused = client.simulate_get("/api/v1/photos", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


def test_small_bodies_images_and_304s_are_never_compressed(edge):
    owner, [photo] = _photos(edge, 1)
    client, gz = edge.client, {"Accept-Encoding": "gzip"}
    small = client.simulate_get("/livez", headers=gz)
    assert len(small.content) < 200 and "Content-Encoding" not in small.headers
    # The same bytes for every client: nothing to vary on, and a probe is never stored, so it
    # gets no ETag either.
    assert "Accept-Encoding" not in small.headers.get("Vary", "")
    assert "ETag" not in small.headers
    image = client.simulate_get(f"/api/v1/photos/{photo['id']}/image", headers=gz)
    assert "Content-Encoding" not in image.headers and image.content[:2] == b"\xff\xd8"
    first = client.simulate_get("/api/v1/photos", headers=gz)
    again = client.simulate_get(
        "/api/v1/photos", headers={**gz, "If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304 and again.content == b""
    assert "Content-Encoding" not in again.headers


def test_the_preferred_accepted_coding_is_chosen():
    both = ("br", "gzip")
    assert accepted("gzip, deflate, br", both) == "br"
    assert accepted("gzip;q=1.0, br;q=0", both) == "gzip"
    assert accepted("*", both) == "br"
    assert accepted("*;q=0, gzip", both) == "gzip"
    assert accepted("identity", both) is None
    assert accepted("gzip;q=nonsense", both) is None
    assert accepted(None, both) is None


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("COMPRESSION_MIN_BYTES", "-1", "must be greater than or equal to 0"),
        ("COMPRESSION_GZIP_LEVEL", "10", "must be greater than or equal to 1 and less than"),
        ("PUBLIC_CACHE_MAX_AGE", "soon", "not a valid integer"),
        ("HSTS_MAX_AGE", "-5", "must be greater than or equal to 0"),
        ("DOCS_ENABLED", "perhaps", "not a valid boolean"),
    ],
)
def test_a_bad_edge_setting_stops_start_up_with_one_line(make_app, variable, value, rule):
    with pytest.raises(ConfigError) as caught:
        make_app(LUMEN_PLUGINS="compression,security_headers,docs", **{variable: value})
    assert str(caught.value).startswith(f"invalid setting {variable}={value!r}: {rule}")


# --- conditional GET ---------------------------------------------------------------------------


def test_json_reads_carry_an_etag_and_answer_304_until_they_change(edge):
    owner, [photo, _] = _photos(edge, 2)
    client = edge.client
    for url in (
        f"/api/v1/photos/{photo['id']}",
        "/api/v1/photos",
        f"/api/v1/users/{owner['id']}",
        f"/api/v1/users/{owner['id']}/photos",
    ):
        first = client.simulate_get(url)
        etag = first.headers["ETag"]
        assert etag.startswith('W/"'), url
        unchanged = client.simulate_get(url, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b"", url
        assert unchanged.headers["ETag"] == etag
        # Strong or weak, in a list: the comparison is weak.
        listed = client.simulate_get(url, headers={"If-None-Match": f'"x", {etag[2:]}'})
        assert listed.status_code == 304, url
    url = f"/api/v1/photos/{photo['id']}"
    before = client.simulate_get(url).headers["ETag"]
    client.simulate_patch(url, json={"caption": "changed"}, headers=owner["headers"])
    after = client.simulate_get(url, headers={"If-None-Match": before})
    assert after.status_code == 200 and after.json["caption"] == "changed"
    assert after.headers["ETag"] != before
    # The caller who sees more gets another body, so another ETag.
    edge.upload(owner, visibility="private")
    mine = client.simulate_get(f"/api/v1/users/{owner['id']}", headers=owner["headers"])
    theirs = client.simulate_get(f"/api/v1/users/{owner['id']}")
    assert mine.headers["ETag"] != theirs.headers["ETag"]


def test_errors_writes_and_images_keep_their_own_rules(edge):
    owner, [photo] = _photos(edge, 1)
    client = edge.client
    missing = client.simulate_get("/api/v1/photos/00000000-0000-0000-0000-000000000000")
    assert "ETag" not in missing.headers
    written = client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "e"}, headers=owner["headers"]
    )
    assert "ETag" not in written.headers
    image = client.simulate_get(f"/api/v1/photos/{photo['id']}/image")
    assert image.headers["ETag"] == f'"{photo["sha256"]}"'  # the content hash, strong


def test_weak_comparison():
    assert matches('W/"a"', 'W/"a"') and matches('"a"', 'W/"a"') and matches("*", 'W/"a"')
    assert not matches('W/"b"', 'W/"a"') and not matches(None, 'W/"a"')


# --- under gunicorn ----------------------------------------------------------------------------


@pytest.mark.slow
def test_under_gunicorn_the_headers_the_encoding_and_the_304_reach_the_client(
    gunicorn_server, environ, backend
):
    if backend[0] != "postgresql":
        pytest.skip("one real-server run is enough; production runs on PostgreSQL")
    server = gunicorn_server({**environ, "LUMEN_PLUGINS": EDGE, "COMPRESSION_MIN_BYTES": "10"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/health", headers={"Accept-Encoding": "gzip"})
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status == 200
    assert answer.getheader("Server") == "gunicorn"  # no version
    assert answer.getheader("X-Content-Type-Options") == "nosniff"
    assert answer.getheader("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(body))["status"] in ("pass", "warn")
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/api/v1/photos")
    first = connection.getresponse()
    first.read()
    etag = first.getheader("ETag")
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/api/v1/photos", headers={"If-None-Match": etag})
    again = connection.getresponse()
    assert (again.status, again.read()) == (304, b"")
    connection.close()
