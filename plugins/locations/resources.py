"""/api/v1/locations: search, nearest city, one city."""

from __future__ import annotations

import falcon

from lumen import MAX_INTEGER
from lumen_plugins.locations.query import parse_point, parse_search
from lumen_plugins.locations.service import NotImported, not_imported_reason

# An import takes about 30 s: ask clients back in a few seconds.
RETRY_AFTER_SECONDS = 5


def not_imported(locations) -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(
        title="Locations unavailable",
        description=not_imported_reason(locations.auto_import),
        retry_after=RETRY_AFTER_SECONDS,
    )


class LocationSearchResource:
    def __init__(self, locations):
        self.locations = locations

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Cities whose name or alternate name starts with q (or its city part, before region
        and country qualifiers; within a typo or two as a fallback), best first."""
        query = parse_search(req.params)
        try:
            resp.data = self.locations.answer(query)
        except NotImported:
            raise not_imported(self.locations) from None
        resp.content_type = falcon.MEDIA_JSON


class NearestLocationResource:
    def __init__(self, locations):
        self.locations = locations

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The city nearest to a point, with its distance; 404 beyond
        LOCATIONS_NEAREST_MAX_KM."""
        latitude, longitude = parse_point(req.params)
        try:
            self.locations.require_data()
        except NotImported:
            raise not_imported(self.locations) from None
        city = self.locations.nearest(latitude, longitude)
        if city is None:
            raise falcon.HTTPNotFound(
                title="Not found",
                description=(
                    f"lat, lon: no city within {self.locations.nearest_max_km:g} km "
                    "(LOCATIONS_NEAREST_MAX_KM)"
                ),
            )
        resp.media = city


class LocationResource:
    def __init__(self, locations):
        self.locations = locations

    def on_get(self, req: falcon.Request, resp: falcon.Response, location_id: int) -> None:
        """One city."""
        city = self.locations.lookup([location_id]).get(location_id)
        if city is None:
            raise falcon.HTTPNotFound(title="Not found", description="id: no such location")
        resp.media = city


def routes(locations) -> list[tuple[str, object]]:
    # The int converter turns anything but a number in the INTEGER column's range into a 404.
    return [
        ("/api/v1/locations", LocationSearchResource(locations)),
        ("/api/v1/locations/nearest", NearestLocationResource(locations)),
        (
            f"/api/v1/locations/{{location_id:int(min=1, max={MAX_INTEGER})}}",
            LocationResource(locations),
        ),
    ]
