"""Request and response bodies. These schemas validate input, shape output, and are the source
of the component schemas in /openapi.json."""

from __future__ import annotations

import json

import falcon
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from lumen.errors import invalid
from lumen.models import VISIBILITIES
from lumen.validation import first_problem

MAX_JSON_BYTES = 1024 * 1024
USERNAME_RULE = "must be 3-32 characters of a-z, 0-9, '_', '.' and '-'"


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- input -----------------------------------------------------------------------------------


class UserCreateSchema(StrictSchema):
    username = fields.String(
        required=True, validate=validate.Regexp(r"^[a-z0-9_.-]{3,32}\Z", error=USERNAME_RULE)
    )
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=8, max=1024, error="must be 8 to 1024 characters"),
    )
    display_name = fields.String(
        allow_none=True, validate=validate.Length(max=100, error="must be at most 100 characters")
    )


class UserUpdateSchema(StrictSchema):
    display_name = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Length(max=100, error="must be at most 100 characters"),
    )


class TokenCreateSchema(StrictSchema):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)


_caption = dict(
    allow_none=True, validate=validate.Length(max=2000, error="must be at most 2000 characters")
)
_visibility = dict(validate=validate.OneOf(VISIBILITIES, error="must be one of: public, private"))
_location_id = dict(
    allow_none=True, strict=True, validate=validate.Range(min=1, error="must be a positive integer")
)


class PhotoUploadSchema(StrictSchema):
    """The form fields of an upload besides ``file``."""

    caption = fields.String(**_caption)
    visibility = fields.String(load_default="public", **_visibility)
    location_id = fields.Integer(allow_none=True, validate=_location_id["validate"])


class PhotoUpdateSchema(StrictSchema):
    caption = fields.String(**_caption)
    visibility = fields.String(**_visibility)
    location_id = fields.Integer(**_location_id)


# --- output ----------------------------------------------------------------------------------


class UserSchema(Schema):
    id = fields.String()
    username = fields.String()
    display_name = fields.String(allow_none=True)
    photo_count = fields.Integer()
    created_at = fields.DateTime(format="iso")


class TokenSchema(Schema):
    token = fields.String()
    user_id = fields.String()
    expires_at = fields.DateTime(format="iso")


class SessionSchema(Schema):
    """A token as its owner sees it in their list of sessions: never its secret."""

    id = fields.String()
    created_at = fields.DateTime(format="iso")
    last_used_at = fields.DateTime(format="iso", allow_none=True)
    expires_at = fields.DateTime(format="iso")
    current = fields.Boolean()


class CitySchema(Schema):
    id = fields.Integer()
    name = fields.String()
    country_code = fields.String()
    admin1_code = fields.String(allow_none=True)
    latitude = fields.Float()
    longitude = fields.Float()
    population = fields.Integer()
    timezone = fields.String(allow_none=True)
    matched_name = fields.String(allow_none=True)


class PhotoUrlsSchema(Schema):
    original = fields.String()
    thumbnail = fields.String()


class PhotoSchema(Schema):
    id = fields.String()
    owner_id = fields.String()
    caption = fields.String(allow_none=True)
    visibility = fields.String()
    location = fields.Nested(CitySchema, allow_none=True)
    width = fields.Integer()
    height = fields.Integer()
    content_type = fields.String()
    size_bytes = fields.Integer()
    sha256 = fields.String()
    taken_at = fields.DateTime(format="iso", allow_none=True)
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")
    urls = fields.Nested(PhotoUrlsSchema)


class ErrorSchema(Schema):
    title = fields.String()
    description = fields.String()


# --- helpers ---------------------------------------------------------------------------------


def first_error(err: ValidationError) -> falcon.HTTPError:
    """A 400 naming the first invalid field and its rule."""
    field, rule = first_problem(err)
    return invalid("body" if field == "_schema" else field, rule)


def validate_data(schema: Schema, data) -> dict:
    try:
        return schema.load(data)
    except ValidationError as err:
        raise first_error(err) from None


def load_body(req: falcon.Request, schema: Schema) -> dict:
    """Read a JSON body (at most 1 MB) and validate it with ``schema``."""
    if req.content_length is not None and req.content_length > MAX_JSON_BYTES:
        raise falcon.HTTPContentTooLarge(
            title="Body too large", description="body: must be at most 1 MB of JSON"
        )
    if not req.content_type or not req.content_type.startswith("application/json"):
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported media type", description="body: must be application/json"
        )
    raw = req.bounded_stream.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise falcon.HTTPContentTooLarge(
            title="Body too large", description="body: must be at most 1 MB of JSON"
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", "must be valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    return validate_data(schema, data)


def int_param(req: falcon.Request, name: str, default: int, minimum: int, maximum: int | None):
    """An integer query parameter within bounds, or a 400 naming it and the bounds."""
    raw = req.get_param(name)
    if raw is None:
        return default
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"must be an integer {bounds}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise invalid(name, f"must be an integer {bounds}")
    return value
