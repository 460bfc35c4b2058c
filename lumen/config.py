"""Settings from the environment, validated by marshmallow schemas.

Each variable is declared once, by whoever reads it: the core's in ``CoreSettingsSchema``, the
server's (gunicorn) in ``ServeSettingsSchema``, each plugin's in the schema its
``lumen_settings`` hook returns. All are loaded the same way, so a bad value anywhere stops
start-up with the same one line naming the variable, the value and the rule.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from lumen.secrets import mask
from lumen.validation import first_problem

ENVIRONMENTS = ("development", "staging", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
WORKER_CLASSES = ("sync", "gthread")


class ConfigError(Exception):
    """A setting is invalid; ``str()`` is the one line shown to the operator."""

    def __init__(self, variable: str, value: Any, rule: str):
        self.variable, self.value, self.rule = variable, value, rule
        super().__init__(f"invalid setting {variable}={mask(variable, value)!r}: {rule}")


class SettingsSchema(Schema):
    """The base of every settings section: each field names its variable with ``data_key``;
    variables the section does not declare are ignored."""

    class Meta:
        unknown = EXCLUDE


# --- fields: one dialect for every section ---------------------------------------------------


class Bool(fields.Boolean):
    """1/0, true/false, yes/no, on/off, in any case."""

    truthy = {"1", "true", "yes", "on", True}
    falsy = {"0", "false", "no", "off", False}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = value.strip().lower()
        return super()._deserialize(value, attr, data, **kwargs)


class Choice(fields.String):
    """One of a few words, in any case (``LOG_LEVEL=warning`` works); loaded in the case the
    choices are written in."""

    def __init__(self, choices: tuple[str, ...], **kwargs):
        self.choices = choices
        self._by_folded = {choice.casefold(): choice for choice in choices}
        super().__init__(validate=validate.OneOf(choices), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        return self._by_folded.get(text.strip().casefold(), text)


def boolean(variable: str, default: bool) -> Bool:
    return Bool(load_default=default, data_key=variable)


def choice(variable: str, choices: tuple[str, ...], default: str | None) -> Choice:
    return Choice(choices, load_default=default, data_key=variable)


def positive_int(variable: str, default: int | None, minimum: int = 1) -> fields.Integer:
    return fields.Integer(
        load_default=default, validate=validate.Range(min=minimum), data_key=variable
    )


def positive_number(
    variable: str, default: float, minimum: float = 0, maximum: float | None = None
) -> fields.Float:
    """A number above ``minimum`` (exclusive), and at most ``maximum`` where one is given."""
    return fields.Float(
        load_default=default,
        validate=validate.Range(min=minimum, min_inclusive=False, max=maximum),
        data_key=variable,
    )


def text(variable: str, default: str | None = None, **kwargs) -> fields.String:
    return fields.String(load_default=default, data_key=variable, **kwargs)


# --- sections --------------------------------------------------------------------------------


class Section(Mapping):
    """The loaded values of one schema, by attribute or by item."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

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


def load_section(schema: type[Schema] | Schema, environ: Mapping[str, str]) -> Section:
    """Load a settings schema from ``environ``; raise ConfigError naming the first bad variable.

    Empty strings count as unset, as most deployment tools write unset variables that way.
    """
    schema = schema() if isinstance(schema, type) else schema
    present = {k: v for k, v in environ.items() if v != ""}
    try:
        return Section(schema.load(present))
    except ValidationError as err:
        variable, rule = first_problem(err)
        raise ConfigError(variable, environ.get(variable, ""), rule) from None


def variables(schema: type[Schema] | Schema) -> list[str]:
    """The environment variables a settings schema declares, in declaration order."""
    schema = schema() if isinstance(schema, type) else schema
    return [field.data_key for field in schema.fields.values() if field.data_key]


