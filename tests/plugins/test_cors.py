"""The cors plugin: start-up rules, then the Fetch-standard behaviour on a small app that raises
every kind of error, then the same rules on the real Lumen app (both backends)."""

from __future__ import annotations

import logging
import uuid

import falcon
import falcon.testing
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from lumen import errors
from lumen.auth import unauthorized
from lumen.cli import cli
from lumen.config import ConfigError, load_section, load_settings
from lumen_plugins import cors
from lumen_plugins.cors.middleware import REASONS, CorsMiddleware, Rejections, add_vary
from lumen_plugins.cors.policy import CorsPolicy, CorsSettings, build_policy

# The ratelimit plugin's fields are exposed too, so pages can read a 429's Retry-After.
EXPOSED_HEADERS = (
    "Content-Length",
    "X-Total-Count",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
)
EXPOSED = ", ".join(EXPOSED_HEADERS)

pytestmark = pytest.mark.security

APP = "https://app.example.com"
PREVIEW_REGEX = r"https://pr-\d+\.preview\.example\.com"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Expose-Headers",
)


def policy(**environ: str) -> CorsPolicy:
    settings = load_settings(environ)
    return build_policy(load_section(CorsSettings, environ), settings.environment)


def startup_error(**environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        policy(**environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------
# Start-up: ALLOWED_ORIGINS and the plugin's own variables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, rule",
    [
        ("https://app.example.com/", "must not end with a slash"),
        ("https://app.example.com/api", "must not have a path"),
        ("https://app.example.com?x=1", "must not have a query"),
        ("https://app.example.com#top", "must not have a fragment"),
        ("https://admin@app.example.com", "must not contain user info"),
        ("ftp://app.example.com", "scheme must be http or https"),
        ("app.example.com", "must be scheme://host[:port]"),
        ("https://", "must name a host"),
        ("https://App.Example.com", "must be lowercase, as browsers send it"),
        ("https://app.example.com:443", "must leave out the default port 443, as browsers do"),
        ("http://app.example.com:80", "must leave out the default port 80, as browsers do"),
        ("https://app.example.com:99999", "port must be a number from 1 to 65535"),
        ("https://app.example.com:", "port must be a number from 1 to 65535"),
        (
            "http://[fe80::zz]:8080",
            "host must be a DNS name or an IP address (CORS_ORIGIN_REGEX takes patterns)",
        ),
        (
            "https://*.example.com",
            "host must be a DNS name or an IP address (CORS_ORIGIN_REGEX takes patterns)",
        ),
    ],
)
def test_a_malformed_origin_stops_startup_naming_it(entry, rule):
    message = startup_error(ALLOWED_ORIGINS=f"https://ok.example.com, {entry}")
    assert message == f"invalid setting ALLOWED_ORIGINS={entry!r}: each origin {rule}"


@pytest.mark.parametrize(
    "entry", ["https://admin:hunter22@app.example.com", "https://admin:hunter22@[fe80::zz]"]
)
def test_user_info_is_masked_in_the_startup_line(entry):
    message = startup_error(ALLOWED_ORIGINS=entry)
    assert "hunter22" not in message
    assert "must not contain user info" in message


def test_well_formed_origins_are_accepted():
    allowed = policy(
        ALLOWED_ORIGINS=f" {APP} ,http://127.0.0.1:8081,http://[::1]:3000,,https://xn--bcher-kva.de"
    ).origins
    assert allowed == {
        APP,
        "http://127.0.0.1:8081",
        "http://[::1]:3000",
        "https://xn--bcher-kva.de",
    }


def test_production_refuses_a_wildcard():
    message = startup_error(ENVIRONMENT="production", ALLOWED_ORIGINS="*")
    assert message == "invalid setting ALLOWED_ORIGINS='*': '*' is refused in production"


def test_a_wildcard_must_stand_alone():
    message = startup_error(ALLOWED_ORIGINS=f"*,{APP}")
    assert message == f"invalid setting ALLOWED_ORIGINS='*,{APP}': '*' must be the only entry"


def test_production_refuses_null():
    message = startup_error(ENVIRONMENT="production", ALLOWED_ORIGINS=f"{APP},null")
    assert message.endswith(": 'null' is refused in production")


@pytest.mark.parametrize("origins", ["*", "null"])
def test_credentials_are_never_allowed_with_wildcard_or_null(origins):
    message = startup_error(ALLOWED_ORIGINS=origins, CORS_ALLOW_CREDENTIALS="true")
    assert message == (
        "invalid setting CORS_ALLOW_CREDENTIALS='true': "
        "must not be true while ALLOWED_ORIGINS has '*' or 'null'"
    )


@pytest.mark.parametrize(
    "variable, value, rule",
    [
        ("CORS_MAX_AGE", "ten", "not a valid integer"),
        (
            "CORS_MAX_AGE",
            "-1",
            "must be greater than or equal to 0 and less than or equal to 86400",
        ),
        (
            "CORS_MAX_AGE",
            "86401",
            "must be greater than or equal to 0 and less than or equal to 86400",
        ),
        ("CORS_ALLOW_CREDENTIALS", "maybe", "not a valid boolean"),
        ("CORS_ORIGIN_REGEX", "https://(pr-", "not a valid regular expression"),
        ("CORS_ORIGIN_REGEX", ".*", "matches any host; anchor it to your own domain"),
        ("CORS_ORIGIN_REGEX", r"https?://[^/]+", "matches any host; anchor it to your own domain"),
        ("CORS_ORIGIN_REGEX", rf"null|{PREVIEW_REGEX}", "must not match 'null'"),
        ("CORS_EXPOSE_HEADERS", "X-Request-Id, *", "list header names; '*' is not allowed"),
        ("CORS_EXPOSE_HEADERS", "X Request Id", "'X Request Id' is not a header name"),
    ],
)
def test_a_bad_plugin_setting_names_variable_value_and_rule(variable, value, rule):
    message = startup_error(**{variable: value})
    assert message.startswith(f"invalid setting {variable}={value!r}: {rule}")


def test_plugin_settings_have_safe_defaults():
    loaded = policy(ENVIRONMENT="production", ALLOWED_ORIGINS=APP)
    assert loaded.max_age == 600
    assert loaded.allow_credentials is False
    assert loaded.origin_regex is None
    assert loaded.expose_headers == EXPOSED_HEADERS


def test_expose_headers_extend_the_defaults_without_repeating_them():
    loaded = policy(CORS_EXPOSE_HEADERS="x-total-count, Link, ETag")
    assert loaded.expose_headers == (*EXPOSED_HEADERS, "Link", "ETag")


def test_development_defaults_allow_the_usual_local_dev_servers():
    expected = {
        f"http://{host}:{port}"
        for host in ("localhost", "127.0.0.1")
        for port in (3000, 5173, 8080)
    }
    assert policy().origins == expected
    assert policy(ENVIRONMENT="development").origins == expected


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_other_environments_allow_no_origin_unless_configured(environment):
    loaded = policy(ENVIRONMENT=environment)
    assert loaded.origins == frozenset() and not loaded.any_origin
    assert not loaded.allows("http://localhost:3000")


def test_configured_origins_replace_the_development_defaults():
    assert policy(ALLOWED_ORIGINS=APP).origins == {APP}


def test_lumen_config_check_shows_the_line_and_fails(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/lumen.db",
        "STORAGE_PATH": str(tmp_path / "storage"),
        "LUMEN_PLUGINS": "cors",
        "ENVIRONMENT": "production",
        "ALLOWED_ORIGINS": "https://app.example.com/",
    }
    result = CliRunner(env=env).invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert (
        "lumen: invalid setting ALLOWED_ORIGINS='https://app.example.com/': "
        "each origin must not end with a slash"
    ) in result.output


# ---------------------------------------------------------------------------
# Behaviour, on a small app whose resources answer every status the rules name
# ---------------------------------------------------------------------------


class Photos:
    def on_get(self, req, resp):
        resp.media = [{"id": "p1"}]
        resp.set_header("X-Total-Count", "1")


class Private:
    def on_get(self, req, resp):
        raise unauthorized("Authorization: a valid bearer token is required")


class Broken:
    def on_get(self, req, resp):
        raise RuntimeError("a bug")


class Image:
    def on_get(self, req, resp):
        resp.etag = '"abc"'
        resp.vary = ["Accept-Encoding"]
        if "abc" in (req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = "image/jpeg"
        resp.data = b"\xff\xd8\xff"


class Cors:
    def __init__(self, rejections: Rejections | None = None, **environ: str):
        self.policy = policy(**environ)
        self.rejections = rejections or Rejections()
        app = falcon.App(
            middleware=[CorsMiddleware(self.policy, self.rejections)], cors_enable=False
        )
        errors.install(app)
        app.add_route("/photos", Photos())
        app.add_route("/private", Private())
        app.add_route("/broken", Broken())
        app.add_route("/image", Image())
        self.client = falcon.testing.TestClient(app)

    def get(self, path="/photos", origin=APP, **headers):
        if origin is not None:
            headers["Origin"] = origin
        return self.client.simulate_get(path, headers=headers)

    def preflight(self, path="/photos", origin=APP, method="GET", request_headers=None):
        headers = {"Origin": origin, "Access-Control-Request-Method": method}
        if request_headers is not None:
            headers["Access-Control-Request-Headers"] = request_headers
        return self.client.simulate_options(path, headers=headers)


def vary(result) -> list[str]:
    return [name.strip() for name in result.headers.get("Vary", "").split(",") if name.strip()]


def no_cors_headers(result) -> bool:
    return not any(name in result.headers for name in CORS_HEADERS)


@pytest.fixture
def site():
    return Cors(ALLOWED_ORIGINS=f"{APP},http://localhost:3000")


def test_an_allowed_origin_is_echoed_exactly_with_vary(site):
    result = site.get()
    assert result.status_code == 200
    assert result.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in vary(result)
    assert result.headers["Access-Control-Expose-Headers"] == EXPOSED
    assert "Access-Control-Allow-Credentials" not in result.headers
    other = site.get(origin="http://localhost:3000")
    assert other.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_credentials_echo_the_origin_never_a_wildcard():
    site = Cors(ALLOWED_ORIGINS=APP, CORS_ALLOW_CREDENTIALS="true")
    for result in (site.get(), site.preflight(method="PATCH", request_headers="authorization")):
        assert result.headers["Access-Control-Allow-Origin"] == APP
        assert result.headers["Access-Control-Allow-Credentials"] == "true"


def test_a_wildcard_outside_production_still_echoes_the_exact_origin():
    site = Cors(ALLOWED_ORIGINS="*")
    result = site.get(origin="https://anyone.example.org")
    assert result.headers["Access-Control-Allow-Origin"] == "https://anyone.example.org"
    assert "Origin" in vary(result)
    assert "Access-Control-Allow-Origin" not in site.get(origin="null").headers


def test_a_request_without_origin_gets_vary_and_no_cors_headers(site):
    result = site.get(origin=None)
    assert result.status_code == 200
    assert vary(result) == ["Origin"]
    assert no_cors_headers(result)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://APP.example.com",
        "https://app.example.com/",
        "null",
    ],
)
def test_an_unknown_origin_gets_no_cors_headers_and_is_counted(site, origin):
    result = site.get(origin=origin)
    # The answer is still sent (the browser is what withholds it from the page) ...
    assert result.status_code == 200
    # ... but nothing in it lets the page read it.
    assert no_cors_headers(result)
    assert "Origin" in vary(result)
    assert site.rejections.counts == {"origin": 1}


