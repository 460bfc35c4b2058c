"""One test per hook specification (tests/test_plugin_contract.py requires a `test_hook_<name>`
for each): a test-only plugin implements the hook, and the test checks the core calls it where
docs/plugins.md says, with what it says, and uses what it returns."""

from __future__ import annotations

import json
import uuid

import click
import falcon
import falcon.testing
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

import lumen.plugins
from lumen import (
    ConfigError,
    PluginError,
    SettingsSchema,
    choice,
    gunicorn_conf,
    hookimpl,
    invalid,
    migrate,
    pass_lumen,
    slots,
)
from lumen.app import Lumen
from lumen.cli import Context, make_cli
from lumen.config import load_settings
from lumen.plugins import make_plugin_manager
from tests.conftest import Api
from tests.test_images import exif_jpeg

CITY = {"id": 7, "name": "Seventh City"}


class ColourSettings(SettingsSchema):
    colour = choice("HOOKTEST_COLOUR", ("red", "blue"), "red")


# --- lifecycle ---------------------------------------------------------------------------------


def test_hook_lumen_settings(make_app):
    class Colours:
        @hookimpl
        def lumen_settings(self):
            return ColourSettings

    app = make_app(Colours(), HOOKTEST_COLOUR="BLUE")
    assert app.lumen.settings_of(ColourSettings).colour == "blue"
    with pytest.raises(ConfigError) as caught:
        make_app(Colours(), HOOKTEST_COLOUR="green")
    assert str(caught.value) == (
        "invalid setting HOOKTEST_COLOUR='green': must be one of: red, blue"
    )

    class Clash(SettingsSchema):
        size = choice("DB_POOL_SIZE", ("1",), "1")

    class Claims:
        @hookimpl
        def lumen_settings(self):
            return Clash

    with pytest.raises(PluginError, match="declares DB_POOL_SIZE, already declared by 'core'"):
        make_app(Claims())


def test_hook_lumen_startup(make_app):
    class Opens:
        @hookimpl
        def lumen_settings(self):
            return ColourSettings

        @hookimpl
        def lumen_startup(self, lumen):
            # Settings are loaded before any plugin starts.
            lumen.state["opens"] = f"client for {lumen.settings_of(ColourSettings).colour}"

    app = make_app(Opens())
    assert app.lumen.state["opens"] == "client for red"


def test_hook_lumen_shutdown(make_app, caplog):
    closed = []

    class Broken:
        @hookimpl
        def lumen_shutdown(self, lumen):
            raise RuntimeError("cannot close")

    class Closes:
        @hookimpl
        def lumen_shutdown(self, lumen):
            closed.append(lumen)

    app = make_app(Closes(), Broken())
    app.lumen.shutdown()
    # One plugin failing to close does not keep the others open.
    assert closed == [app.lumen]
    assert any(getattr(r, "plugin", None) == "extra1" for r in caplog.records)


def test_hook_lumen_before_serve(environ, monkeypatch):
    seen = []

    class Imports:
        @hookimpl
        def lumen_before_serve(self, lumen):
            seen.append((lumen.settings.storage_path, lumen.state.get("started")))

        @hookimpl
        def lumen_startup(self, lumen):
            lumen.state["started"] = True

    plain = make_plugin_manager

    def with_imports(enabled):
        pm = plain(enabled)
        pm.register(Imports(), name="imports")
        return pm

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lumen.plugins, "make_plugin_manager", with_imports)
    # What gunicorn calls once in the master, before the workers fork.
    gunicorn_conf.when_ready(server=None)
    assert seen == [(environ["STORAGE_PATH"], True)]


