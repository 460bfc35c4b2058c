"""Every hook a Lumen plugin can implement, grouped by when the core calls it.

Hooks are called with keyword arguments. ``lumen`` is the running application object
(:class:`lumen.app.Lumen`): settings, engine, plugin manager and registries. The core calls
every hook; no plugin calls one. Start-up order (``create_app``): settings, startup, health
checks, metrics, middleware, routes, error handlers, openapi.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("lumen")
hookimpl = pluggy.HookimplMarker("lumen")


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookspec
def lumen_settings() -> type | None:
    """Return the plugin's settings schema (a ``lumen.SettingsSchema`` subclass)."""


@hookspec
def lumen_startup(lumen) -> None:
    """Validate the plugin's settings and open its clients; raise ConfigError on a bad setting."""


@hookspec
def lumen_shutdown(lumen) -> None:
    """Close the plugin's clients (the worker is exiting)."""


@hookspec
def lumen_before_serve(lumen) -> None:
    """Run once per deployment start, in the serving master before workers fork."""


@hookspec
def lumen_migrations(lumen) -> str | None:
    """Return the folder of the plugin's Alembic branch, if it owns tables."""


# ---------------------------------------------------------------------------
# Web application
# ---------------------------------------------------------------------------


@hookspec
def lumen_middleware(lumen) -> list[tuple[int, Any]]:
    """Return (order, middleware) pairs; lower orders run first on the request."""


@hookspec
def lumen_routes(lumen) -> list[tuple[str, Any]]:
    """Return (uri_template, resource) pairs to add to the app."""


@hookspec
def lumen_error_handlers(lumen) -> list[tuple[type[BaseException], Any]]:
    """Return (exception type, handler) pairs to add to the app."""


@hookspec
def lumen_openapi(lumen, spec) -> None:
    """Add schemas and paths to the apispec ``spec`` served at /openapi.json."""


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@hookspec
def lumen_cli(group) -> None:
    """Add click sub-commands to the ``lumen`` command group."""


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@hookspec
def lumen_health_checks(lumen) -> dict[str, Any]:
    """Return {"component:measurement": callable}; each callable returns one IETF health check
    dict (componentType, observedValue, observedUnit, status, output) or a list of them."""


@hookspec
def lumen_metrics(lumen, registry) -> None:
    """Register the plugin's metrics on the prometheus_client ``registry``."""


# ---------------------------------------------------------------------------
# Domain events: called only after the transaction that made the change committed
# ---------------------------------------------------------------------------


@hookspec
def lumen_photo_created(lumen, photo, changes) -> None:
    """A photo was created (``changes`` names every field)."""


@hookspec
def lumen_photo_updated(lumen, photo, changes) -> None:
    """A photo was updated; ``changes`` maps each changed field to its (old, new) values."""


@hookspec
def lumen_photo_deleted(lumen, photo, changes) -> None:
    """A photo was deleted (``photo`` is its last state)."""


@hookspec
def lumen_user_updated(lumen, user, changes) -> None:
    """A user was updated; ``changes`` maps each changed field to its (old, new) values."""


# ---------------------------------------------------------------------------
# Services the core asks plugins for
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def lumen_nearest_location(lumen, latitude, longitude) -> dict | None:
    """Return the city nearest to the point. Stops at first non-None result."""


@hookspec(firstresult=True)
def lumen_location_lookup(lumen, location_ids) -> dict[int, dict] | None:
    """Return {id: city} for the ids that exist. Stops at first non-None result."""


@hookspec(firstresult=True)
def lumen_cached(lumen, key, tags, loader) -> Any:
    """Return the value for ``key``, which depends on ``tags``, calling ``loader()`` on a miss.
    Values are JSON values or bytes, given back as the same type.

    Stops at first non-None result.
    """


@hookspec
def lumen_prefetch(lumen, key, tags) -> None:
    """The request will read ``key`` (which depends on ``tags``) through ``lumen_cached``: a
    cache may start its lookup now, in the request's next Redis round trip
    (``lumen.redis_calls.defer``). What it reads may answer this request only."""


# ---------------------------------------------------------------------------
# Cache purges: the tags a change purges, after its commit (and, for a change that narrows
# what may be seen, before it too)
# ---------------------------------------------------------------------------


@hookspec
def lumen_purge_before_commit(lumen, tags, change) -> None:
    """A change that narrows what may be seen is about to commit: stop serving, and stop
    storing, every value that depends on ``tags`` until ``lumen_purge`` with the same
    ``change`` follows. Raise to refuse the change: it is rolled back and answered 503."""


@hookspec
def lumen_purge(lumen, tags, change) -> None:
    """Every cached value that depends on one of ``tags`` is stale (called after the commit,
    or after the rollback of a change purged before commit). ``change`` is the id given to
    ``lumen_purge_before_commit``, else None."""
