"""lumen.headers (headers_of, add_vary, status_of) and the conditional plugin's ETags: each
remembers what it computed, and none may ever answer with what it remembered for another input."""

from __future__ import annotations

import hashlib
from http import HTTPStatus

import falcon
import pytest

from lumen import add_vary, headers_of, lower_case_names, status_of
from lumen_plugins.conditional import REMEMBERED_BODY_BYTES, SMALL_BODY_BYTES, etag_of


def vary_after(initial: str | None, *calls: tuple[str, ...]) -> str | None:
    resp = falcon.Response()
    if initial is not None:
        resp.set_header("Vary", initial)
    for names in calls:
        add_vary(resp, *names)
    return resp.get_header("Vary")


def test_add_vary_keeps_what_is_there_and_adds_each_name_once():
    assert vary_after(None, ("Origin",)) == "Origin"
    assert vary_after(None, ("Origin",), ("Authorization",), ("origin",)) == "Origin, Authorization"
    assert vary_after("Accept", ("Origin", "Accept")) == "Accept, Origin"
    assert vary_after("*", ("Origin",)) == "*"
    # The same call on other responses, after the first was remembered: the same answers.
    for _ in range(3):
        assert vary_after("Cookie", ("Origin",)) == "Cookie, Origin"
        assert vary_after(None, ("Origin",)) == "Origin"


def digest(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'


def test_an_etag_is_the_digest_of_its_body_whether_remembered_or_not():
    small = b'{"photo":"a"}' * 10
    medium = b"y" * (SMALL_BODY_BYTES + 1)
    large = b"x" * (REMEMBERED_BODY_BYTES + 1)
    for body in (small, medium, large, small, medium, large):
        assert etag_of(body) == digest(body)
    # A body equal in length and all but one byte, and a copy that is another bytes object.
    changed = small[:-1] + b"!"
    assert etag_of(changed) == digest(changed) != etag_of(small)
    assert etag_of(bytes(bytearray(small))) == etag_of(small)
    assert etag_of(medium[:-1] + b"!") == digest(medium[:-1] + b"!") != etag_of(medium)


@pytest.mark.unit
@pytest.mark.parametrize(
    "status", [falcon.HTTP_200, falcon.HTTP_304, "429 Too Many Requests", 201, HTTPStatus.NOT_FOUND]
)
def test_status_of_is_falcons_status_code_whatever_the_status_was_set_as(status):
    resp = falcon.Response()
    resp.status = status
    assert status_of(resp) == resp.status_code
    resp.status = falcon.HTTP_500  # a status set again is read again
    assert status_of(resp) == 500


def test_headers_written_through_headers_of_are_falcons_own():
    resp = falcon.Response()
    resp.set_header("Content-Type", "application/json")
    headers = headers_of(resp)
    assert headers.get("content-type") == "application/json"
    headers.update(lower_case_names({"X-Frame-Options": "DENY", "Cache-Control": "no-store"}))
    headers["etag"] = 'W/"abc"'
    # What falcon reads and what it hands the WSGI server.
    assert resp.get_header("X-Frame-Options") == "DENY"
    assert resp.etag == 'W/"abc"'
    assert ("cache-control", "no-store") in resp._wsgi_headers()
    resp.set_header("Vary", "Origin")
    add_vary(resp, "Authorization")
    assert resp.get_header("vary") == "Origin, Authorization"


def test_a_block_of_headers_never_carries_a_cookie():
    assert lower_case_names({"ETag": 1}) == {"etag": "1"}
    with pytest.raises(ValueError, match="Set-Cookie"):
        lower_case_names({"Set-Cookie": "a=b"})
