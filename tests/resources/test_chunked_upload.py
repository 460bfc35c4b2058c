"""Uploads without Content-Length (Transfer-Encoding: chunked, as mobile clients send), against
a real gunicorn over a raw socket: read to their end within MAX_UPLOAD_MB, or refused."""

import io
import json
import socket
import urllib.request
import uuid
from pathlib import Path

import falcon.testing
import pytest
from PIL import Image

from tests.conftest import jpeg, multipart

pytestmark = pytest.mark.slow


def call(server, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.read()


def token_for(server) -> str:
    credentials = {"username": f"chunk_{uuid.uuid4().hex[:8]}", "password": "correct horse"}
    call(server, "POST", "/api/v1/users", credentials)
    _, body = call(server, "POST", "/api/v1/tokens", credentials)
    return json.loads(body)["token"]


def chunked_post(port: int, path: str, body: bytes, headers: dict, chunk=1000):
    """Send ``body`` in chunks of ``chunk`` bytes, no Content-Length; (status, JSON body)."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += ["Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode())
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the answer is already on its way
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload) if payload else None


def noise_jpeg(side: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((side, side), 100).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def temp_files(storage: Path) -> list[Path]:
    tmp = storage / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def test_a_chunked_upload_under_gunicorn_is_read_to_its_end_within_the_limit(
    environ, clean_db, gunicorn_server
):
    server = gunicorn_server({**environ, "MAX_UPLOAD_MB": "0.05"}, workers=1)  # 52,428 bytes
    headers = {"Authorization": f"Bearer {token_for(server)}"}
    storage = Path(environ["STORAGE_PATH"])

    image = jpeg(64, 48)
    body, content_type = multipart({"file": ("a.jpg", image), "caption": "sent in chunks"})
    status, photo = chunked_post(
        server.port, "/api/v1/photos", body, {**headers, "Content-Type": content_type}
    )
    assert status == 201, photo
    assert photo["caption"] == "sent in chunks" and photo["size_bytes"] == len(image)
    _, served = call(server, "GET", photo["urls"]["original"])
    assert served == image

    # A file past MAX_UPLOAD_MB, and a body past it in a part after a small file: both 413,
    # nothing kept, no temporary file left behind.
    big = noise_jpeg(300)
    assert len(big) > 0.05 * 1024 * 1024
    oversized = [
        {"file": ("big.jpg", big)},
        {"file": ("small.jpg", jpeg()), "caption": "x" * 200_000},
    ]
    for parts in oversized:
        body, content_type = multipart(parts)
        status, error = chunked_post(
            server.port, "/api/v1/photos", body, {**headers, "Content-Type": content_type}
        )
        assert status == 413, error
        assert error["description"] == "file: must be at most 0.05 MB"
    _, listed = call(server, "GET", "/api/v1/photos")
    assert [p["id"] for p in json.loads(listed)] == [photo["id"]]
    assert temp_files(storage) == []
    assert "AssertionError" not in server.log() and "Traceback" not in server.log()


def test_an_upload_of_unknown_length_on_a_server_that_cannot_end_it_is_411(app, api):
    """A WSGI server that does not mark its input terminated gives no way to find the end of a
    body without Content-Length: refused, not guessed."""
    user = api.user()
    body, content_type = multipart({"file": ("a.jpg", jpeg())})
    env = falcon.testing.create_environ(
        method="POST",
        path="/api/v1/photos",
        headers={**user["headers"], "Content-Type": content_type, "Transfer-Encoding": "chunked"},
        body=body,
    )
    del env["CONTENT_LENGTH"]
    env.pop("wsgi.input_terminated", None)
    start = falcon.testing.StartResponseMock()
    answer = json.loads(b"".join(app(env, start)))
    assert start.status.startswith("411")
    assert answer["description"].startswith("Content-Length:")
