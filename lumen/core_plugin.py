"""The core's own hook implementations: its middleware, routes, schema branch and API document.
Registered like any plugin, but always on."""

from __future__ import annotations

import os
from functools import partial

from lumen import maintenance_mode, slots
from lumen.auth import AuthMiddleware, token_cache_of
from lumen.hookspecs import hookimpl
from lumen.models import MAX_INTEGER
from lumen.openapi import OpenAPIResource, document_errors, operation
from lumen.prefetch import PrefetchMiddleware
from lumen.resources import photos, tokens, users
from lumen.resources.paging import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET
from lumen.session import SessionMiddleware


def maintenance_flag(lumen) -> maintenance_mode.Flag:
    """This process's view of the maintenance flag (one per app)."""
    return lumen.state.setdefault("core.maintenance", maintenance_mode.Flag(lumen.engine))


@hookimpl
def lumen_middleware(lumen):
    middleware = [
        (slots.MAINTENANCE, maintenance_mode.MaintenanceMiddleware(maintenance_flag(lumen))),
        (slots.SESSION, SessionMiddleware(lumen)),
        (slots.AUTHENTICATION, AuthMiddleware(token_cache_of(lumen))),
    ]
    if lumen.redis_calls is not None:
        middleware.append((slots.PREFETCH, PrefetchMiddleware(lumen)))
    return middleware


@hookimpl
def lumen_health_checks(lumen):
    return {"maintenance:mode": partial(maintenance_mode.health_check, maintenance_flag(lumen))}


@hookimpl
def lumen_routes(lumen):
    return [
        ("/api/v1/users", users.UsersResource(lumen)),
        ("/api/v1/users/{user_id}", users.UserResource(lumen)),
        ("/api/v1/users/{user_id}/photos", photos.UserPhotosResource(lumen)),
        ("/api/v1/tokens", tokens.TokensResource(lumen)),
        ("/api/v1/tokens/current", tokens.CurrentTokenResource(lumen)),
        ("/api/v1/photos", photos.PhotosResource(lumen)),
        ("/api/v1/photos/{photo_id}", photos.PhotoResource(lumen)),
        ("/api/v1/photos/{photo_id}/image", photos.PhotoImageResource(lumen)),
        ("/openapi.json", OpenAPIResource(lumen)),
    ]


@hookimpl
def lumen_migrations(lumen):
    return os.path.join(os.path.dirname(__file__), "migrations", "versions")


def _uuid_path(name: str) -> dict:
    schema = {"type": "string", "format": "uuid"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict, description: str, example=None) -> dict:
    param = {"name": name, "in": "query", "schema": schema, "description": description}
    if example is not None:
        param["example"] = example
    return param


LIMIT_PARAMETER = _query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "Photos per page.",
    20,
)
# The tokens list: offset only.
PAGE_PARAMETERS = [
    LIMIT_PARAMETER,
    _query(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER, "default": 0},
        "Items to skip (follow the Link header's next and prev instead).",
        0,
    ),
]
# The photo lists: a cursor for any depth, an offset up to MAX_OFFSET.
LIST_PARAMETERS = [
    LIMIT_PARAMETER,
    _query(
        "cursor",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,96}$"},
        "Where the page starts: opaque, taken from the Link header's next or prev; any depth "
        "costs what the first page costs. Not with offset (400); garbled, 400.",
    ),
    _query(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        f"Photos to skip, at most {MAX_OFFSET} (beyond, 400: follow the cursor of the Link "
        "header's next instead).",
        0,
    ),
    _query(
        "location_id",
        {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER},
        "Only photos of this city.",
    ),
]
OWNER_PARAMETER = _query(
    "owner_id", {"type": "string", "format": "uuid"}, "Only this user's photos (404 if unknown)."
)
IMAGE_PARAMETERS = [
    _query(
        "size",
        {"type": "string", "enum": ["original", "thumb"], "default": "original"},
        "The uploaded bytes, or the WebP thumbnail.",
    ),
    _query("v", {"type": "string"}, "The content version from the photo's urls."),
]

