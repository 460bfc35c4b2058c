"""The city nearest to a point, through a grid of 0.25-degree cells indexed in the cities
table: only the cells around the point are read, never the whole table."""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lumen_plugins.locations.tables import cities

CELL_DEGREES = 0.25  # the densest cell of cities500 then holds under 300 cities
ROWS, COLUMNS = round(180 / CELL_DEGREES), round(360 / CELL_DEGREES)
EARTH_RADIUS_KM = 6371.0088
FIRST_RADIUS_KM = 10.0


def cell_of(latitude: float, longitude: float) -> int:
    return _row(latitude) * COLUMNS + _column(longitude) % COLUMNS


def _row(latitude: float) -> int:
    return min(max(math.floor((latitude + 90) / CELL_DEGREES), 0), ROWS - 1)


def _column(longitude: float) -> int:
    return math.floor((longitude + 180) / CELL_DEGREES)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def cell_ranges(latitude: float, longitude: float, radius_km: float) -> list[tuple[int, int]]:
    """Ranges of cell numbers covering every point within ``radius_km`` of the point (the
    bounding box of the spherical cap, split by grid row; the whole row where it wraps)."""
    angle = radius_km / EARTH_RADIUS_KM
    lat_min = latitude - math.degrees(angle)
    lat_max = latitude + math.degrees(angle)
    first, last = _row(lat_min), _row(lat_max)
    spread = math.sin(angle) / max(math.cos(math.radians(latitude)), 1e-12)
    if lat_min <= -90 or lat_max >= 90 or angle >= math.pi / 2 or spread >= 1:
        return [(first * COLUMNS, last * COLUMNS + COLUMNS - 1)]  # every longitude
    delta = math.degrees(math.asin(spread))
    west, east = _column(longitude - delta), _column(longitude + delta)
    if east - west + 1 >= COLUMNS:
        return [(first * COLUMNS, last * COLUMNS + COLUMNS - 1)]
    ranges = []
    for row in range(first, last + 1):
        base = row * COLUMNS
        if west < 0:  # across the antimeridian
            ranges += [(base, base + east), (base + west + COLUMNS, base + COLUMNS - 1)]
        elif east >= COLUMNS:
            ranges += [(base, base + east - COLUMNS), (base + west, base + COLUMNS - 1)]
        else:
            ranges.append((base + west, base + east))
    return ranges


def candidates(ranges: list[tuple[int, int]]) -> sa.Select:
    """The cities in the given ranges of cells: one index range scan per range."""
    return sa.select(cities.c.id, cities.c.latitude, cities.c.longitude, cities.c.rank).where(
        sa.or_(*(cities.c.cell.between(low, high) for low, high in ranges))
    )


def nearest_city_id(connection: Connection, latitude: float, longitude: float) -> int | None:
    """The id of the nearest city (the larger one on a tie), or None for an empty gazetteer."""
    found = nearest_city(connection, latitude, longitude, math.inf)
    return found[0] if found else None


def nearest_city(
    connection: Connection, latitude: float, longitude: float, max_km: float
) -> tuple[int, float] | None:
    """(id, distance in km) of the nearest city within ``max_km`` (the larger one on a tie),
    or None.

    Searches a growing radius, never beyond ``max_km``; an answer within the searched radius
    is final, since every city closer than it lies in the cells read.
    """
    radius = min(FIRST_RADIUS_KM, max_km)
    while True:
        rows = connection.execute(candidates(cell_ranges(latitude, longitude, radius))).all()
        best = min(
            (
                (distance_km(latitude, longitude, r.latitude, r.longitude), r.rank, r.id)
                for r in rows
            ),
            default=None,
        )
        whole_earth = radius >= math.pi * EARTH_RADIUS_KM
        if best is not None and (best[0] <= radius or whole_earth):
            return (best[2], best[0]) if best[0] <= max_km else None
        if radius >= max_km or (best is None and whole_earth):
            return None
        radius = min(best[0] if best is not None else radius * 4, max_km)