def test_a_preflight_is_answered_with_the_explicit_lists(site):
    result = site.preflight(method="PATCH", request_headers="authorization,content-type")
    assert result.status_code == 204
    assert result.text == ""
    assert result.headers["Access-Control-Allow-Origin"] == APP
    assert result.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE, OPTIONS"
    # The configured list, not the request's headers reflected back.
    assert result.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, If-None-Match, X-Requested-With"
    )
    assert result.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Expose-Headers" not in result.headers
    assert vary(result) == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]
    assert site.rejections.total == 0


def test_max_age_is_configurable():
    site = Cors(ALLOWED_ORIGINS=APP, CORS_MAX_AGE="30")
    assert site.preflight().headers["Access-Control-Max-Age"] == "30"


def test_request_header_names_are_matched_without_regard_to_case(site):
    result = site.preflight(method="POST", request_headers="Content-Type , X-REQUESTED-WITH")
    assert result.status_code == 204


@pytest.mark.parametrize(
    "origin, method, request_headers, reason",
    [
        ("https://evil.example.com", "GET", None, "origin"),
        ("null", "GET", None, "origin"),
        (APP, "PUT", None, "method"),
        (APP, "HEAD", None, "method"),
        # Methods are case-sensitive (Fetch): a browser sends 'patch' as it was written.
        (APP, "patch", None, "method"),
        (APP, "PATCH", "authorization,x-custom", "header"),
        (APP, "GET", "cookie", "header"),
    ],
)
def test_a_refused_preflight_is_a_403_without_cors_headers(
    site, caplog, origin, method, request_headers, reason
):
    with caplog.at_level(logging.INFO, logger="lumen_plugins.cors"):
        result = site.preflight(origin=origin, method=method, request_headers=request_headers)
    assert result.status_code == 403
    assert no_cors_headers(result)
    assert "Origin" in vary(result)
    assert result.json["title"] == "CORS preflight refused"
    assert site.rejections.counts == {reason: 1}
    [record] = [r for r in caplog.records if r.name == "lumen_plugins.cors.middleware"]
    assert record.levelno == logging.INFO
    assert (record.origin, record.reason, record.method) == (origin, reason, "OPTIONS")


