"""docs/api.md, /openapi.json and the code say the same: the same routes and methods, the same
request body fields, and the same fields in each kind of answer. A change to one of the three
without the others fails here."""

from __future__ import annotations

import re
from pathlib import Path

import falcon.testing
import pytest

from lumen import schemas
from tests.conftest import Api

DOC = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
METHODS = ("get", "post", "put", "patch", "delete")
_ROUTE = re.compile(r"(GET|POST|PUT|PATCH|DELETE) (/[^\s`|?]*)")
_PARAMS = re.compile(r"{[^}]*}")


def normalise(path: str) -> str:
    """A path with its parameters unnamed: docs say {id}, the code {photo_id}."""
    return _PARAMS.sub("{}", path)


def documented_routes() -> set[tuple[str, str]]:
    """Every METHOD /path the page names; a bare `/path` continues the GET before it (the
    health section lists `GET /health`, `/health/database`, `/health/redis`)."""
    routes = {(m.lower(), normalise(p)) for m, p in _ROUTE.findall(DOC)}
    for line in DOC.splitlines():
        if "`GET /" in line:
            routes |= {("get", normalise(p)) for p in re.findall(r"`(/[^`\s?]*)`", line)}
    return routes


def top_level_names(braced: str) -> list[str]:
    """The quoted names of ``{"a", "b" (a note), "c": {"d"}}``, without the nested ones."""
    names, depth, i = [], 0, 0
    while i < len(braced):
        char = braced[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == '"':
            end = braced.index('"', i + 1)
            if depth == 1:
                names.append(braced[i + 1 : end])
            i = end
        elif char == "(":
            i = braced.index(")", i)  # a note, such as (from EXIF or null)
        i += 1
    return names


def documented_fields(kind: str) -> list[str]:
    """The fields of ``kind:`` `{...}` (it may run over several lines)."""
    match = re.search(rf"^{kind}: `(\{{.*?\}})`", DOC, re.MULTILINE | re.DOTALL)
    assert match, f"docs/api.md describes no {kind}"
    return top_level_names(match.group(1).replace("`", "").replace("\n", " "))


def row(method: str, path: str) -> list[str]:
    """The cells of the table row for METHOD path."""
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].split("?")[0] == f"{method} {path}":
            return cells
    raise AssertionError(f"docs/api.md has no row for {method} {path}")


def documented_body(method: str, path: str) -> set[str]:
    body = row(method, path)[1]
    if body.startswith("(auth") and "multipart" in body:
        return set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", body)))  # notes dropped
    match = re.search(r"`(\{.*\})`", body)
    return set(top_level_names(match.group(1))) if match else set()


@pytest.fixture
def served(make_app):
    """Every installed plugin on (metrics too), its OpenAPI document and a client."""
    app = make_app(LUMEN_PLUGINS="", METRICS_ENABLED="true")
    client = falcon.testing.TestClient(app)
    answer = client.simulate_get("/openapi.json")
    assert answer.status_code == 200
    return app, answer.json, client


def openapi_routes(document) -> set[tuple[str, str]]:
    return {
        (method, normalise(path))
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    }


def code_routes(app) -> set[tuple[str, str]]:
    """What the app routes to: each template and the responders of its resource."""
    return {
        (method, normalise(re.sub(r"{(\w+):[^}]*}", r"{\1}", template)))
        for template, (_, resource) in app.lumen.routes.items()
        for method in METHODS
        if hasattr(resource, f"on_{method}")
    }


def test_the_page_openapi_and_the_code_have_the_same_routes(served):
    app, document, client = served
    documented = documented_routes()
    assert len(documented) >= 18  # the parser found the tables and the sections
    assert documented == openapi_routes(document)
    assert openapi_routes(document) == code_routes(app)
    # And each one answers something other than "no such route" or "method not allowed".
    for method, path in sorted(documented):
        concrete = path.replace("{}", "00000000-0000-0000-0000-000000000001")
        if path.startswith("/api/v1/locations/{}"):
            concrete = path.replace("{}", "1")
        answer = client.simulate_request(method.upper(), concrete)
        assert answer.status_code != 405, (method, path)
        if "{}" not in path:
            assert answer.status_code != 404, (method, path)