# (path, method) -> request body schema, answer schema, success status, error statuses.
# (lumen.openapi adds 401 to every route that reads tokens.)
OPERATIONS = {
    ("/api/v1/users", "post"): ("UserCreateSchema", "User", "201", "400 403 409 413 415 503"),
    ("/api/v1/users/{user_id}", "get"): (None, "User", "200", "404 503"),
    ("/api/v1/users/{user_id}", "patch"): (
        "UserUpdateSchema",
        "User",
        "200",
        "400 403 404 413 415 503",
    ),
    ("/api/v1/users/{user_id}/photos", "get"): (None, "Photo[]", "200", "400 404 503"),
    ("/api/v1/tokens", "post"): ("TokenCreateSchema", "Token", "201", "400 413 415 503"),
    ("/api/v1/tokens", "get"): (None, "Session[]", "200", "400 503"),
    ("/api/v1/tokens", "delete"): (None, None, "204", "503"),
    ("/api/v1/tokens/current", "delete"): (None, None, "204", "503"),
    ("/api/v1/photos", "get"): (None, "Photo[]", "200", "400 404 503"),
    ("/api/v1/photos", "post"): (None, "Photo", "201", "400 409 411 413 415 503 507"),
    ("/api/v1/photos/{photo_id}", "get"): (None, "Photo", "200", "404 503"),
    ("/api/v1/photos/{photo_id}", "patch"): (
        "PhotoUpdateSchema",
        "Photo",
        "200",
        "400 403 404 413 415 503",
    ),
    ("/api/v1/photos/{photo_id}", "delete"): (None, None, "204", "403 404 503"),
    ("/api/v1/photos/{photo_id}/image", "get"): (None, None, "200", "400 404 503"),
}
LIST_HEADERS = {
    "X-Total-Count": {"description": "How many the list holds", "schema": {"type": "integer"}},
    "Link": {
        "description": "The next and prev pages (RFC 8288); in the photo lists, next carries "
        "a cursor",
        "schema": {"type": "string"},
    },
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "caption": {"type": "string", "maxLength": 2000},
        "visibility": {"type": "string", "enum": ["public", "private"], "default": "public"},
        "location_id": {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER},
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _registered(spec, schema_name: str) -> dict:
    # The operation exists already, so the marshmallow plugin would not resolve a schema name
    # given here: register the schema and refer to it.
    name = schema_name.removesuffix("Schema")
    if name not in spec.components.schemas:
        spec.components.schema(name, schema=f"lumen.schemas.{schema_name}")
    return _ref(name)


def _answer(answer: str | None, status: str) -> dict:
    if answer is None:
        return {"description": "Done" if status == "204" else "OK"}
    many = answer.endswith("[]")
    schema = {"type": "array", "items": _ref(answer[:-2])} if many else _ref(answer)
    documented = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    if many:
        documented["headers"] = LIST_HEADERS
    return documented


@hookimpl
def lumen_openapi(lumen, spec):
    for name in ("City", "User", "Photo", "Token", "Session"):
        spec.components.schema(name, schema=f"lumen.schemas.{name}Schema")
    for (path, method), (body, answer, status, errors) in OPERATIONS.items():
        op = operation(spec, path, method)
        if body:
            content = {"application/json": {"schema": _registered(spec, body)}}
            op["requestBody"] = {"required": True, "content": content}
        op["responses"][status] = _answer(answer, status)
        document_errors(op, *errors.split())
        for name in ("user_id", "photo_id"):
            if "{" + name + "}" in path:
                spec._paths[path]["parameters"] = [_uuid_path(name)]
    operation(spec, "/api/v1/photos", "get")["parameters"] = [OWNER_PARAMETER, *LIST_PARAMETERS]
    operation(spec, "/api/v1/users/{user_id}/photos", "get")["parameters"] = LIST_PARAMETERS
    operation(spec, "/api/v1/tokens", "get")["parameters"] = PAGE_PARAMETERS
    upload = operation(spec, "/api/v1/photos", "post")
    upload["requestBody"] = {
        "required": True,
        "content": {"multipart/form-data": {"schema": UPLOAD_FORM}},
    }
    image = operation(spec, "/api/v1/photos/{photo_id}/image", "get")
    image["parameters"] = IMAGE_PARAMETERS
    binary = {"schema": {"type": "string", "format": "binary"}}
    image["responses"]["200"] = {
        "description": "The image bytes",
        "content": dict.fromkeys(IMAGE_TYPES, binary),
    }
    image["responses"]["304"] = {"description": "Not modified: If-None-Match matched the ETag"}
    operation(spec, "/openapi.json", "get")["responses"]["200"] = {
        "description": "This document",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