def test_null_origin_is_allowed_only_when_listed():
    site = Cors(ALLOWED_ORIGINS=f"{APP},null")
    assert site.get(origin="null").headers["Access-Control-Allow-Origin"] == "null"
    assert site.preflight(origin="null").status_code == 204


def test_a_logged_origin_is_truncated(site, caplog):
    long_origin = "https://" + "a" * 500 + ".example.com"
    with caplog.at_level(logging.INFO, logger="lumen_plugins.cors"):
        site.get(origin=long_origin)
    [record] = [r for r in caplog.records if r.name == "lumen_plugins.cors.middleware"]
    assert record.origin == long_origin[:100]
    assert record.reason == "origin"


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://pr-1.preview.example.com", True),
        ("https://pr-2048.preview.example.com", True),
        ("https://pr-1.preview.example.com.evil.com", False),
        ("https://evil.com?https://pr-1.preview.example.com", False),
        ("xhttps://pr-1.preview.example.com", False),
        ("https://pr-1.preview.example.com:8443", False),
        ("https://pr-x.preview.example.com", False),
        ("http://pr-1.preview.example.com", False),
    ],
)
def test_the_origin_regex_is_anchored_in_full(origin, allowed):
    site = Cors(ENVIRONMENT="production", ALLOWED_ORIGINS=APP, CORS_ORIGIN_REGEX=PREVIEW_REGEX)
    assert site.get(origin=origin).headers.get("Access-Control-Allow-Origin") == (
        origin if allowed else None
    )
    assert site.preflight(origin=origin).status_code == (204 if allowed else 403)


