"""The CORS policy: which origins may read Lumen's answers, loaded and checked at start-up.

ALLOWED_ORIGINS, CORS_ORIGIN_REGEX, CORS_ALLOW_CREDENTIALS, CORS_MAX_AGE and CORS_EXPOSE_HEADERS
are this plugin's; their defaults follow the core's ENVIRONMENT. A bad value raises ConfigError
naming it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from marshmallow import ValidationError, fields, validate

from lumen import ConfigError, SettingsSchema, boolean, text

DEVELOPMENT_ORIGINS = tuple(
    f"http://{host}:{port}" for host in ("localhost", "127.0.0.1") for port in (3000, 5173, 8080)
)
ALLOWED_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "X-Requested-With")
# RateLimit, RateLimit-Policy and Retry-After: the ratelimit plugin's answers, readable by pages.
EXPOSED_HEADERS = (
    "Content-Length",
    "X-Total-Count",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
)

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110)
# A host no deployment owns: a regex that accepts it accepts any site.
_PROBE_ORIGINS = ("https://cors-probe.invalid", "http://cors-probe.invalid")


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not an origin as a browser serialises it (``scheme://host[:port]``),
    or None when it is one."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return "must be scheme://host[:port]"
    if scheme.lower() not in _DEFAULT_PORTS:
        return "scheme must be http or https"
    end = min((rest.find(mark) for mark in "/?#" if mark in rest), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        return "must not contain user info"
    if tail == "/":
        return "must not end with a slash"
    if tail:
        part = {"/": "path", "?": "query", "#": "fragment"}[tail[0]]
        return f"must not have a {part}"
    if origin != origin.lower():
        return "must be lowercase, as browsers send it"
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        port = after[1:] if after.startswith(":") else None
        valid_host = bool(bracket) and after in ("", f":{port}") and _is_ipv6(host)
    else:
        host, colon, port = authority.partition(":")
        port = port if colon else None
        valid_host = _HOSTNAME.fullmatch(host) is not None
    if not host:
        return "must name a host"
    if not valid_host:
        return "host must be a DNS name or an IP address (CORS_ORIGIN_REGEX takes patterns)"
    if port is not None:
        if not (port.isascii() and port.isdigit() and port == str(int(port))):
            return "port must be a number from 1 to 65535"
        if not 1 <= int(port) <= 65535:
            return "port must be a number from 1 to 65535"
        if port == _DEFAULT_PORTS[scheme]:
            return f"must leave out the default port {port}, as browsers do"
    return None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _valid_origin_regex(pattern: str) -> None:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression ({exc})") from None
    if any(regex.fullmatch(probe) for probe in _PROBE_ORIGINS):
        raise ValidationError("matches any host; anchor it to your own domain")
    if regex.fullmatch("null"):
        raise ValidationError("must not match 'null'")


def _valid_header_list(value: str) -> None:
    for name in split(value):
        if name == "*":
            raise ValidationError("list header names; '*' is not allowed")
        if not _TOKEN.fullmatch(name):
            raise ValidationError(f"{name!r} is not a header name")


class CorsSettings(SettingsSchema):
    allowed_origins = text("ALLOWED_ORIGINS")
    origin_regex = text("CORS_ORIGIN_REGEX", validate=_valid_origin_regex)
    allow_credentials = boolean("CORS_ALLOW_CREDENTIALS", False)
    # Browsers cap it anyway (Chromium at 2 hours, Firefox at 24).
    max_age = fields.Integer(
        load_default=600, validate=validate.Range(min=0, max=86400), data_key="CORS_MAX_AGE"
    )
    expose_headers = text("CORS_EXPOSE_HEADERS", validate=_valid_header_list)


def split(value: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def allowed_origins(raw: str | None, environment: str) -> tuple[frozenset[str], bool]:
    """The listed origins and whether ``*`` (any origin) was given, from ALLOWED_ORIGINS."""
    if raw is None:
        defaults = DEVELOPMENT_ORIGINS if environment == "development" else ()
        return frozenset(defaults), False
    entries = split(raw)
    production = environment == "production"
    if "*" in entries:
        if production:
            raise ConfigError("ALLOWED_ORIGINS", raw, "'*' is refused in production")
        if len(entries) > 1:
            raise ConfigError("ALLOWED_ORIGINS", raw, "'*' must be the only entry")
        return frozenset(), True
    for entry in entries:
        if entry == "null":
            if production:
                # Every sandboxed iframe and local file sends it: as good as '*'.
                raise ConfigError("ALLOWED_ORIGINS", raw, "'null' is refused in production")
            continue
        problem = origin_problem(entry)
        if problem:
            raise ConfigError("ALLOWED_ORIGINS", entry, f"each origin {problem}")
    return frozenset(entries), False


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins may read responses, and what a preflight may ask for."""

    origins: frozenset[str]
    any_origin: bool = False
    origin_regex: re.Pattern | None = None
    allow_credentials: bool = False
    max_age: int = 600
    expose_headers: tuple[str, ...] = EXPOSED_HEADERS

    def allows(self, origin: str) -> bool:
        if origin in self.origins:
            return True
        # 'null' passes only when listed; a pattern only ever matches a well-formed origin.
        if origin == "null" or origin_problem(origin) is not None:
            return False
        if self.any_origin:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(origin) is not None


def build_policy(section, environment: str) -> CorsPolicy:
    """The policy from the plugin's settings (a loaded CorsSettings) and the deployment's
    ENVIRONMENT; raises ConfigError naming the first bad variable."""
    origins, any_origin = allowed_origins(section.allowed_origins, environment)
    if section.allow_credentials and (any_origin or "null" in origins):
        raise ConfigError(
            "CORS_ALLOW_CREDENTIALS",
            "true",
            "must not be true while ALLOWED_ORIGINS has '*' or 'null'",
        )
    extra = split(section.expose_headers or "")
    known = {name.lower() for name in EXPOSED_HEADERS}
    regex = section.origin_regex
    return CorsPolicy(
        origins=origins,
        any_origin=any_origin,
        origin_regex=re.compile(regex) if regex else None,
        allow_credentials=section.allow_credentials,
        max_age=section.max_age,
        expose_headers=EXPOSED_HEADERS + tuple(n for n in extra if n.lower() not in known),
    )