def shown(schema: type[Schema] | Schema, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every variable of a section with its effective value, secrets masked: safe to print."""
    schema = schema() if isinstance(schema, type) else schema
    values = load_section(schema, environ)
    return {
        field.data_key: mask(field.data_key, values.get(attr))
        for attr, field in schema.fields.items()
        if field.data_key
    }


# --- the core's and the server's sections ------------------------------------------------------


class CoreSettingsSchema(SettingsSchema):
    database_url = text("DATABASE_URL")
    db_pool_size = positive_int("DB_POOL_SIZE", 10)
    db_max_overflow = positive_int("DB_MAX_OVERFLOW", 20, minimum=0)
    db_pool_timeout = positive_number("DB_POOL_TIMEOUT", 30.0)
    db_pool_recycle = positive_int("DB_POOL_RECYCLE", 3600, minimum=-1)
    # A server that takes the connection but never answers (a partition, a full backlog) must
    # cost a request seconds, not the worker's whole timeout.
    db_connect_timeout = positive_int("DB_CONNECT_TIMEOUT", 5, minimum=2)
    # "null" opens a connection per checkout: only behind an external pooler such as PgBouncer.
    db_pool_class = choice("DB_POOL_CLASS", ("queue", "null"), "queue")
    instance_connection_name = text("INSTANCE_CONNECTION_NAME")
    db_user = text("DB_USER")
    db_password = text("DB_PASSWORD")
    db_name = text("DB_NAME")

    # One Redis client per process, shared by every plugin that uses Redis.
    redis_url = text("REDIS_URL")
    redis_password = text("REDIS_PASSWORD")
    redis_timeout_ms = positive_int("REDIS_TIMEOUT_MS", 50)
    # The core's one key: the generation each worker's cache of verified tokens follows.
    token_cache_key = text("TOKEN_CACHE_KEY", "lumen:tokens:generation")

    environment = choice("ENVIRONMENT", ENVIRONMENTS, "development")
    debug = boolean("DEBUG", False)
    log_level = choice("LOG_LEVEL", LOG_LEVELS, None)
    log_format = choice("LOG_FORMAT", ("text", "json"), "text")

    storage_path = text("STORAGE_PATH", "storage")
    max_storage_gb = positive_number("MAX_STORAGE_GB", 40.0)
    # Unset: no per-user limit, only the global one.
    max_user_storage_gb = positive_number("MAX_USER_STORAGE_GB", None)
    max_upload_mb = positive_number("MAX_UPLOAD_MB", 25.0)
    thumbnail_size = positive_int("THUMBNAIL_SIZE", 512, minimum=16)
    # Decoding costs about 4 bytes of memory per pixel: this bounds what one upload costs.
    max_image_megapixels = positive_number("MAX_IMAGE_MEGAPIXELS", 50.0)
    token_ttl_hours = positive_int("TOKEN_TTL_HOURS", 720)
    open_registration = boolean("LUMEN_OPEN_REGISTRATION", True)

    lumen_plugins = text("LUMEN_PLUGINS")


def _readable_file(path: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValidationError("must be a readable file")


class ServeSettingsSchema(SettingsSchema):
    """What gunicorn.conf.py reads: the server, not the app."""

    bind = text("LUMEN_BIND")
    port = fields.Integer(
        load_default=None, validate=validate.Range(min=1, max=65535), data_key="PORT"
    )
    workers = positive_int("WEB_CONCURRENCY", lambda: 2 * multiprocessing.cpu_count())
    worker_class = choice("GUNICORN_WORKER_CLASS", WORKER_CLASSES, "sync")
    threads = positive_int("GUNICORN_THREADS", 1)
    timeout = positive_int("GUNICORN_TIMEOUT", 30)
    # "-" is standard output; "off" turns the access log off.
    access_log = text("GUNICORN_ACCESS_LOG", "-")
    tls_cert = text("LUMEN_TLS_CERT", validate=_readable_file)
    tls_key = text("LUMEN_TLS_KEY", validate=_readable_file)

    @validates_schema
    def _tls_pair(self, data, **kwargs):
        cert, key = data.get("tls_cert"), data.get("tls_key")
        if cert and not key:
            raise ValidationError("required when LUMEN_TLS_CERT is set", "LUMEN_TLS_KEY")
        if key and not cert:
            raise ValidationError("required when LUMEN_TLS_KEY is set", "LUMEN_TLS_CERT")


def serve_address(serve: Section) -> str:
    """LUMEN_BIND, else 0.0.0.0:$PORT (platforms that hand out a port), else loopback."""
    if serve.bind:
        return serve.bind
    return f"0.0.0.0:{serve.port}" if serve.port else "127.0.0.1:8000"


class Settings(Section):
    """The core's settings, plus the environment they came from (``environ``), from which each
    plugin's section is loaded."""

    def __init__(self, values: Mapping[str, Any], environ: Mapping[str, str]):
        super().__init__(values)
        self.environ = dict(environ)

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


def _with_driver(url: str) -> str:
    # psycopg2 is the driver Lumen ships with; a bare postgresql:// (or the postgres:// some
    # platforms hand out) would make SQLAlchemy look for another one.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def _database_url(values: Section) -> str:
    if values.database_url:
        return _with_driver(values.database_url)
    if values.instance_connection_name:
        # The Cloud SQL form: connect over the unix socket the Cloud SQL proxy provides.
        for attr, var in (("db_user", "DB_USER"), ("db_name", "DB_NAME")):
            if not values[attr]:
                raise ConfigError(var, "", "required when INSTANCE_CONNECTION_NAME is set")
        user = quote(values.db_user, safe="")
        password = values.db_password
        auth = f"{user}:{quote(password, safe='')}" if password else user
        socket = f"/cloudsql/{values.instance_connection_name}"
        return f"postgresql+psycopg2://{auth}@/{values.db_name}?host={socket}"
    return "sqlite:///" + os.path.abspath("lumen.db")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The core's settings from ``environ`` (default: os.environ).

    Raises ConfigError naming the first bad variable.
    """
    environ = dict(os.environ if environ is None else environ)
    values = dict(load_section(CoreSettingsSchema, environ))
    values["database_url"] = _database_url(Section(values))
    values["storage_path"] = os.path.abspath(values["storage_path"])
    if values["log_level"] is None:
        values["log_level"] = "DEBUG" if values["debug"] else "INFO"
    return Settings(values, environ)