def test_the_origin_regex_never_admits_a_malformed_origin():
    site = Cors(CORS_ORIGIN_REGEX=r"https://[a-z0-9./-]+\.example\.com")
    assert site.get(origin="https://a.example.com").headers["Access-Control-Allow-Origin"]
    assert "Access-Control-Allow-Origin" not in site.get(origin="https://a/b.example.com").headers


def test_production_without_origins_allows_none():
    site = Cors(ENVIRONMENT="production")
    for origin in ("http://localhost:3000", "http://127.0.0.1:5173", APP):
        assert no_cors_headers(site.get(origin=origin))
        assert site.preflight(origin=origin).status_code == 403


def test_development_defaults_answer_local_dev_servers():
    site = Cors()
    for port in (3000, 5173, 8080):
        for host in ("localhost", "127.0.0.1"):
            origin = f"http://{host}:{port}"
            assert site.get(origin=origin).headers["Access-Control-Allow-Origin"] == origin
    assert no_cors_headers(site.get(origin="http://localhost:4000"))


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nowhere", 404),
        ("POST", "/photos", 405),
        ("GET", "/private", 401),
        ("GET", "/broken", 500),
    ],
)
def test_error_responses_to_allowed_origins_keep_cors_headers(site, method, path, status):
    result = site.client.simulate_request(method, path, headers={"Origin": APP})
    assert result.status_code == status
    assert result.headers["Access-Control-Allow-Origin"] == APP
    assert result.headers["Access-Control-Expose-Headers"] == EXPOSED
    assert "Origin" in vary(result)
    assert "title" in result.json