def test_hook_lumen_migrations(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "hooktest_0001.py").write_text(
        '"""The hook test\'s table."""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        'revision = "hooktest_0001"\ndown_revision = None\n'
        'branch_labels = ("hooktest",)\ndepends_on = None\n\n\n'
        "def upgrade():\n"
        '    op.create_table("hooktest_things", sa.Column("id", sa.Integer, primary_key=True))\n'
        "\n\ndef downgrade():\n"
        '    op.drop_table("hooktest_things")\n'
    )

    class Owns:
        @hookimpl
        def lumen_migrations(self, lumen):
            return str(versions)

    url = f"sqlite:///{tmp_path / 'lumen.db'}"
    pm = make_plugin_manager([])
    pm.register(Owns(), name="hooktest")
    app_lumen = Lumen(load_settings({"DATABASE_URL": url, "STORAGE_PATH": str(tmp_path)}), pm)
    try:
        migrate.upgrade(app_lumen)
        engine = create_engine(url)
        assert {"hooktest_things", "users", "photos"} <= set(inspect(engine).get_table_names())
        assert "hooktest_0001" in migrate.current(app_lumen)
        migrate.downgrade(app_lumen, "hooktest@base")
        assert "hooktest_things" not in inspect(engine).get_table_names()
        assert "users" in inspect(engine).get_table_names()  # the core's branch stays
        engine.dispose()
    finally:
        app_lumen.shutdown()


# --- web application ---------------------------------------------------------------------------


class Echo:
    def on_get(self, req, resp):
        """Echo what the middleware saw."""
        resp.media = {"seen": req.context.seen, "user": req.context.user is not None}


def test_hook_lumen_middleware(make_app):
    calls = []

    class Recording:
        def __init__(self, name):
            self.name = name

        def process_request(self, req, resp):
            calls.append(f"{self.name} request")
            req.context.seen = [*getattr(req.context, "seen", []), self.name]

        def process_response(self, req, resp, resource, req_succeeded):
            calls.append(f"{self.name} response")

    class Wraps:
        @hookimpl
        def lumen_middleware(self, lumen):
            return [(slots.INNERMOST, Recording("inner")), (slots.OUTERMOST, Recording("outer"))]

        @hookimpl
        def lumen_routes(self, lumen):
            return [("/hooktest/echo", Echo())]

    client = falcon.testing.TestClient(make_app(Wraps()))
    assert client.simulate_get("/hooktest/echo").json == {"seen": ["outer", "inner"], "user": False}
    # Request methods in slot order, response methods in reverse.
    assert calls == ["outer request", "inner request", "inner response", "outer response"]


def test_hook_lumen_routes(make_app):
    class Public:
        authenticate = False

        def on_get(self, req, resp):
            """Answered whatever Authorization says."""
            resp.media = {"user": req.context.user}

    class Adds:
        @hookimpl
        def lumen_routes(self, lumen):
            return [("/hooktest/echo", Echo()), ("/hooktest/public", Public())]

        @hookimpl
        def lumen_middleware(self, lumen):
            class Seen:
                def process_request(self, req, resp):
                    req.context.seen = True

            return [(slots.OUTERMOST, Seen())]

    app = make_app(Adds())
    client = falcon.testing.TestClient(app)
    assert app.lumen.routes["/hooktest/echo"][0] == "extra0"
    stale = {"Authorization": "Bearer " + "x" * 43}
    # Routed first, then authenticated: a bad token is a 401 on an ordinary route...
    assert client.simulate_get("/hooktest/echo", headers=stale).status_code == 401
    # ... and ignored by a resource that declares it needs none.
    public = client.simulate_get("/hooktest/public", headers=stale)
    assert public.status_code == 200 and public.json == {"user": None}


def test_hook_lumen_error_handlers(make_app):
    class Teapot(Exception):
        pass

    class Raises:
        def on_get(self, req, resp):
            """Raise the plugin's own exception."""
            raise Teapot()

    def handle(req, resp, exc, params):
        raise falcon.HTTPStatus(falcon.HTTP_418, text="handled by the plugin")

    class Handles:
        @hookimpl
        def lumen_routes(self, lumen):
            return [("/hooktest/teapot", Raises())]

        @hookimpl
        def lumen_error_handlers(self, lumen):
            return [(Teapot, handle)]

    result = falcon.testing.TestClient(make_app(Handles())).simulate_get("/hooktest/teapot")
    assert (result.status_code, result.text) == (418, "handled by the plugin")


