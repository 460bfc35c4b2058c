"""Falcon resources of the core: users, tokens, photos."""