@pytest.mark.parametrize("path", ["/nowhere", "/private", "/broken"])
def test_error_responses_to_unknown_origins_carry_only_vary(site, path):
    result = site.get(path, origin="https://evil.example.com")
    assert result.status_code >= 400
    assert no_cors_headers(result)
    assert "Origin" in vary(result)


def test_a_cached_304_keeps_vary_and_cors_headers(site):
    result = site.get("/image", **{"If-None-Match": '"abc"'})
    assert result.status_code == 304
    assert vary(result) == ["Accept-Encoding", "Origin"]
    assert result.headers["Access-Control-Allow-Origin"] == APP
    # Without Origin too: a shared cache must still key the 304 on Origin.
    assert vary(site.get("/image", origin=None, **{"If-None-Match": '"abc"'})) == [
        "Accept-Encoding",
        "Origin",
    ]


def test_a_preflight_for_any_path_is_answered_and_the_request_then_404s(site):
    assert site.preflight("/no/such/route", method="DELETE").status_code == 204
    result = site.client.simulate_delete("/no/such/route", headers={"Origin": APP})
    assert result.status_code == 404
    assert result.headers["Access-Control-Allow-Origin"] == APP


def test_an_options_request_that_is_not_a_preflight_is_routed(site):
    result = site.client.simulate_options("/photos", headers={"Origin": APP})
    assert result.status_code == 200
    assert "GET" in result.headers["Allow"]
    assert result.headers["Access-Control-Allow-Origin"] == APP


def test_vary_keeps_what_is_there_and_is_never_repeated():
    resp = falcon.Response()
    add_vary(resp, "Origin")
    add_vary(resp, "origin", "Accept-Encoding")
    assert resp.get_header("Vary") == "Origin, Accept-Encoding"
    resp.set_header("Vary", "*")
    add_vary(resp, "Origin")
    assert resp.get_header("Vary") == "*"


def test_rejections_feed_the_prometheus_counter():
    registry = CollectorRegistry()

    class FakeLumen:
        state = {"cors": cors.CorsState(policy(ALLOWED_ORIGINS=APP))}

    lumen = FakeLumen()
    cors.lumen_metrics(lumen=lumen, registry=registry)
    for reason in REASONS:
        assert registry.get_sample_value("lumen_cors_rejected_total", {"reason": reason}) == 0
    site = Cors(lumen.state["cors"].rejections, ALLOWED_ORIGINS=APP)
    site.get(origin="https://evil.example.com")
    site.preflight(method="PUT")
    assert registry.get_sample_value("lumen_cors_rejected_total", {"reason": "origin"}) == 1
    assert registry.get_sample_value("lumen_cors_rejected_total", {"reason": "method"}) == 1
    assert lumen.state["cors"].rejections.counts == {"origin": 1, "method": 1}