def test_hook_lumen_openapi(make_app):
    class Documents:
        @hookimpl
        def lumen_routes(self, lumen):
            return [("/hooktest/echo", Echo())]

        @hookimpl
        def lumen_openapi(self, lumen, spec):
            spec.components.schema("Echo", {"type": "object"})
            operation = lumen.openapi  # not built yet: the spec is what is being built
            assert operation is None

    document = falcon.testing.TestClient(make_app(Documents())).simulate_get("/openapi.json").json
    assert document["components"]["schemas"]["Echo"] == {"type": "object"}
    assert document["paths"]["/hooktest/echo"]["get"]["summary"] == "Echo what the middleware saw."

    class Broken:
        @hookimpl
        def lumen_openapi(self, lumen, spec):
            raise KeyError("no such path")

    with pytest.raises(PluginError, match="plugin 'extra0' failed in lumen_openapi"):
        make_app(Broken())


# --- command line ------------------------------------------------------------------------------


class Greets:
    @hookimpl
    def lumen_settings(self):
        return ColourSettings

    @hookimpl
    def lumen_cli(self, group):
        @group.command("hooktest-greet")
        @click.argument("name")
        @pass_lumen
        def greet(app_lumen, name):
            """Greet in the configured colour."""
            click.echo(f"{app_lumen.settings_of(ColourSettings).colour} hello, {name}")


def test_hook_lumen_cli(environ, monkeypatch):
    for name, value in {**environ, "HOOKTEST_COLOUR": "blue"}.items():
        monkeypatch.setenv(name, value)
    context = Context()
    context.pm.register(Greets(), name="greets")
    result = CliRunner().invoke(make_cli(context.pm), ["hooktest-greet", "ada"], obj=context)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "blue hello, ada"
    # Each invocation builds its own group: the command did not stay behind.
    other = Context()
    assert "hooktest-greet" not in make_cli(other.pm).commands


# --- operations --------------------------------------------------------------------------------


def test_hook_lumen_health_checks(make_app):
    class Checks:
        @hookimpl
        def lumen_health_checks(self, lumen):
            return {"hooktest:always": lambda: {"status": "warn", "output": "checked"}}

    app = make_app(Checks(), LUMEN_PLUGINS="health")
    assert "hooktest:always" in app.lumen.health_checks
    body = falcon.testing.TestClient(app).simulate_get("/health").json
    assert body["checks"]["hooktest:always"][0]["output"] == "checked"
    assert body["status"] == "warn"

    class Misnamed:
        @hookimpl
        def lumen_health_checks(self, lumen):
            return {"no-colon": lambda: {"status": "pass"}}

    with pytest.raises(PluginError, match="must be 'component:measurement'"):
        make_app(Misnamed())


def test_hook_lumen_metrics(make_app):
    class Counts:
        @hookimpl
        def lumen_metrics(self, lumen, registry):
            from prometheus_client import Counter

            lumen.state["counts"] = Counter("hooktest_things", "Things.", registry=registry)

    app = make_app(Counts(), LUMEN_PLUGINS="metrics", METRICS_ENABLED="true")
    app.lumen.state["counts"].inc(3)
    assert app.lumen.metrics_registry.get_sample_value("hooktest_things_total") == 3
    scraped = falcon.testing.TestClient(app).simulate_get("/metrics").text
    assert "hooktest_things_total 3.0" in scraped


# --- domain events -----------------------------------------------------------------------------


class Events:
    def __init__(self):
        self.received = []

    @hookimpl
    def lumen_photo_created(self, lumen, photo, changes):
        self.received.append(("created", str(photo.id), changes))

    @hookimpl
    def lumen_photo_updated(self, lumen, photo, changes):
        self.received.append(("updated", str(photo.id), changes))

    @hookimpl
    def lumen_photo_deleted(self, lumen, photo, changes):
        self.received.append(("deleted", str(photo.id), changes))

    @hookimpl
    def lumen_user_updated(self, lumen, user, changes):
        self.received.append(("user updated", str(user.id), changes))


