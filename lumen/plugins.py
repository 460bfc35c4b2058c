"""The plugin manager: built-in and third-party plugins found through the "lumen" entry points."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

import pluggy

from lumen import hookspecs
from lumen.config import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lumen"


class PluginError(Exception):
    """A plugin failed to import or to start; the message names it."""


def installed_plugins() -> dict[str, EntryPoint]:
    """Every plugin installed in this environment, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def make_plugin_manager(enabled: list[str] | None = None) -> pluggy.PluginManager:
    """A manager with the core and the enabled plugins registered.

    ``enabled`` is the LUMEN_PLUGINS list; None enables every installed plugin.
    """
    from lumen import core_plugin

    pm = pluggy.PluginManager("lumen")
    pm.add_hookspecs(hookspecs)
    pm.register(core_plugin, name="core")
    installed = installed_plugins()
    names = sorted(installed) if enabled is None else enabled
    for name in names:
        if name not in installed:
            allowed = ", ".join(sorted(installed)) or "none installed"
            raise ConfigError(
                "LUMEN_PLUGINS", ",".join(names), f"unknown plugin {name!r}; installed: {allowed}"
            )
    for name in names:
        try:
            module = installed[name].load()
        except Exception as exc:
            raise PluginError(f"plugin {name!r} failed to import: {exc!r}") from exc
        if pm.get_plugin(name) is None:
            pm.register(module, name=name)
    # A misspelled hook implementation is an error, not a silent no-op.
    pm.check_pending()
    return pm


def plugin_name(pm: pluggy.PluginManager, hookimpl) -> str:
    return pm.get_name(hookimpl.plugin) or repr(hookimpl.plugin)


def collect(pm: pluggy.PluginManager, hook_name: str, *, isolate: bool = False, **kwargs):
    """Call every implementation of ``hook_name`` in pluggy's order; return (plugin name,
    result) for each result that is not None.

    Without ``isolate`` the first failure stops the call as a PluginError naming the plugin
    (a ConfigError passes through: its one line already names the setting). With ``isolate`` a
    failure is logged and the other plugins still run (domain events: the change is committed).
    Wrapper implementations are refused: a wrapper of a hook collected this way would not wrap.
    """
    results = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        name = plugin_name(pm, impl)
        if impl.wrapper or impl.hookwrapper:
            raise PluginError(
                f"plugin {name!r} implements {hook_name} as a wrapper, which Lumen does not call"
            )
        try:
            result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except Exception as exc:
            if isolate:
                log.exception("plugin hook failed", extra={"plugin": name, "hook": hook_name})
                continue
            if isinstance(exc, ConfigError):
                raise
            raise PluginError(f"plugin {name!r} failed in {hook_name}: {exc!r}") from exc
        if result is not None:
            results.append((name, result))
    return results
