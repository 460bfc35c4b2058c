"""The locations paths' parameters and answers in /openapi.json."""

from __future__ import annotations

from lumen import document_errors, operation
from lumen_plugins.locations.gazetteer import TOP_CITIES
from lumen_plugins.locations.query import DEFAULT_LIMIT, MAX_QUERY_CHARS

CITY = {"$ref": "#/components/schemas/City"}


def _query(name: str, schema: dict, description: str, required=False, example=None) -> dict:
    param = {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }
    if example is not None:
        param["example"] = example
    return param


def _ok(schema: dict) -> dict:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def document(spec) -> None:
    search = operation(spec, "/api/v1/locations", "get")
    search["parameters"] = [
        _query(
            "q",
            {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
            "A prefix of a city's name or alternate name, case and accents ignored: letters, "
            "digits, spaces, commas, hyphens, apostrophes and periods.",
            required=True,
            example="zur",
        ),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": TOP_CITIES, "default": DEFAULT_LIMIT},
            "At most this many cities.",
        ),
        _query(
            "country",
            {"type": "string", "pattern": "^[A-Za-z]{2}$"},
            "Only cities of this country (ISO 3166-1 alpha-2).",
        ),
    ]
    search["responses"]["200"] = _ok(
        {"type": "object", "properties": {"results": {"type": "array", "items": CITY}}}
    )
    nearest = operation(spec, "/api/v1/locations/nearest", "get")
    nearest["parameters"] = [
        _query("lat", {"type": "number", "minimum": -90, "maximum": 90}, "Latitude.", True, 47.37),
        _query(
            "lon", {"type": "number", "minimum": -180, "maximum": 180}, "Longitude.", True, 8.54
        ),
    ]
    nearest["responses"]["200"] = _ok(CITY)
    one = operation(spec, "/api/v1/locations/{location_id}", "get")
    one["responses"]["200"] = _ok(CITY)
    # 503: the gazetteer is still being imported on a first start.
    document_errors(search, "400", "503")
    document_errors(nearest, "400", "503")
    document_errors(one, "404")
