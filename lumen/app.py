"""The application object and the pure factory that builds the WSGI app from it.

``create_app`` calls the hooks at fixed points, in this order, and no plugin calls a hook:
settings -> startup -> health checks -> metrics -> middleware -> routes -> error handlers ->
openapi. The CLI and the gunicorn master run the first two only (``Lumen.start``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import falcon
import pluggy
import redis
from falcon.routing import CompiledRouter
from marshmallow import Schema
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from lumen import db, errors, jsonenc, session
from lumen.config import (
    ConfigError,
    CoreSettingsSchema,
    Section,
    ServeSettingsSchema,
    Settings,
    load_section,
    variables,
)
from lumen.plugins import Hooks, PluginError, collect, make_plugin_manager
from lumen.redis_calls import RedisCalls
from lumen.storage import Storage
from lumen.tally import Tally

log = logging.getLogger(__name__)

_CHECK_NAME = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")


class Lumen:
    """What every hook receives as ``lumen``: the settings, the shared engine and Redis client,
    storage, the plugin manager, and the registries the core fills from the hooks (routes,
    health checks, the metrics registry). Each plugin keeps what it opens in ``state``, under
    its own name."""

    def __init__(
        self, settings: Settings, plugin_manager: pluggy.PluginManager, engine: Engine | None = None
    ):
        self.settings = settings
        self.pm = plugin_manager
        self.hook = Hooks(plugin_manager)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else db.make_engine(settings)
        # Objects stay readable after commit: events are delivered with them, after the commit.
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.storage = Storage(settings.storage_path, settings.max_storage_gb)
        self.redis = _redis_client(settings)
        # The hot paths' commands (cache lookups, limit checks, the token cache): see
        # lumen.redis_calls. None without Redis, like ``redis``.
        self.redis_calls = RedisCalls(self.redis) if self.redis is not None else None
        self.state: dict[str, Any] = {}
        self.sections: dict[type, tuple[str, Section]] = {}
        self.routes: dict[str, tuple[str, Any]] = {}
        self.health_checks: dict[str, Callable[[], Any]] = {}
        self.metrics_registry: CollectorRegistry | None = None
        # Hot paths' counter increments, added to the metrics in one go (lumen.tally).
        self.tally = Tally()
        self.openapi: dict | None = None
        self.router: CompiledRouter | None = None

    @property
    def plugin_names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin() if name != "core")

    # --- start-up and shut-down ------------------------------------------------------------

    def start(self) -> None:
        """Load every plugin's settings, then start the plugins."""
        self._load_plugin_settings()
        collect(self.pm, "lumen_startup", lumen=self)

    def _load_plugin_settings(self) -> None:
        owners = dict.fromkeys(
            variables(CoreSettingsSchema) + variables(ServeSettingsSchema), "core"
        )
        for name, schema_type in collect(self.pm, "lumen_settings"):
            if not (isinstance(schema_type, type) and issubclass(schema_type, Schema)):
                raise PluginError(f"plugin {name!r}: lumen_settings must return a Schema class")
            for variable in variables(schema_type):
                if variable in owners:
                    raise PluginError(
                        f"plugin {name!r} declares {variable}, already declared by "
                        f"{owners[variable]!r}"
                    )
                owners[variable] = name
            self.sections[schema_type] = (name, load_section(schema_type, self.settings.environ))

    def settings_of(self, schema_type: type) -> Section:
        """The loaded values of a plugin's settings schema (the one its lumen_settings returns)."""
        return self.sections[schema_type][1]

    def shutdown(self) -> None:
        collect(self.pm, "lumen_shutdown", isolate=True, lumen=self)
        if self.redis is not None:
            self.redis.close()
        if self._owns_engine:  # an engine handed in belongs to its giver
            self.engine.dispose()

    # --- what the core offers plugins and resources ------------------------------------------

    def unit_of_work(self):
        """A session for work outside a request: commits, then delivers the domain events."""
        return session.unit_of_work(self)

    def reading(self):
        """A connection for reads that need no snapshot across their statements: each runs on
        its own, without a transaction's BEGIN and COMMIT (``with lumen.reading() as c:``)."""
        return db.reading(self.engine)

    def cached(self, key: str, tags: tuple[str, ...], loader: Callable[[], Any]) -> Any:
        """Read-through cache: a cache plugin answers, or the loader does. ``tags`` name what
        the value depends on; a change that purges one of them makes the value stale."""
        value = self.hook.lumen_cached(lumen=self, key=key, tags=tuple(tags), loader=loader)
        return loader() if value is None else value

    def purge(self, tags: tuple[str, ...], change: str | None = None) -> None:
        """Make stale every cached value that depends on one of ``tags``: after a unit of work
        (with the id of a purge made before its commit, if any), or after a change made outside
        one, such as a data import. A failing plugin is logged; the change stands."""
        collect(self.pm, "lumen_purge", isolate=True, lumen=self, tags=tuple(tags), change=change)

    def pool_figures(self) -> dict[str, int]:
        return db.pool_figures(self.engine)

    def route_template(self, path: str) -> str | None:
        """The route template ``path`` matches, for requests answered before routing."""
        found = self.router.find(path) if self.router is not None else None
        return found[3] if found else None


