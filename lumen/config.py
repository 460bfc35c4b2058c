"""Settings from the environment, validated by marshmallow schemas.

Every variable the core reads is declared once in ``CoreSettingsSchema``: its name, coercion,
default and rule. Plugins declare their own variables the same way and load them with
``load_section``, so a bad value anywhere stops start-up with the same one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

ENVIRONMENTS = ("development", "staging", "production")
SECRET_SUFFIXES = ("PASSWORD", "_SECRET", "_TOKEN")


class ConfigError(Exception):
    """A setting is invalid; ``str()`` is the one line shown to the operator."""

    def __init__(self, variable: str, value: Any, rule: str):
        self.variable, self.value, self.rule = variable, value, rule
        shown = mask_value(variable, value)
        super().__init__(f"invalid setting {variable}={shown!r}: {rule}")


def _env(name: str, **kwargs) -> dict:
    return {"data_key": name, **kwargs}


class _Bool(fields.Boolean):
    truthy = {"1", "true", "yes", "on", "True", "TRUE", True}
    falsy = {"0", "false", "no", "off", "False", "FALSE", "", False}


def positive_int(name: str, default: int, minimum: int = 1) -> fields.Integer:
    return fields.Integer(load_default=default, validate=validate.Range(min=minimum), **_env(name))


class CoreSettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    database_url = fields.String(load_default=None, **_env("DATABASE_URL"))
    db_pool_size = positive_int("DB_POOL_SIZE", 10)
    db_max_overflow = positive_int("DB_MAX_OVERFLOW", 20, minimum=0)
    db_pool_timeout = fields.Float(
        load_default=30.0,
        validate=validate.Range(min=0, min_inclusive=False),
        **_env("DB_POOL_TIMEOUT"),
    )
    db_pool_recycle = positive_int("DB_POOL_RECYCLE", 3600, minimum=-1)
    # "null" opens a connection per checkout: only behind an external pooler such as PgBouncer.
    db_pool_class = fields.String(
        load_default="queue", validate=validate.OneOf(("queue", "null")), **_env("DB_POOL_CLASS")
    )
    instance_connection_name = fields.String(load_default=None, **_env("INSTANCE_CONNECTION_NAME"))
    db_user = fields.String(load_default=None, **_env("DB_USER"))
    db_password = fields.String(load_default=None, **_env("DB_PASSWORD"))
    db_name = fields.String(load_default=None, **_env("DB_NAME"))

    redis_url = fields.String(load_default=None, **_env("REDIS_URL"))
    redis_password = fields.String(load_default=None, **_env("REDIS_PASSWORD"))

    environment = fields.String(
        load_default="development", validate=validate.OneOf(ENVIRONMENTS), **_env("ENVIRONMENT")
    )
    allowed_origins = fields.String(load_default=None, **_env("ALLOWED_ORIGINS"))
    debug = _Bool(load_default=False, **_env("DEBUG"))
    log_level = fields.String(
        load_default=None,
        validate=validate.OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        **_env("LOG_LEVEL"),
    )
    log_format = fields.String(
        load_default="text", validate=validate.OneOf(("text", "json")), **_env("LOG_FORMAT")
    )

    storage_path = fields.String(load_default="storage", **_env("STORAGE_PATH"))
    max_storage_gb = fields.Float(
        load_default=40.0,
        validate=validate.Range(min=0, min_inclusive=False),
        **_env("MAX_STORAGE_GB"),
    )
    max_upload_mb = fields.Float(
        load_default=25.0,
        validate=validate.Range(min=0, min_inclusive=False),
        **_env("MAX_UPLOAD_MB"),
    )
    thumbnail_size = positive_int("THUMBNAIL_SIZE", 512, minimum=16)
    # Decoding costs about 4 bytes of memory per pixel: this bounds what one upload costs.
    max_image_megapixels = fields.Float(
        load_default=50.0,
        validate=validate.Range(min=0, min_inclusive=False),
        **_env("MAX_IMAGE_MEGAPIXELS"),
    )
    token_ttl_hours = positive_int("TOKEN_TTL_HOURS", 720)
    open_registration = _Bool(load_default=True, **_env("LUMEN_OPEN_REGISTRATION"))

    cache_ttl_days = fields.Float(
        load_default=7.0,
        validate=validate.Range(min=0, min_inclusive=False),
        **_env("CACHE_TTL_DAYS"),
    )
    cache_warmup_enabled = _Bool(load_default=False, **_env("CACHE_WARMUP_ENABLED"))
    cache_warmup_batch_size = positive_int("CACHE_WARMUP_BATCH_SIZE", 50)
    location_cache_size = positive_int("LOCATION_CACHE_SIZE", 1000, minimum=0)
    metrics_enabled = _Bool(load_default=False, **_env("METRICS_ENABLED"))
    health_check_interval = fields.Float(
        load_default=5.0, validate=validate.Range(min=0), **_env("HEALTH_CHECK_INTERVAL")
    )
    health_check_timeout_ms = positive_int("HEALTH_CHECK_TIMEOUT_MS", 1000)

    lumen_plugins = fields.String(load_default=None, **_env("LUMEN_PLUGINS"))


def _first_error(err: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    variable, messages = next(iter(err.normalized_messages().items()))
    message = messages[0] if isinstance(messages, list) else str(messages)
    rule = message.rstrip(".")
    rule = rule[:1].lower() + rule[1:]
    return ConfigError(variable, environ.get(variable, ""), rule)


# The kinds of section loaded in this process, so `lumen config check` can show the plugins'
# variables too. Schema types only: no per-app state lives here.
_sections: dict[str, type[Schema]] = {}


def load_section(schema: Schema, environ: Mapping[str, str]) -> dict[str, Any]:
    """Load ``schema`` from ``environ``; raise ConfigError naming the first bad variable.

    Empty strings count as unset, as most deployment tools write unset variables that way.
    """
    present = {k: v for k, v in environ.items() if v != ""}
    try:
        values = schema.load(present)
    except ValidationError as err:
        raise _first_error(err, environ) from None
    _sections.setdefault(f"{type(schema).__module__}.{type(schema).__qualname__}", type(schema))
    return values


def plugin_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every variable of the sections plugins loaded in this process, secrets masked."""
    shown: dict[str, Any] = {}
    for schema_type in _sections.values():
        if schema_type is CoreSettingsSchema:
            continue
        schema = schema_type()
        values = load_section(schema, environ)
        for attr, field in schema.fields.items():
            if field.data_key and not field.load_only:
                value = (
                    values.get(attr) if isinstance(values, dict) else environ.get(field.data_key)
                )
                shown[field.data_key] = mask_value(field.data_key, value)
    return shown


