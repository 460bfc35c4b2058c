"""Lumen's built-in plugins. Each is declared in setup.py under the "lumen" entry points, exactly
as a third-party plugin declares itself, and can be turned off with LUMEN_PLUGINS."""
