"""The application object and the pure factory that builds the WSGI app from it."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import pluggy
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from lumen import db, errors, session
from lumen.config import Settings, load_settings
from lumen.plugins import PluginError, call_each, make_plugin_manager, plugin_name
from lumen.storage import Storage

log = logging.getLogger(__name__)


class Lumen:
    """What every hook receives as ``lumen``: settings, the shared engine, the plugin manager,
    storage, and the registries plugins fill (routes, health checks)."""

    def __init__(
        self, settings: Settings, plugin_manager: pluggy.PluginManager, engine: Engine | None = None
    ):
        self.settings = settings
        self.pm = plugin_manager
        self.hook = plugin_manager.hook
        self.engine = engine if engine is not None else db.make_engine(settings)
        # Objects stay readable after commit: events are delivered with them, after the commit.
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.storage = Storage(settings.storage_path, settings.max_storage_gb)
        self.routes: dict[str, tuple[str, Any]] = {}

    @property
    def plugin_names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin() if name != "core")

    def call_each(self, hook_name: str, **kwargs) -> list:
        """Call a hook with each plugin isolated: one failing plugin does not stop the others."""
        return call_each(self.pm, hook_name, isolate=True, **kwargs)

    def unit_of_work(self):
        return session.unit_of_work(self)

    def cached(self, key: str, loader):
        """Read-through cache: a cache plugin answers, or the loader does."""
        value = self.hook.lumen_cached(lumen=self, key=key, loader=loader)
        return loader() if value is None else value

    def pool_figures(self) -> dict[str, int]:
        return db.pool_figures(self.engine)

    def startup(self) -> None:
        call_each(self.pm, "lumen_startup", isolate=False, lumen=self)

    def shutdown(self) -> None:
        self.call_each("lumen_shutdown", lumen=self)
        self.engine.dispose()


class App(falcon.App):
    """falcon.App carrying its :class:`Lumen` object (``app.lumen``)."""

    lumen: Lumen


def _collect_middleware(lumen: Lumen) -> list:
    pairs = [pair for result in lumen.hook.lumen_middleware(lumen=lumen) for pair in result]
    return [middleware for _, middleware in sorted(pairs, key=lambda pair: pair[0])]


def _add_routes(app: App, lumen: Lumen) -> None:
    # Registration order: the core first, so a plugin cannot take over a core route.
    for impl in lumen.hook.lumen_routes.get_hookimpls():
        owner = plugin_name(lumen.pm, impl)
        for template, resource in impl.function(lumen=lumen) or ():
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
    settings = settings if settings is not None else load_settings()
    pm = (
        plugin_manager
        if plugin_manager is not None
        else make_plugin_manager(settings.enabled_plugins)
    )
    lumen = Lumen(settings, pm, engine)
    lumen.startup()
    app = App(
        middleware=_collect_middleware(lumen),
        request_type=session.Request,
        cors_enable=False,
    )
    app.lumen = lumen
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    for result in lumen.hook.lumen_error_handlers(lumen=lumen):
        for exception_type, handler in result:
            app.add_error_handler(exception_type, handler)
    _add_routes(app, lumen)
    log.info("app ready", extra={"plugins": lumen.plugin_names, "routes": len(lumen.routes)})
    return app
