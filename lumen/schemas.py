"""Request and response bodies. These schemas validate input, shape output, and are the source
of the component schemas in /openapi.json."""

from __future__ import annotations

import json
import re

import falcon
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from lumen.errors import invalid
from lumen.models import VISIBILITIES
from lumen.validation import first_problem

MAX_JSON_BYTES = 1024 * 1024
USERNAME_RULE = "must be 3-32 characters of a-z, 0-9, '_', '.' and '-'"

# Text that the databases cannot store alike: PostgreSQL refuses NUL in text and neither
# driver can encode an unpaired surrogate ("\ud800" is valid JSON), so both are refused up
# front, the same way on both backends.
NUL_RULE = "must not contain NUL characters (U+0000)"
SURROGATE_RULE = "must be valid Unicode (no unpaired surrogates U+D800-U+DFFF)"
NESTING_RULE = "must be a JSON object whose values are not nested arrays or objects"
_SURROGATES = re.compile("[\ud800-\udfff]")
# Text shown to other users: C0 and C1 controls, and the bidirectional embedding, override and
# isolate controls, which can make one name display as another (U+202E turns "evil\u202elapyap"
# into "evilpaypal"). Zero-width joiners (U+200C, U+200D), which emoji and several scripts
# need, and the bidi marks (U+200E, U+200F, U+061C) stay.
_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_BIDI_NOTE = (
    "nor bidirectional embedding, override or isolate controls (U+202A-U+202E, U+2066-U+2069)"
)
DISPLAY_NAME_CONTROLS_RULE = f"must not contain control characters, {_BIDI_NOTE}"
CAPTION_CONTROLS_RULE = (
    f"must not contain control characters other than tab and line breaks, {_BIDI_NOTE}"
)
_DISPLAY_NAME_CONTROLS = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_CONTROLS}]")
# A caption keeps tab, newline and CRLF (what browsers send for a line break in a form).
_CAPTION_CONTROLS = re.compile(f"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f{_BIDI_CONTROLS}]|\r(?!\n)")


def text_rule_broken(value: str) -> str | None:
    """The rule ``value`` breaks if the databases cannot store it (NUL, lone surrogates)."""
    if "\x00" in value:
        return NUL_RULE
    if not value.isascii() and _SURROGATES.search(value):
        return SURROGATE_RULE
    return None


def _refuse(pattern: re.Pattern, rule: str):
    def check(value: str) -> None:
        if pattern.search(value):
            raise ValidationError(rule)

    return check


def _storable(value: str) -> None:
    rule = text_rule_broken(value)
    if rule:
        raise ValidationError(rule)


_display_name = [
    _storable,
    validate.Length(max=100, error="must be at most 100 characters"),
    _refuse(_DISPLAY_NAME_CONTROLS, DISPLAY_NAME_CONTROLS_RULE),
]


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- input -----------------------------------------------------------------------------------


class UserCreateSchema(StrictSchema):
    username = fields.String(
        required=True,
        # Also the pattern /openapi.json shows, so it must read the same as an ECMA-262 regex:
        # (?!\n)$ is where Python's \Z would be (a bare $ would accept a trailing newline).
        validate=validate.Regexp(r"^[a-z0-9_.-]{3,32}(?!\n)$", error=USERNAME_RULE),
    )
    password = fields.String(
        required=True,
        load_only=True,
        # _storable as well: `lumen users create` reads no JSON, and a password the API would
        # refuse at login must not be set.
        validate=[
            _storable,
            validate.Length(min=8, max=1024, error="must be 8 to 1024 characters"),
        ],
    )
    display_name = fields.String(allow_none=True, validate=_display_name)


class UserUpdateSchema(StrictSchema):
    display_name = fields.String(required=True, allow_none=True, validate=_display_name)


class TokenCreateSchema(StrictSchema):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)


_caption = dict(
    allow_none=True,
    validate=[
        _storable,
        validate.Length(max=2000, error="must be at most 2000 characters"),
        _refuse(_CAPTION_CONTROLS, CAPTION_CONTROLS_RULE),
    ],
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
    country_name = fields.String(allow_none=True)
    admin1_code = fields.String(allow_none=True)
    admin1_name = fields.String(allow_none=True)
    label = fields.String()
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


def request_body(req: falcon.Request) -> bytes:
    """The body of the request, at most 1 MB and one byte of it, read once and kept on the
    request: a middleware may look at it before the resource reads it."""
    raw = getattr(req.context, "raw_body", None)
    if raw is None:
        raw = req.context.raw_body = req.bounded_stream.read(MAX_JSON_BYTES + 1)
    return raw


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
    raw = request_body(req)
    if len(raw) > MAX_JSON_BYTES:
        raise falcon.HTTPContentTooLarge(
            title="Body too large", description="body: must be at most 1 MB of JSON"
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", "must be valid JSON") from None
    except RecursionError:
        # The parser recurses per level: 1 MB of "[" is far deeper than the stack. No body
        # nests at all, so this is the rule every such body breaks.
        raise invalid("body", NESTING_RULE) from None
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    check_strings(data)
    return validate_data(schema, data)


def check_strings(data: dict) -> None:
    """A 400 naming the top-level field of the first string, key or value at any depth, that
    the databases cannot store (see ``text_rule_broken``); keys that break it are "body"."""
    for key, value in data.items():
        rule = text_rule_broken(key)
        if rule:
            raise invalid("body", rule)
        pending = [value]
        while pending:  # iterative: a body may nest as deep as the parser allowed
            item = pending.pop()
            if isinstance(item, str):
                rule = text_rule_broken(item)
                if rule:
                    raise invalid(key, rule)
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)


FORM_TEXT_RULE = "must be text in UTF-8 (or in the charset its part declares)"


def form_text(part) -> str | None:
    """A multipart text field (None unless text/plain), or a 400 naming it when its bytes are
    not text in its charset."""
    try:
        return part.get_text()
    except falcon.MediaMalformedError:
        raise invalid(part.name, FORM_TEXT_RULE) from None


def parse_integer(raw: str, minimum: int, maximum: int | None) -> int:
    """The integer ``raw`` spells, within bounds; ValueError says the rule it breaks."""
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    # ASCII digits only: int() also takes "٣", " 3 " and "1_0", which no client means.
    if len(raw) > 20 or not _INTEGER.fullmatch(raw):
        raise ValueError(f"must be an integer {bounds}")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"must be an integer {bounds}")
    return value


def int_param(req: falcon.Request, name: str, default: int, minimum: int, maximum: int | None):
    """An integer query parameter within bounds, or a 400 naming it and the bounds."""
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        return parse_integer(raw, minimum, maximum)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None


_INTEGER = re.compile(r"-?[0-9]+")