def schema_of(document, name: str) -> set[str]:
    return set(document["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize(
    "kind, component, marshmallow",
    [
        ("user", "User", schemas.UserSchema),
        ("photo", "Photo", schemas.PhotoSchema),
        ("city", "City", schemas.CitySchema),
        ("session", "Session", schemas.SessionSchema),
    ],
)
def test_each_kind_of_answer_has_the_documented_fields(served, kind, component, marshmallow):
    _, document, _ = served
    fields = documented_fields(kind)
    assert len(fields) == len(set(fields)) >= 5
    assert set(fields) == schema_of(document, component)
    assert set(fields) == {f.data_key or name for name, f in marshmallow().fields.items()}


def test_a_photos_urls_and_a_token_have_the_documented_fields(served):
    _, document, _ = served
    photo = re.search(r"^photo: `(\{.*?\})`", DOC, re.MULTILINE | re.DOTALL).group(1)
    urls = re.search(r'"urls": (\{[^}]*\})', photo).group(1)
    assert (
        set(top_level_names(urls))
        == schema_of(document, "PhotoUrls")
        == {
            "original",
            "thumbnail",
        }
    )
    token = re.search(r"`(\{[^`]*\})`", row("POST", "/api/v1/tokens")[2]).group(1)
    assert set(top_level_names(token)) == schema_of(document, "Token")


@pytest.mark.parametrize(
    "method, path, openapi_path",
    [
        ("POST", "/api/v1/users", "/api/v1/users"),
        ("POST", "/api/v1/tokens", "/api/v1/tokens"),
        ("PATCH", "/api/v1/users/{id}", "/api/v1/users/{user_id}"),
        ("PATCH", "/api/v1/photos/{id}", "/api/v1/photos/{photo_id}"),
        ("POST", "/api/v1/photos", "/api/v1/photos"),
    ],
)
def test_request_bodies_have_the_documented_fields(served, method, path, openapi_path):
    _, document, _ = served
    documented = documented_body(method, path)
    assert documented
    content = document["paths"][openapi_path][method.lower()]["requestBody"]["content"]
    (media_type,) = content
    schema = content[media_type]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert set(schema["properties"]) == documented


def test_real_answers_have_exactly_the_documented_fields(served):
    app, _, client = served
    api = Api(client)
    user = api.user()
    assert set(client.simulate_get(f"/api/v1/users/{user['id']}").json) == set(
        documented_fields("user")
    )
    photo = api.upload(user)
    assert set(photo) == set(documented_fields("photo"))
    assert set(photo["urls"]) == {"original", "thumbnail"}
    listed = client.simulate_get("/api/v1/photos").json
    assert [set(p) for p in listed] == [set(documented_fields("photo"))]
    token = client.simulate_post(
        "/api/v1/tokens", json={"username": user["username"], "password": "correct horse"}
    )
    documented_token = re.search(r"`(\{[^`]*\})`", row("POST", "/api/v1/tokens")[2]).group(1)
    assert set(token.json) == set(top_level_names(documented_token))
    sessions = client.simulate_get("/api/v1/tokens", headers=user["headers"])
    assert [set(s) for s in sessions.json] == [set(documented_fields("session"))] * 2


def test_documented_query_parameters_are_in_openapi_where_it_lists_any(served):
    """The locations plugin documents its query parameters in OpenAPI; they match the page."""
    _, document, _ = served
    for path in ("/api/v1/locations", "/api/v1/locations/nearest"):
        cell = row("GET", path)[0]
        documented = set(re.findall(r"[?&](\w+)=", cell))
        listed = {
            p["name"]
            for p in document["paths"][path]["get"].get("parameters", [])
            if p["in"] == "query"
        }
        assert documented == listed, path
