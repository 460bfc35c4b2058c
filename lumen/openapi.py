"""The OpenAPI 3 document of every route the running app serves, built with apispec."""

from __future__ import annotations

import re

import falcon
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

import lumen
from lumen.plugins import collect

METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def _operations(resource) -> dict:
    """An operation for each responder, its summary from the responder's docstring."""
    operations = {}
    for method in METHODS:
        responder = getattr(resource, f"on_{method}", None)
        if responder is None:
            continue
        doc = (responder.__doc__ or "").strip().splitlines()
        operation = {"responses": {"default": {"$ref": "#/components/responses/Error"}}}
        if doc:
            operation["summary"] = doc[0]
        if getattr(resource, "authenticate", True):
            # Every route that reads tokens refuses a bad one.
            document_errors(operation, "401")
        else:
            operation["security"] = []
        operations[method] = operation
    return operations


def build_spec(app_lumen) -> dict:
    spec = APISpec(
        title="Lumen",
        version=lumen.__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Photo-sharing REST API"},
        # A bearer token where the caller has one; anonymous otherwise.
        security=[{"bearer": []}, {}],
    )
    spec.components.schema("Error", schema="lumen.schemas.ErrorSchema")
    spec.components.response(
        "Error",
        {
            "description": "An error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for template, (_, resource) in sorted(app_lumen.routes.items()):
        path = _PARAM.sub(r"{\1}", template)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(template)
        ]
        spec.path(path=path, operations=_operations(resource), parameters=parameters)
    collect(app_lumen.pm, "lumen_openapi", lumen=app_lumen, spec=spec)
    return spec.to_dict()


def operation(spec: APISpec, path: str, method: str) -> dict:
    """The operation dict of an already added path, for hooks to enrich in place."""
    return spec._paths[path][method]


# Why each error status can happen, as the API's clients read it.
ERRORS = {
    "400": "Invalid input: the description names the field and the rule",
    "401": "No valid bearer token (also for a malformed, expired or revoked one)",
    "403": "Not yours, or not allowed on this server",
    "404": "No such resource, or not visible to the caller",
    "409": "Conflicts with what exists",
    "411": "A body without Content-Length or chunked framing",
    "413": "Too large",
    "415": "Not a media type this operation takes",
    "429": "Too many requests: see Retry-After and RateLimit",
    "503": "A dependency this operation needs is unavailable: see Retry-After",
    "507": "The storage quota would be exceeded",
}
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def document_errors(op: dict, *statuses: str) -> None:
    """Add the error answers an operation can give, each with the JSON error body."""
    for status in statuses:
        op["responses"][status] = {"description": ERRORS[status], "content": _ERROR_BODY}


class OpenAPIResource:
    authenticate = False  # public, whatever Authorization says

    def __init__(self, app_lumen):
        self.lumen = app_lumen

    def on_get(self, req: falcon.Request, resp: falcon.Response):
        """This document."""
        resp.media = self.lumen.openapi
