"""Plugins that exist only for the tests: each implements hooks to observe or to fail."""
