"""Secrets in settings: masked wherever settings are shown, redacted from any text that leaves
the process (log lines, health bodies). One place decides what a secret is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SECRET_SUFFIXES = ("PASSWORD", "_SECRET", "_TOKEN")
MASK = "********"
# Shorter values would be redacted from every line they happen to occur in.
MIN_REDACTED_CHARS = 3


def is_secret(variable: str) -> bool:
    return variable.upper().endswith(SECRET_SUFFIXES)


def mask(variable: str, value: Any) -> Any:
    """A setting's value as it may be shown: secrets masked, passwords in URLs masked."""
    if value is None or value == "":
        return value
    if is_secret(variable):
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """The URL with its password replaced by ********."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Unparseable (a bad IPv6 literal, say): hide all of the user info, if any.
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{MASK}@{rest.rpartition('@')[2]}" if "@" in rest else url
    if password is None:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password
    except ValueError:
        return None


class Redactor:
    """Replaces every secret value of an environment in a text: secret-named variables, and
    passwords inside URLs, in the forms they may take (as given, percent-encoded, decoded)."""

    def __init__(self, environ: Mapping[str, str]):
        found: set[str] = set()
        for name, value in environ.items():
            if not value:
                continue
            secret = value if is_secret(name) else None
            if secret is None and "://" in value:
                secret = _url_password(value)
            if secret:
                found |= {secret, unquote(secret), quote(secret, safe="")}
        # A secret that contains another is replaced first.
        self.secrets = sorted(
            (s for s in found if len(s) >= MIN_REDACTED_CHARS), key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
