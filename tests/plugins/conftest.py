"""Fixtures shared by the locations tests: cities15000 built once per session, and imported
once per session and backend into the session's database."""

from __future__ import annotations

import pytest

from lumen_plugins.locations import gazetteer, importer


@pytest.fixture(scope="session")
def cities15000() -> gazetteer.Gazetteer:
    return gazetteer.build(gazetteer.read_dataset("cities15000"), "cities15000")


@pytest.fixture(scope="session")
def imported(backend, cities15000):
    """The session's database of this backend, with cities15000 imported (once)."""
    importer.write(backend[2], cities15000)
    return cities15000
