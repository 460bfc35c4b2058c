"""Settings: defaults, coercion, the Cloud SQL form, masking, and one clear line per bad value."""

import pytest

from lumen.config import ConfigError, CoreSettingsSchema, load_settings, shown
from lumen.secrets import mask_url

pytestmark = pytest.mark.unit


def test_defaults_give_an_embedded_service(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.database_url == f"sqlite:///{tmp_path}/lumen.db"
    assert (settings.db_pool_size, settings.db_max_overflow) == (10, 20)
    assert (settings.db_pool_timeout, settings.db_pool_recycle) == (30, 3600)
    assert settings.redis_url is None
    assert settings.environment == "development"
    assert settings.storage_path == str(tmp_path / "storage")
    assert settings.max_storage_gb == 40 and settings.redis_timeout_ms == 50
    assert settings.debug is False and settings.log_level == "INFO"
    assert settings.enabled_plugins is None


def test_values_are_coerced():
    settings = load_settings(
        {
            "DB_POOL_SIZE": "3",
            "DEBUG": "true",
            "LUMEN_PLUGINS": "health, cors",
            "ENVIRONMENT": "production",
        }
    )
    assert settings.db_pool_size == 3
    assert settings.debug is True and settings.log_level == "DEBUG"
    assert settings.enabled_plugins == ["health", "cors"]
    assert load_settings({"LUMEN_PLUGINS": "none"}).enabled_plugins == []


def test_bare_postgresql_urls_use_psycopg2():
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert load_settings({"DATABASE_URL": url}).database_url == "postgresql+psycopg2://u@h/db"


def test_cloud_sql_form_builds_the_url():
    settings = load_settings(
        {
            "INSTANCE_CONNECTION_NAME": "proj:europe-west1:main",
            "DB_USER": "lumen",
            "DB_PASSWORD": "p@ss/word",
            "DB_NAME": "photos",
        }
    )
    assert settings.database_url == (
        "postgresql+psycopg2://lumen:p%40ss%2Fword@/photos?host=/cloudsql/proj:europe-west1:main"
    )
    with pytest.raises(ConfigError, match="DB_USER"):
        load_settings({"INSTANCE_CONNECTION_NAME": "a:b:c", "DB_NAME": "x"})


@pytest.mark.parametrize(
    "variable, value, rule",
    [
        ("DB_POOL_SIZE", "abc", "not a valid integer"),
        ("DB_POOL_SIZE", "0", "greater than or equal to 1"),
        ("DB_MAX_OVERFLOW", "-1", "greater than or equal to 0"),
        ("DB_POOL_TIMEOUT", "0", "greater than 0"),
        ("ENVIRONMENT", "prod", "must be one of: development, staging, production"),
        ("DEBUG", "maybe", "not a valid boolean"),
        ("MAX_STORAGE_GB", "lots", "not a valid number"),
        ("LOG_FORMAT", "xml", "must be one of: text, json"),
    ],
)
def test_a_bad_value_names_variable_value_and_rule(variable, value, rule):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}={value!r}:")
    assert rule in message.lower()


def test_secrets_are_masked():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://lumen:hunter22@db/lumen",
            "REDIS_URL": "redis://:sesame99@cache:6379/0",
            "REDIS_PASSWORD": "sesame99",
        }
    )
    values = shown(CoreSettingsSchema, settings.environ)
    assert "hunter22" not in repr(values) and "sesame99" not in repr(values)
    assert values["DATABASE_URL"] == "postgresql://lumen:********@db/lumen"
    assert mask_url("redis://cache:6379") == "redis://cache:6379"
    with pytest.raises(ConfigError) as caught:
        load_settings({"DB_PASSWORD": "", "DB_POOL_SIZE": "x", "REDIS_PASSWORD": "sesame99"})
    assert "sesame99" not in str(caught.value)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("1", True),
        ("YES", True),
        ("On", True),
        ("true", True),
        ("0", False),
        ("No", False),
        ("OFF", False),
        ("False", False),
    ],
)
def test_one_boolean_dialect_in_any_case(written, meant):
    assert load_settings({"DEBUG": written}).debug is meant
    from lumen.config import load_section
    from lumen_plugins.metrics import MetricsSettings

    assert load_section(MetricsSettings, {"METRICS_ENABLED": written}).enabled is meant


@pytest.mark.parametrize(("written", "level"), [("warning", "WARNING"), ("Debug", "DEBUG")])
def test_words_are_taken_in_any_case(written, level):
    assert load_settings({"LOG_LEVEL": written}).log_level == level
    assert load_settings({"ENVIRONMENT": "PRODUCTION"}).environment == "production"


def test_server_settings_default_and_validate():
    from lumen.config import ServeSettingsSchema, load_section, serve_address

    serve = load_section(ServeSettingsSchema, {})
    assert (serve.worker_class, serve.threads, serve.timeout) == ("sync", 1, 30)
    assert serve.workers >= 2 and serve_address(serve) == "127.0.0.1:8000"
    assert serve_address(load_section(ServeSettingsSchema, {"PORT": "8080"})) == "0.0.0.0:8080"
    bound = load_section(ServeSettingsSchema, {"PORT": "8080", "LUMEN_BIND": "[::1]:9000"})
    assert serve_address(bound) == "[::1]:9000"
    with pytest.raises(ConfigError, match="LUMEN_TLS_CERT='/no/such/cert': must be a readable"):
        load_section(ServeSettingsSchema, {"LUMEN_TLS_CERT": "/no/such/cert"})