class Settings(Mapping):
    """The effective settings: attribute access to the loaded values, plus the raw environment
    (``environ``) so plugins can load their own sections from it."""

    def __init__(self, values: dict[str, Any], environ: Mapping[str, str]):
        self._values = dict(values)
        self.environ = dict(environ)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> Settings:
        return Settings({**self._values, **changes}, self.environ)

    @property
    def enabled_plugins(self) -> list[str] | None:
        """Plugin names from LUMEN_PLUGINS: None for "all installed", [] for "none"."""
        if self.lumen_plugins is None:
            return None
        names = [name.strip() for name in self.lumen_plugins.split(",") if name.strip()]
        return [] if names == ["none"] else names

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """Every setting by variable name, secrets masked: safe to print or log."""
        schema = CoreSettingsSchema()
        out = {}
        for attr, field in schema.fields.items():
            out[field.data_key] = mask_value(field.data_key, self._values.get(attr))
        return out


def mask_value(variable: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    if variable.upper().endswith(SECRET_SUFFIXES):
        return "********"
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """The URL with its password replaced by ********."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (a bad IPv6 literal, say): hide all of the user info, if any.
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}********@{rest.rpartition('@')[2]}" if "@" in rest else url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:********@{netloc[1]}"))


def _with_driver(url: str) -> str:
    # psycopg2 is the driver Lumen ships with; a bare postgresql:// (or the postgres:// some
    # platforms hand out) would make SQLAlchemy look for another one.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def _database_url(values: dict[str, Any]) -> str:
    if values["database_url"]:
        return _with_driver(values["database_url"])
    if values["instance_connection_name"]:
        # The Cloud SQL form: connect over the unix socket the Cloud SQL proxy provides.
        for attr, var in (("db_user", "DB_USER"), ("db_name", "DB_NAME")):
            if not values[attr]:
                raise ConfigError(var, "", "required when INSTANCE_CONNECTION_NAME is set")
        user = quote(values["db_user"], safe="")
        password = values["db_password"]
        auth = f"{user}:{quote(password, safe='')}" if password else user
        socket = f"/cloudsql/{values['instance_connection_name']}"
        return f"postgresql+psycopg2://{auth}@/{values['db_name']}?host={socket}"
    return "sqlite:///" + os.path.abspath("lumen.db")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: os.environ).

    Raises ConfigError naming the first bad variable.
    """
    environ = dict(os.environ if environ is None else environ)
    values = load_section(CoreSettingsSchema(), environ)
    values["database_url"] = _database_url(values)
    values["storage_path"] = os.path.abspath(values["storage_path"])
    if values["log_level"] is None:
        values["log_level"] = "DEBUG" if values["debug"] else "INFO"
    return Settings(values, environ)