@pytest.fixture
def events_api(make_app):
    events = Events()
    api = Api(falcon.testing.TestClient(make_app(events)))
    return events, api


def test_hook_lumen_photo_created(events_api):
    events, api = events_api
    photo = api.upload(api.user(), caption="hello")
    assert events.received == [
        (
            "created",
            photo["id"],
            {
                "caption": (None, "hello"),
                "visibility": (None, "public"),
                "location_id": (None, None),
            },
        )
    ]
    # A rejected upload creates nothing, and says nothing.
    api.upload(api.user(), image=b"not an image", expect=415)
    assert len(events.received) == 1


def test_hook_lumen_photo_updated(events_api):
    events, api = events_api
    owner = api.user()
    photo = api.upload(owner, caption="old")
    url = f"/api/v1/photos/{photo['id']}"
    api.client.simulate_patch(url, json={"caption": "new"}, headers=owner["headers"])
    api.client.simulate_patch(url, json={"caption": "new"}, headers=owner["headers"])  # no change
    assert events.received[1:] == [("updated", photo["id"], {"caption": ("old", "new")})]


def test_hook_lumen_photo_deleted(events_api):
    events, api = events_api
    owner = api.user()
    photo = api.upload(owner, visibility="private")
    deleted = api.client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=owner["headers"])
    assert deleted.status_code == 204
    kind, photo_id, changes = events.received[-1]
    assert (kind, photo_id, changes["visibility"]) == ("deleted", photo["id"], (None, "private"))


def test_hook_lumen_user_updated(events_api):
    events, api = events_api
    user = api.user(display_name="Old")
    api.client.simulate_patch(
        f"/api/v1/users/{user['id']}", json={"display_name": "New"}, headers=user["headers"]
    )
    assert events.received == [("user updated", user["id"], {"display_name": ("Old", "New")})]


# --- services and the cache contract -----------------------------------------------------------


class OneCity:
    @hookimpl
    def lumen_location_lookup(self, lumen, location_ids):
        return {i: CITY for i in location_ids if i == CITY["id"]}


def test_hook_lumen_nearest_location(make_app):
    asked = []

    class Nearest(OneCity):
        @hookimpl
        def lumen_nearest_location(self, lumen, latitude, longitude):
            asked.append((round(latitude, 2), round(longitude, 2)))
            return CITY

    api = Api(falcon.testing.TestClient(make_app(Nearest())))
    photo = api.upload(api.user(), image=exif_jpeg(gps=((52.52, "N"), (13.405, "E"))))
    assert asked == [(52.52, 13.41)]
    assert photo["location"] == CITY


def test_hook_lumen_location_lookup(make_app):
    api = Api(falcon.testing.TestClient(make_app(OneCity())))
    owner = api.user()
    photo = api.upload(owner)
    url = f"/api/v1/photos/{photo['id']}"
    moved = api.client.simulate_patch(url, json={"location_id": 7}, headers=owner["headers"])
    assert moved.json["location"] == CITY
    nowhere = api.client.simulate_patch(url, json={"location_id": 8}, headers=owner["headers"])
    assert nowhere.status_code == 400
    assert nowhere.json["description"] == "location_id: no such location"


def test_hook_lumen_cached(make_app):
    class Remembers:
        def __init__(self):
            self.values, self.asked = {}, []

        @hookimpl
        def lumen_cached(self, lumen, key, tags, loader):
            self.asked.append((key, tags))
            if key not in self.values:
                self.values[key] = loader()
            return self.values[key]

    cache = Remembers()
    api = Api(falcon.testing.TestClient(make_app(cache)))
    photo = api.upload(api.user(), caption="cached")
    for _ in range(2):
        got = api.client.simulate_get(f"/api/v1/photos/{photo['id']}")
        assert got.json["caption"] == "cached"
    key, tag = f"photo:{photo['id']}:v2", f"photo:{photo['id']}"
    assert cache.asked[-2:] == [(key, (tag, "cities"))] * 2
    # The value is the packed record: bytes, which a cache keeps and gives back as they are.
    assert json.loads(cache.values[key].split(b"\n")[2])["id"] == photo["id"]


