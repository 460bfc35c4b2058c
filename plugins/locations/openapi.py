"""The locations paths' parameters and answers in /openapi.json."""

from __future__ import annotations

from lumen import document_errors, operation
from lumen_plugins.locations.gazetteer import TOP_CITIES
from lumen_plugins.locations.query import DEFAULT_LIMIT, MAX_COUNTRIES, MAX_QUERY_CHARS

CITY = {"$ref": "#/components/schemas/City"}
COUNTRY_PATTERN = "^[A-Za-z]{2}( *, *[A-Za-z]{2})*$"


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
            "A city's name or alternate name, or a prefix of it, case and accents ignored, "
            "optionally followed by region and country qualifiers separated by commas or "
            "spaces (`paris, france`, `portland or`, `london ontario canada`); within one "
            "edit (4+ letters) or two (8+) when too few cities match exactly. Letters, "
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
            {"type": "string", "pattern": COUNTRY_PATTERN},
            f"Only cities of these countries: 1 to {MAX_COUNTRIES} ISO 3166-1 alpha-2 codes "
            "separated by commas (`fr,be`).",
            example="fr,be",
        ),
        _query(
            "lat",
            {"type": "number", "minimum": -90, "maximum": 90},
            "With lon: the client's latitude; nearer cities rank higher (weighed against "
            "population).",
        ),
        _query(
            "lon",
            {"type": "number", "minimum": -180, "maximum": 180},
            "With lat: the client's longitude.",
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
    nearest["responses"]["200"] = _ok(
        {
            "allOf": [
                CITY,
                {
                    "type": "object",
                    "properties": {
                        "distance_km": {
                            "type": "number",
                            "description": "Great-circle distance from the point.",
                        }
                    },
                    "required": ["distance_km"],
                },
            ]
        }
    )
    one = operation(spec, "/api/v1/locations/{location_id}", "get")
    one["responses"]["200"] = _ok(CITY)
    # 503: the gazetteer is still being imported on a first start.
    document_errors(search, "400", "503")
    # 404: no city within LOCATIONS_NEAREST_MAX_KM (at sea, in a desert).
    document_errors(nearest, "400", "404", "503")
    document_errors(one, "404")
