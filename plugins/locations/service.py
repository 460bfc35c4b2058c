"""What the plugin keeps per application (``lumen.state["locations"]``): its settings, the
search LRU and its metrics; and the operations the hooks and resources call."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import inspect

from lumen import (
    CITIES_TAG,
    MAX_INTEGER,
    SettingsSchema,
    boolean,
    choice,
    json_dumps,
    json_loads,
    positive_int,
    positive_number,
)
from lumen_plugins.locations import finder, gazetteer, importer, nearest, regions, search
from lumen_plugins.locations.cache import VersionWatch
from lumen_plugins.locations.query import SearchQuery
from lumen_plugins.locations.tables import state

log = logging.getLogger(__name__)


class LocationsSettings(SettingsSchema):
    dataset = choice("LOCATIONS_DATASET", gazetteer.DATASETS, "cities500")
    min_population = positive_int("LOCATIONS_MIN_POPULATION", 0, minimum=0)
    auto_import = boolean("LOCATIONS_AUTO_IMPORT", True)
    # Entries hold an answer's JSON, about 3 KB: 5,000 are some 15 MB per worker at most.
    cache_size = positive_int("LOCATION_CACHE_SIZE", 5000, minimum=0)
    # Beyond this distance a point has no nearest city (a photo taken at sea gets none).
    nearest_max_km = positive_number("LOCATIONS_NEAREST_MAX_KM", 50.0)


class NotImported(Exception):
    """No cities are imported yet: search and the nearest city cannot answer."""


class Locations:
    def __init__(self, lumen, settings):
        self.lumen = lumen
        self.engine = lumen.engine
        self.tally = lumen.tally
        self.dataset: str = settings.dataset
        self.min_population: int = settings.min_population
        self.auto_import: bool = settings.auto_import
        self.cache_size: int = settings.cache_size
        self.nearest_max_km: float = settings.nearest_max_km
        # Read the country and region names now, not on the first search (a tenth of a second).
        regions.qualifiers()
        # Each worker's answers, as the JSON sent (a third of the memory of the results, and
        # nothing to encode on a hit); functools' LRU is thread-safe and counts hits and misses.
        self._cached_answer = functools.lru_cache(maxsize=self.cache_size)(self._answer)
        self._answered = 0  # answers made, not taken from the LRU
        # Which prefixes have a precomputed answer, and the LRU, follow the imported data.
        self.crowded: frozenset[tuple[str, str]] = frozenset()
        self.city_count = 0
        self.watch = VersionWatch(self.data_version, self._data_changed)
        # The first start's import, running beside the server (``lumen_before_serve``).
        self.importing: subprocess.Popen | None = None
        # prometheus_client counters, when the metrics plugin registers them.
        self.searches_counter = self.cache_hits_counter = None

    # --- reading -------------------------------------------------------------------------

    def require_data(self) -> None:
        """Raise NotImported while no cities are imported (checked with the data version, so
        within about a second of an import's commit every worker answers)."""
        self.watch.check()
        if not self.city_count:
            raise NotImported

    def answer(self, query: SearchQuery) -> bytes:
        """The JSON answer (``{"results": [...]}``) to a validated search
        (query.parse_search)."""
        self.require_data()
        answered = self._answered
        # Keyed by what is searched: "Zürich" and "zurich" are one entry.
        body = self._cached_answer(query.key)
        self.tally.inc(self.searches_counter)
        if self._answered == answered:
            self.tally.inc(self.cache_hits_counter)
        return body

    def search(self, query: SearchQuery) -> list[dict]:
        """The cities a validated search finds, best first."""
        return json_loads(self.answer(query))["results"]

    def clear_cache(self) -> None:
        """Empty this worker's LRU, and its hit and miss counts."""
        self._cached_answer.cache_clear()

    def cache_info(self):
        """This worker's LRU: hits, misses, maxsize and currsize (functools' CacheInfo)."""
        return self._cached_answer.cache_info()

    def _answer(self, query: SearchQuery) -> bytes:
        self._answered += 1
        with self._reading() as connection:
            return json_dumps({"results": finder.find(connection, query, self.crowded)})

    def _data_changed(self, version: int) -> None:
        with self._reading() as connection:
            self.crowded = search.crowded_prefixes(connection)
            self.city_count = importer.city_count(connection)
            typo_index = importer.has_typo_keys(connection)
        if self.city_count and not typo_index:
            # Cities imported before the typo index existed (locations_0001): search works,
            # without typo tolerance, until the next import.
            log.warning(
                "locations typo index empty; run `lumen locations import` for typo tolerance"
            )
        self.clear_cache()

    def lookup(self, city_ids) -> dict[int, dict]:
        wanted = [i for i in city_ids if isinstance(i, int) and 1 <= i <= MAX_INTEGER]
        if not wanted:
            return {}
        with self._reading() as connection:
            return search.cities_by_id(connection, wanted)

    def nearest(self, latitude: float, longitude: float) -> dict | None:
        """The nearest city with its ``distance_km``, None when none lies within
        LOCATIONS_NEAREST_MAX_KM (or none is imported)."""
        with self._reading() as connection:
            found = nearest.nearest_city(connection, latitude, longitude, self.nearest_max_km)
            if found is None:
                return None
            city_id, km = found
            city = search.cities_by_id(connection, [city_id]).get(city_id)
            return {**city, "distance_km": round(km, 3)} if city else None

    def data_version(self) -> int:
        with self._reading() as connection:
            return importer.data_version(connection)

    def status(self) -> dict | None:
        """The state row (city_count, version, dataset, ...), None before the migration."""
        with self._reading() as connection:
            row = connection.execute(state.select().where(state.c.id == 1)).mappings().first()
            return dict(row) if row else None

    def _reading(self):
        # Reads are single statements outside a transaction: no BEGIN and ROLLBACK round
        # trips. An import swaps in every table at once, and city ids are GeoNames ids that
        # stay across imports; a search meeting a re-import may only miss a city it removed.
        return self.lumen.reading()

    # --- importing -----------------------------------------------------------------------

    def import_gazetteer(
        self,
        dataset: str | None = None,
        min_population: int | None = None,
        only_if_empty: bool = False,
        progress: bool = False,
    ) -> gazetteer.Gazetteer | None:
        """Load a dataset (default: the configured one) and replace the imported data;
        returns what was imported, or None when ``only_if_empty`` found cities."""
        dataset = dataset or self.dataset
        min_population = self.min_population if min_population is None else min_population
        started = time.perf_counter()
        built = gazetteer.build(gazetteer.read_dataset(dataset), dataset, min_population, progress)
        if not importer.write(self.engine, built, only_if_empty=only_if_empty, progress=progress):
            return None
        self.watch.check_now()
        # Cached photos and lists embed cities: none may go on showing the old data.
        self.lumen.purge((CITIES_TAG,))
        log.info(
            "gazetteer imported",
            extra={
                "dataset": dataset,
                "min_population": min_population,
                "cities": len(built.cities),
                "names": len(built.names),
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
        return built

    def needs_import(self) -> bool:
        """Whether the first start should import: on, migrated, and no cities yet."""
        if not self.auto_import:
            return False
        if not inspect(self.engine).has_table(state.name):
            log.warning("locations tables missing; run `lumen db upgrade`")
            return False
        return not (self.status() or {}).get("city_count")

    def start_import_if_empty(self) -> subprocess.Popen | None:
        """On a database without cities, start ``lumen locations import --if-empty`` in a
        process of its own and return at once: the import takes about 30 s, and the server must
        answer (``/livez``) meanwhile. Search answers 503 until the import has committed."""
        if not self.needs_import():
            return None
        log.info(
            "no cities imported yet: importing the gazetteer in the background",
            extra={"dataset": self.dataset},
        )
        command = "from lumen.cli import main; main()"
        self.importing = subprocess.Popen(
            [sys.executable, "-c", command, "locations", "import", "--if-empty"],
            env={**os.environ, **self.lumen.settings.environ},
            stdin=subprocess.DEVNULL,
            stdout=2,  # with the server's own log lines: standard output may be the access log
            preexec_fn=_stop_with_parent(),
        )
        return self.importing

    # --- operations ----------------------------------------------------------------------

    def register_metrics(self, registry) -> None:
        from prometheus_client import Counter

        self.searches_counter = Counter(
            "lumen_location_searches", "City searches answered", registry=registry
        )
        self.cache_hits_counter = Counter(
            "lumen_location_cache_hits",
            "City searches answered from the in-process LRU",
            registry=registry,
        )

    def data_check(self) -> dict:
        """The "locations:data" health check: how many cities are imported."""
        count = (self.status() or {}).get("city_count", 0)
        return {
            "componentType": "datastore",
            "observedValue": count,
            "observedUnit": "cities",
            "status": "pass" if count else "warn",
            "output": "" if count else not_imported_reason(self.auto_import),
        }

    def cache_check(self) -> dict:
        """The "locations:cache" health check: this worker's LRU hits and misses."""
        info = self.cache_info()
        looked_up = info.hits + info.misses
        return {
            "componentType": "component",
            "observedValue": round(100 * info.hits / looked_up, 1) if looked_up else 0,
            "observedUnit": "percent hits",
            "status": "pass",
            "output": (
                f"{info.hits} hits, {info.misses} misses, {info.currsize}/{info.maxsize} entries"
                if self.cache_size
                else "off (LOCATION_CACHE_SIZE=0)"
            ),
        }


def not_imported_reason(auto_import: bool) -> str:
    if auto_import:
        return "no cities imported yet: the first start imports them in the background"
    return "no cities imported: run `lumen locations import`"


def _stop_with_parent():
    """Linux: the import ends with the server that started it (its transaction rolls back),
    rather than running on alone. Resolved before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)