def test_hook_lumen_prefetch(make_app, redis_url):
    class Announced:
        def __init__(self):
            self.calls = []

        @hookimpl
        def lumen_prefetch(self, lumen, key, tags):
            self.calls.append(("prefetch", key, tags))

        @hookimpl
        def lumen_cached(self, lumen, key, tags, loader):
            self.calls.append(("cached", key, tags))
            return loader()

    seen = Announced()
    api = Api(falcon.testing.TestClient(make_app(seen, REDIS_URL=redis_url)))
    owner = api.user()
    photo = api.upload(owner)
    key, tags = f"photo:{photo['id']}:v2", (f"photo:{photo['id']}", "cities")
    seen.calls.clear()
    assert api.client.simulate_get(f"/api/v1/photos/{photo['id']}").status_code == 200
    assert seen.calls == [("prefetch", key, tags), ("cached", key, tags)]
    # The anonymous first page announces its read; a signed-in caller's mixed list has none.
    seen.calls.clear()
    api.client.simulate_get("/api/v1/photos")
    assert seen.calls[0] == ("prefetch", "photos:public:20:0:v3", ("photos:public", "cities"))
    seen.calls.clear()
    api.client.simulate_get("/api/v1/photos", headers=owner["headers"])
    assert [call for call in seen.calls if call[0] == "prefetch"] == []
    # A request that will fail its validation announces nothing.
    seen.calls.clear()
    assert api.client.simulate_get("/api/v1/photos/not-an-id").status_code in (400, 404)
    assert api.client.simulate_get("/api/v1/photos?limit=0").status_code == 400
    assert seen.calls == []


def test_hook_lumen_purge(make_app, monkeypatch):
    purged = []

    class Purges:
        @hookimpl
        def lumen_purge(self, lumen, tags):
            purged.append(tags)

    api = Api(falcon.testing.TestClient(make_app(Purges())))
    owner = api.user()
    photo = api.upload(owner, visibility="private")
    owner_id, photo_id = owner["id"], photo["id"]
    assert purged == [(f"user:{owner_id}:photos", f"user:{owner_id}:profile")]
    url = f"/api/v1/photos/{photo_id}"
    api.client.simulate_patch(url, json={"visibility": "public"}, headers=owner["headers"])
    assert set(purged[-1]) == {
        f"photo:{photo_id}",
        f"user:{owner_id}:photos",
        f"user:{owner_id}:profile",
        "photos:public",
    }
    # A change whose commit fails purges nothing.
    from sqlalchemy.orm import Session

    count = len(purged)
    monkeypatch.setattr(Session, "commit", lambda self: (_ for _ in ()).throw(RuntimeError("x")))
    failed = api.client.simulate_patch(url, json={"caption": "lost"}, headers=owner["headers"])
    monkeypatch.undo()
    assert failed.status_code == 500 and len(purged) == count


def test_a_hook_implemented_as_a_wrapper_is_refused(make_app):
    class Wrapper:
        @hookimpl(wrapper=True)
        def lumen_routes(self, lumen):
            return (yield)

    with pytest.raises(PluginError, match="implements lumen_routes as a wrapper"):
        make_app(Wrapper())


def test_an_unknown_setting_value_stays_unused(make_app):
    # Variables no section declares are ignored (the environment holds many).
    app = make_app(HOOKTEST_UNDECLARED=str(uuid.uuid4()))
    assert "HOOKTEST_UNDECLARED" not in app.lumen.settings


def test_invalid_names_the_field_and_rule():
    error = invalid("colour", "must be red or blue")
    assert (error.status, error.description) == ("400 Bad Request", "colour: must be red or blue")
