"""The core's own hook implementations: its middleware, routes, schema branch and API document.
Registered like any plugin, but always on."""

from __future__ import annotations

import os

from lumen import slots
from lumen.auth import AuthMiddleware
from lumen.hookspecs import hookimpl
from lumen.openapi import OpenAPIResource, operation
from lumen.resources import photos, tokens, users
from lumen.session import SessionMiddleware


@hookimpl
def lumen_middleware(lumen):
    return [(slots.SESSION, SessionMiddleware(lumen)), (slots.AUTHENTICATION, AuthMiddleware())]


@hookimpl
def lumen_routes(lumen):
    return [
        ("/api/v1/users", users.UsersResource(lumen)),
        ("/api/v1/users/{user_id}", users.UserResource(lumen)),
        ("/api/v1/users/{user_id}/photos", photos.UserPhotosResource(lumen)),
        ("/api/v1/tokens", tokens.TokensResource(lumen)),
        ("/api/v1/tokens/current", tokens.CurrentTokenResource()),
        ("/api/v1/photos", photos.PhotosResource(lumen)),
        ("/api/v1/photos/{photo_id}", photos.PhotoResource(lumen)),
        ("/api/v1/photos/{photo_id}/image", photos.PhotoImageResource(lumen)),
        ("/openapi.json", OpenAPIResource(lumen)),
    ]


@hookimpl
def lumen_migrations(lumen):
    return os.path.join(os.path.dirname(__file__), "migrations", "versions")


@hookimpl
def lumen_openapi(lumen, spec):
    for name in ("City", "User", "Photo", "Token", "Session"):
        spec.components.schema(name, schema=f"lumen.schemas.{name}Schema")
    bodies = {
        ("/api/v1/users", "post"): ("UserCreateSchema", "User", "201"),
        ("/api/v1/users/{user_id}", "get"): (None, "User", "200"),
        ("/api/v1/users/{user_id}", "patch"): ("UserUpdateSchema", "User", "200"),
        ("/api/v1/tokens", "post"): ("TokenCreateSchema", "Token", "201"),
        ("/api/v1/tokens", "get"): (None, "Session[]", "200"),
        ("/api/v1/photos/{photo_id}", "get"): (None, "Photo", "200"),
        ("/api/v1/photos/{photo_id}", "patch"): ("PhotoUpdateSchema", "Photo", "200"),
        ("/api/v1/photos", "get"): (None, "Photo[]", "200"),
        ("/api/v1/users/{user_id}/photos", "get"): (None, "Photo[]", "200"),
        ("/api/v1/photos", "post"): (None, "Photo", "201"),
    }
    for (path, method), (body, answer, status) in bodies.items():
        op = operation(spec, path, method)
        if body:
            # The operation exists already, so the marshmallow plugin would not resolve a
            # schema name given here: register the body schema and refer to it.
            name = body.removesuffix("Schema")
            if name not in spec.components.schemas:
                spec.components.schema(name, schema=f"lumen.schemas.{body}")
            ref = {"$ref": f"#/components/schemas/{name}"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        ref = {"$ref": f"#/components/schemas/{answer.rstrip('[]')}"}
        schema = {"type": "array", "items": ref} if answer.endswith("[]") else ref
        op["responses"][status] = {
            "description": "OK",
            "content": {"application/json": {"schema": schema}},
        }
    upload = operation(spec, "/api/v1/photos", "post")
    upload["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "caption": {"type": "string", "maxLength": 2000},
                        "visibility": {"type": "string", "enum": ["public", "private"]},
                        "location_id": {"type": "integer"},
                    },
                }
            }
        },
    }
