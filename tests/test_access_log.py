"""gunicorn's access log (lumen/access_log.py) against a real gunicorn: requests with hostile
paths and headers, sent byte for byte over a raw socket, each give one line that parses as JSON,
and no line holds a secret the request carried."""

from __future__ import annotations

import json
import socket
import time

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.security,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

TOKEN = "s3cr3t-bearer-token-value"
QUERY_TOKEN = "s3cr3t-query-token-value"
DB_PASSWORD = "s3cr3t-db-password"


def send(port: int, raw: bytes) -> bytes:
    """One request as raw bytes on a connection of its own; the answer's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def request(path: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


HOSTILE = {
    # A percent-encoded newline and a forged line in the path, a token in the query string.
    "newline": request(
        b'/api/v1/photos%0A{"remote":"6.6.6.6","status":200}?token=' + QUERY_TOKEN.encode(),
        b"Authorization: Bearer " + TOKEN.encode(),
    ),
    # Quotes and backslashes in the User-Agent, a token in the Authorization header.
    "quotes": request(
        b"/api/v1/photos?access_token=" + QUERY_TOKEN.encode(),
        b'User-Agent: evil\\", "status": 200, "x": "\\\\',
        b"Authorization: Bearer " + TOKEN.encode(),
    ),
    # Bytes that are not UTF-8, percent-encoded in the path and raw in the User-Agent.
    "not utf-8": request(b"/caf%C3%A9/%FF%FE%22%5C", b"User-Agent: \xff\xfe\x80\x22\x5c"),
    # A raw byte that is not UTF-8 in the path itself (gunicorn refuses the request line, and
    # writes it to its error log, without the query string).
    "raw byte": request(b"/photos/\xff\xfe?token=" + QUERY_TOKEN.encode()),
    # A header gunicorn refuses (answered 400 by gunicorn, logged from its partial request).
    "bad header": request(b"/api/v1/photos?token=" + QUERY_TOKEN.encode(), b"Bad Header: x"),
    # A secret of the settings sent back by a client.
    "setting secret": request(b"/api/v1/photos", b"User-Agent: " + DB_PASSWORD.encode()),
}


def test_every_access_line_is_json_and_carries_no_secret(environ, tmp_path, gunicorn_server):
    access_log = tmp_path / "access.log"
    server = gunicorn_server(
        {**environ, "GUNICORN_ACCESS_LOG": str(access_log), "DB_PASSWORD": DB_PASSWORD},
        workers=1,
    )
    statuses = {name: send(server.port, raw) for name, raw in HOSTILE.items()}
    assert statuses["newline"].startswith(b"HTTP/1.1 404")
    assert statuses["quotes"].startswith(b"HTTP/1.1 401")  # not a token it issued
    answered = [name for name, status in statuses.items() if status.startswith(b"HTTP/1.1")]
    assert len(answered) == len(HOSTILE), statuses

    def lines() -> list[str]:
        return access_log.read_text(encoding="utf-8").splitlines() if access_log.exists() else []

    deadline = time.monotonic() + 15
    # gunicorn answers a request line or a header name it cannot parse (400) before there is a
    # request to log: every other request is one line.
    while len(lines()) < len(HOSTILE) - 2:
        assert time.monotonic() < deadline, (statuses, lines(), server.log()[-3000:])
        time.sleep(0.05)
    assert statuses["raw byte"].startswith(b"HTTP/1.1 400")
    assert statuses["bad header"].startswith(b"HTTP/1.1 400")
    assert "Invalid request from ip=127.0.0.1" in server.log()
    text = access_log.read_bytes()
    for secret in (TOKEN, QUERY_TOKEN, DB_PASSWORD):
        assert secret.encode() not in text
        assert secret not in server.log()
    entries = [json.loads(line) for line in lines()]  # every line parses
    assert all(set(entry) >= {"remote", "method", "path", "status"} for entry in entries)
    assert {entry["remote"] for entry in entries} == {"127.0.0.1"}
    by_path = {entry["path"]: entry for entry in entries}

    forged = '/api/v1/photos\n{"remote":"6.6.6.6","status":200}'
    assert by_path[forged]["status"] == 404
    quoted = [e for e in entries if e["user_agent"] == 'evil\\", "status": 200, "x": "\\\\']
    assert len(quoted) == 1 and quoted[0]["status"] == 401
    assert by_path['/café/\\xff\\xfe"\\']["user_agent"] == '\\xff\\xfe\\x80"\\'
    assert all("token" not in json.dumps(entry) for entry in entries)
    assert any(entry["user_agent"] == "********" for entry in entries)
    assert all(isinstance(entry["duration_us"], int) for entry in entries)
