"""Lumen: a plugin-based photo-sharing REST backend."""

from lumen.hookspecs import hookimpl

__version__ = "0.1.0"


def create_app(settings=None, plugin_manager=None):
    """Build the WSGI application (see :func:`lumen.app.create_app`)."""
    from lumen.app import create_app as _create_app

    return _create_app(settings=settings, plugin_manager=plugin_manager)


__all__ = ["__version__", "create_app", "hookimpl"]