def _redis_client(settings: Settings) -> redis.Redis | None:
    """The process's one Redis client (None without REDIS_URL). Short timeouts and no retries:
    a Redis that does not answer must cost a request milliseconds, not seconds."""
    if not settings.redis_url:
        return None
    timeout = settings.redis_timeout_ms / 1000
    try:
        return redis.Redis.from_url(
            settings.redis_url,
            password=settings.redis_password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigError("REDIS_URL", settings.redis_url, str(exc)) from None


class App(falcon.App):
    """falcon.App carrying its :class:`Lumen` object (``app.lumen``)."""

    lumen: Lumen


def _health_checks(lumen: Lumen) -> dict[str, Callable[[], Any]]:
    """Every plugin's checks by name. A name given twice, or not shaped
    "component:measurement", stops start-up with the plugin named."""
    checks: dict[str, Callable[[], Any]] = {}
    owners: dict[str, str] = {}
    for owner, offered in collect(lumen.pm, "lumen_health_checks", lumen=lumen):
        for name, check in offered.items():
            if not _CHECK_NAME.match(name):
                raise PluginError(
                    f"plugin {owner!r} adds health check {name!r}: "
                    "the name must be 'component:measurement'"
                )
            if name in owners:
                raise PluginError(
                    f"plugin {owner!r} adds health check {name!r} already added by {owners[name]!r}"
                )
            checks[name], owners[name] = check, owner
    return dict(sorted(checks.items()))


def _middleware(lumen: Lumen) -> list:
    pairs = [
        pair for _, result in collect(lumen.pm, "lumen_middleware", lumen=lumen) for pair in result
    ]
    return [middleware for _, middleware in sorted(pairs, key=lambda pair: pair[0])]


def _add_routes(app: App, lumen: Lumen) -> None:
    # In registration order, the core's first: no plugin can take over a core route.
    for owner, result in reversed(collect(lumen.pm, "lumen_routes", lumen=lumen)):
        for template, resource in result:
            if template in lumen.routes:
                other = lumen.routes[template][0]
                raise PluginError(
                    f"plugin {owner!r} adds route {template} already added by {other!r}"
                )
            lumen.routes[template] = (owner, resource)
            app.add_route(template, resource)


def create_app(
    settings: Settings | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    engine: Engine | None = None,
) -> App:
    """Build the WSGI app. Pure: everything it needs comes in as arguments, and what is not
    given is built from the environment."""
    from lumen.config import load_settings
    from lumen.openapi import build_spec

    settings = settings if settings is not None else load_settings()
    pm = (
        plugin_manager
        if plugin_manager is not None
        else make_plugin_manager(settings.enabled_plugins)
    )
    lumen = Lumen(settings, pm, engine)
    lumen.start()
    lumen.health_checks = _health_checks(lumen)
    lumen.metrics_registry = CollectorRegistry()
    lumen.metrics_registry.register(lumen.tally)  # first: every reading flushes it
    collect(pm, "lumen_metrics", lumen=lumen, registry=lumen.metrics_registry)
    lumen.router = CompiledRouter()
    app = App(
        middleware=_middleware(lumen),
        request_type=session.Request,
        router=lumen.router,
        cors_enable=False,
    )
    app.lumen = lumen
    app.req_options.strip_url_path_trailing_slash = True
    # Bodies out through orjson; bodies in are parsed by lumen.schemas, whose errors name fields.
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=jsonenc.dumps
    )
    errors.install(app)
    _add_routes(app, lumen)
    for _, result in collect(pm, "lumen_error_handlers", lumen=lumen):
        for exception_type, handler in result:
            app.add_error_handler(exception_type, handler)
    lumen.openapi = build_spec(lumen)
    log.info("app ready", extra={"plugins": lumen.plugin_names, "routes": len(lumen.routes)})
    return app
