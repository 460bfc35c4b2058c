"""/openapi.json is valid OpenAPI 3 (openapi-spec-validator) and complete for every route of
every enabled plugin: each operation documents its success answer and the errors it can give,
with the error schema; parameters carry their rules."""

from __future__ import annotations

import falcon.testing
import pytest
from openapi_spec_validator import validate

METHODS = ("get", "post", "put", "patch", "delete")
ALL_PLUGINS = "cors,locations,cache,health,metrics,security_headers,compression,conditional,docs"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture
def document(make_app):
    app = make_app(LUMEN_PLUGINS=ALL_PLUGINS, METRICS_ENABLED="true", LOCATIONS_AUTO_IMPORT="false")
    return falcon.testing.TestClient(app).simulate_get("/openapi.json").json


def _operations(document):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_document_is_valid_openapi(document):
    validate(document)


def test_every_operation_documents_its_success_and_its_errors(document):
    for path, method, op in _operations(document):
        codes = set(op["responses"])
        assert any(code.startswith(("2", "3")) for code in codes), (path, method)
        for code, answer in op["responses"].items():
            assert answer.get("description") or "$ref" in answer, (path, method, code)
            if code.startswith(("4", "5")) and "application/json" in answer.get("content", {}):
                assert answer["content"]["application/json"]["schema"] == ERROR_REF
        has_input = "requestBody" in op or any(p["in"] == "query" for p in op.get("parameters", []))
        if has_input and path not in ("/metrics",):
            assert "400" in codes, (path, method)
        if "{" in path and not path.startswith("/docs"):
            assert "404" in codes, (path, method)
        if op.get("security") != [] and path.startswith("/api/"):
            assert "401" in codes, (path, method)


def test_parameters_carry_their_rules_and_ids_their_format(document):
    photos = {p["name"]: p for p in document["paths"]["/api/v1/photos"]["get"]["parameters"]}
    assert photos["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert photos["owner_id"]["schema"]["format"] == "uuid"
    photo = document["paths"]["/api/v1/photos/{photo_id}"]
    assert photo["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    search = {p["name"]: p for p in document["paths"]["/api/v1/locations"]["get"]["parameters"]}
    assert search["q"]["required"] is True and search["q"]["example"] == "zur"
    # A bearer token where the caller has one, anonymous otherwise: Swagger's Authorize uses it.
    assert document["security"] == [{"bearer": []}, {}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_request_bodies_are_schemas_not_names(document):
    for path, method, op in _operations(document):
        for media in op.get("requestBody", {}).get("content", {}).values():
            schema = media["schema"]
            assert isinstance(schema, dict), (path, method)
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[1]
                assert name in document["components"]["schemas"], (path, method)