# ---------------------------------------------------------------------------
# On the real app: the plugin as installed, with the core's auth, routes and cache headers
# ---------------------------------------------------------------------------


@pytest.fixture
def lumen_app(make_app):
    return make_app(LUMEN_PLUGINS="cors", ALLOWED_ORIGINS=APP, CORS_ALLOW_CREDENTIALS="true")


@pytest.fixture
def real(lumen_app):
    return falcon.testing.TestClient(lumen_app)


def test_the_plugin_starts_with_the_app_and_keeps_its_state_on_it(lumen_app):
    state = lumen_app.lumen.state["cors"]
    assert state.policy.origins == {APP}
    assert "cors" in lumen_app.lumen.plugin_names


def test_a_bad_origin_stops_the_app_from_starting(make_app):
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS='https://app.example.com/api'"):
        make_app(LUMEN_PLUGINS="cors", ALLOWED_ORIGINS="https://app.example.com/api")


def test_a_preflight_is_answered_before_authentication_and_routing(real):
    # No token, a user that does not exist: the preflight is answered all the same.
    result = real.simulate_options(
        f"/api/v1/users/{uuid.uuid4()}",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert result.status_code == 204
    assert result.headers["Access-Control-Allow-Origin"] == APP
    assert result.headers["Access-Control-Allow-Credentials"] == "true"


def test_a_rejected_token_is_a_401_the_page_can_read(real):
    result = real.simulate_get(
        "/api/v1/photos", headers={"Origin": APP, "Authorization": "Bearer " + "x" * 43}
    )
    assert result.status_code == 401
    assert result.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in vary(result)


def test_lists_expose_their_total_and_photos_their_cached_image(real):
    from tests.conftest import Api

    api = Api(real)
    owner = api.user()
    photo = api.upload(owner)
    listing = real.simulate_get("/api/v1/photos", headers={"Origin": APP})
    assert listing.status_code == 200
    assert "X-Total-Count" in listing.headers["Access-Control-Expose-Headers"]
    assert listing.headers["X-Total-Count"] == "1"
    image_path = f"/api/v1/photos/{photo['id']}/image"
    etag = real.simulate_get(image_path).headers["ETag"]
    cached = real.simulate_get(image_path, headers={"Origin": APP, "If-None-Match": etag})
    assert cached.status_code == 304
    assert "Origin" in vary(cached)
    assert cached.headers["Access-Control-Allow-Origin"] == APP
    missing = real.simulate_get(f"/api/v1/photos/{uuid.uuid4()}", headers={"Origin": APP})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == APP


def test_rejections_reach_the_metrics_hook(lumen_app, real):
    registry = CollectorRegistry()
    lumen_app.lumen.hook.lumen_metrics(lumen=lumen_app.lumen, registry=registry)
    real.simulate_get("/api/v1/photos", headers={"Origin": "https://evil.example.com"})
    assert registry.get_sample_value("lumen_cors_rejected_total", {"reason": "origin"}) == 1
    assert lumen_app.lumen.state["cors"].rejections.counts == {"origin": 1}


def test_rejections_are_scraped_by_the_metrics_plugin(make_app):
    app = make_app(LUMEN_PLUGINS="cors,metrics", METRICS_ENABLED="true", ALLOWED_ORIGINS=APP)
    client = falcon.testing.TestClient(app)
    client.simulate_get("/api/v1/photos", headers={"Origin": "https://evil.example.com"})
    client.simulate_options(
        "/api/v1/photos", headers={"Origin": APP, "Access-Control-Request-Method": "PUT"}
    )
    scrape = client.simulate_get("/metrics").text
    assert 'lumen_cors_rejected_total{reason="origin"} 1.0' in scrape
    assert 'lumen_cors_rejected_total{reason="method"} 1.0' in scrape
    assert 'lumen_cors_rejected_total{reason="header"} 0.0' in scrape
