"""The plugin system: discovery, LUMEN_PLUGINS, every hook kind, errors that name the plugin,
and a third-party plugin installed with pip."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import falcon.testing
import pytest

from lumen import hookspecs
from lumen.app import create_app
from lumen.config import ConfigError, load_settings
from lumen.plugins import PluginError, installed_plugins, make_plugin_manager
from tests.fixture_plugins import recording


@pytest.fixture
def recording_app(environ, backend, clean_db):
    recording.received.clear()
    settings = load_settings(environ)
    pm = make_plugin_manager([])
    pm.register(recording, name="recording")
    app = create_app(settings, pm, engine=backend[2])
    yield app
    pm.unregister(recording)


@pytest.mark.unit
def test_builtin_plugins_are_entry_points():
    assert {"health", "cors", "locations", "cache", "metrics"} <= set(installed_plugins())


@pytest.mark.unit
def test_lumen_plugins_filters_and_unknown_names_fail():
    pm = make_plugin_manager(["health"])
    names = {name for name, _ in pm.list_name_plugin()}
    assert names == {"core", "health"}
    with pytest.raises(ConfigError) as caught:
        make_plugin_manager(["health", "helth"])
    message = str(caught.value)
    assert message.startswith(
        "invalid setting LUMEN_PLUGINS='health,helth': unknown plugin 'helth'"
    )
    assert "installed:" in message and "health" in message


def test_plugin_routes_middleware_and_error_handlers(recording_app):
    client = falcon.testing.TestClient(recording_app)
    assert client.simulate_get("/test/echo").json == {"seen_by_middleware": True}
    boom = client.simulate_post("/test/echo")
    assert boom.status_code == 418 and boom.text == "boom handled"


def test_events_arrive_after_commit_with_changes(recording_app, api):
    client = falcon.testing.TestClient(recording_app)
    from tests.conftest import Api

    api = Api(client)
    user = api.user()
    photo = api.upload(user, caption="first")
    client.simulate_patch(
        f"/api/v1/photos/{photo['id']}", json={"caption": "second"}, headers=user["headers"]
    )
    client.simulate_patch(
        f"/api/v1/users/{user['id']}", json={"display_name": "Renamed"}, headers=user["headers"]
    )
    client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=user["headers"])
    kinds = [kind for kind, _ in recording.received]
    assert kinds == ["photo_created", "photo_updated", "user_updated", "photo_deleted"]
    assert recording.received[1][1]["changes"] == {"caption": ("first", "second")}
    assert recording.received[2][1]["changes"] == {"display_name": (None, "Renamed")}


def test_no_event_for_a_rejected_or_rolled_back_change(recording_app, monkeypatch):
    from sqlalchemy.orm import Session

    from tests.conftest import Api

    client = falcon.testing.TestClient(recording_app)
    api = Api(client)
    user = api.user()
    photo = api.upload(user, caption="kept")
    recording.received.clear()
    url = f"/api/v1/photos/{photo['id']}"
    # Rejected input: nothing happens.
    client.simulate_patch(url, json={"visibility": "nope"}, headers=user["headers"])
    # A change whose commit fails: no event either.
    monkeypatch.setattr(Session, "commit", lambda self: (_ for _ in ()).throw(RuntimeError("x")))
    failed = client.simulate_patch(url, json={"caption": "lost"}, headers=user["headers"])
    monkeypatch.undo()
    assert failed.status_code == 500
    assert recording.received == []
    assert client.simulate_get(url).json["caption"] == "kept"


def test_a_failing_event_handler_does_not_stop_the_others(recording_app, api, caplog):
    class Broken:
        @staticmethod
        @hookspecs.hookimpl
        def lumen_photo_created(lumen, photo, changes):
            raise RuntimeError("broken plugin")

    pm = recording_app.lumen.pm
    pm.register(Broken, name="broken")
    try:
        from tests.conftest import Api

        api = Api(falcon.testing.TestClient(recording_app))
        api.upload(api.user())
    finally:
        pm.unregister(Broken)
    assert [kind for kind, _ in recording.received] == ["photo_created"]
    assert any(getattr(r, "plugin", None) == "broken" for r in caplog.records)


@pytest.mark.unit
def test_a_plugin_that_fails_to_start_names_itself(tmp_path):
    class Failing:
        @staticmethod
        @hookspecs.hookimpl
        def lumen_startup(lumen):
            raise RuntimeError("cannot open client")

    pm = make_plugin_manager([])
    pm.register(Failing, name="failing")
    settings = load_settings({"DATABASE_URL": "sqlite://", "STORAGE_PATH": str(tmp_path)})
    with pytest.raises(PluginError, match="plugin 'failing' failed in lumen_startup"):
        create_app(settings, pm)


@pytest.mark.unit
def test_a_misspelled_hook_is_an_error():
    class Misspelled:
        @staticmethod
        @hookspecs.hookimpl
        def lumen_photo_create(lumen, photo, changes):
            pass

    pm = make_plugin_manager([])
    pm.register(Misspelled)
    import pluggy

    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


@pytest.mark.unit
def test_duplicate_routes_fail_start_up(tmp_path):
    class Twin:
        @staticmethod
        @hookspecs.hookimpl
        def lumen_routes(lumen):
            return [("/api/v1/photos", object())]

    pm = make_plugin_manager([])
    pm.register(Twin, name="twin")
    settings = load_settings({"DATABASE_URL": "sqlite://", "STORAGE_PATH": str(tmp_path)})
    with pytest.raises(PluginError, match="route /api/v1/photos already added by 'core'"):
        create_app(settings, pm)


THIRD_PARTY_PLUGIN = """
import click

from lumen import CachedRead, SettingsSchema, hookimpl, pass_lumen, text

NAME = "hello"


class HelloSettings(SettingsSchema):
    greeting = text("HELLO_GREETING", "hello")


class Hello:
    def __init__(self, lumen):
        self.lumen = lumen

    def on_get(self, req, resp):
        \"\"\"Greet, and count the photos uploaded since start-up (a cached read).\"\"\"
        state = self.lumen.state[NAME]
        read = CachedRead("hello:uploads", ("hello:uploads",), lambda: len(state["uploads"]))
        resp.media = {"greeting": state["greeting"], "uploads": read.through(self.lumen)}


@hookimpl
def lumen_settings():
    return HelloSettings


@hookimpl
def lumen_startup(lumen):
    greeting = lumen.settings_of(HelloSettings).greeting
    lumen.state[NAME] = {"greeting": greeting, "uploads": []}


@hookimpl
def lumen_routes(lumen):
    return [("/hello", Hello(lumen))]


@hookimpl
def lumen_health_checks(lumen):
    return {"hello:greeting": lambda: {"status": "pass", "output": lumen.state[NAME]["greeting"]}}


@hookimpl
def lumen_cli(group):
    @group.command("hello")
    @pass_lumen
    def hello(lumen):
        \"\"\"Say the configured greeting.\"\"\"
        click.echo(lumen.settings_of(HelloSettings).greeting)


@hookimpl
def lumen_photo_created(lumen, photo, changes):
    lumen.state[NAME]["uploads"].append(str(photo.id))
"""

THIRD_PARTY_PROGRAM = """
import json, sys
import falcon.testing
from lumen import create_app, hookimpl
from lumen.config import load_settings
from tests.conftest import Api

class Cache:  # a stand-in cache plugin, to see the reads and purges the plugin asks for
    def __init__(self):
        self.values, self.asked = {}, []

    @hookimpl
    def lumen_cached(self, lumen, key, tags, loader):
        self.asked.append([key, list(tags)])
        return self.values.setdefault(key, loader())

settings = load_settings({**dict(__import__("os").environ), "LUMEN_PLUGINS": "hello,health"})
from lumen.plugins import make_plugin_manager
pm = make_plugin_manager(settings.enabled_plugins)
cache = Cache()
pm.register(cache, name="cache-stand-in")
app = create_app(settings, pm)
client = falcon.testing.TestClient(app)
api = Api(client)
before = client.simulate_get("/hello").json
api.upload(api.user())
health = client.simulate_get("/health").json["checks"]["hello:greeting"][0]
print(json.dumps({"before": before, "after_upload": len(app.lumen.state["hello"]["uploads"]),
                  "health": health["output"], "asked": cache.asked}))
"""


@pytest.mark.slow
def test_a_third_party_plugin_installed_with_pip(tmp_path, backend, clean_db):
    """A plugin written only against the documented API, built and installed with pip, adds a
    setting, a route, a health check, a CLI command, a cached read with tags and an event
    handler."""
    source = tmp_path / "lumen-hello"
    (source / "lumen_hello").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "lumen-hello"
            version = "1.0"

            [project.entry-points.lumen]
            hello = "lumen_hello"
            """
        )
    )
    (source / "lumen_hello" / "__init__.py").write_text(THIRD_PARTY_PLUGIN)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        timeout=180,
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parents[1])]),
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": backend[1],
        "STORAGE_PATH": str(tmp_path / "storage"),
        "HELLO_GREETING": "bonjour",
    }
    done = subprocess.run(
        [sys.executable, "-c", THIRD_PARTY_PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"] == {"greeting": "bonjour", "uploads": 0}
    assert seen["after_upload"] == 1  # the event handler ran after the upload committed
    assert seen["health"] == "bonjour"
    assert ["hello:uploads", ["hello:uploads"]] in seen["asked"]
    command = [sys.executable, "-c", "from lumen.cli import main; main()"]
    cli_env = {**env, "LUMEN_PLUGINS": "hello"}
    said = subprocess.run(
        [*command, "hello"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip() == "bonjour"
    listing = subprocess.run(
        [*command, "plugins"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert "hello" in listing.stdout and "enabled" in listing.stdout, listing.stderr
    assert "route:  /hello" in listing.stdout
    checked = subprocess.run(
        [*command, "config", "check"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert "# hello" in checked.stdout and "HELLO_GREETING" in checked.stdout, checked.stderr


@pytest.mark.unit
def test_a_plugin_that_fails_to_import_names_itself(monkeypatch):
    from importlib.metadata import EntryPoint

    import lumen.plugins

    broken = EntryPoint(name="broken", value="tests.plugins.no_such_module", group="lumen")
    monkeypatch.setattr(lumen.plugins, "installed_plugins", lambda: {"broken": broken})
    with pytest.raises(PluginError, match="plugin 'broken' failed to import"):
        make_plugin_manager(["broken"])


class PurgeRecorder:
    """Records both purge hooks; before the commit it also notes what other connections see of
    the photo then, and refuses when told to."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.refuse = False

    @hookspecs.hookimpl
    def lumen_purge_before_commit(self, lumen, tags, change):
        from sqlalchemy import select

        from lumen.models import Photo

        with lumen.engine.connect() as connection:
            seen = connection.execute(select(Photo.visibility)).scalars().all()
        self.calls.append(("before", tags, change, seen))
        if self.refuse:
            raise RuntimeError("the cache cannot be reached")

    @hookspecs.hookimpl
    def lumen_purge(self, lumen, tags, change):
        self.calls.append(("after", tags, change))


def test_hook_lumen_purge_before_commit(make_app):
    """Called before the commit of a change that narrows what may be seen (made private,
    deleted), with the tags the change purges, never for one that does not; a raise refuses
    the change (503, rolled back), and a lumen_purge with the same change id ends it."""
    from tests.conftest import Api

    recorder = PurgeRecorder()
    app = make_app(recorder)
    client = falcon.testing.TestClient(app)
    api = Api(client)
    owner = api.user()
    photo = api.upload(owner, visibility="public")
    url, headers = f"/api/v1/photos/{photo['id']}", owner["headers"]
    narrowed = {
        f"photo:{photo['id']}",
        f"user:{owner['id']}:photos",
        f"user:{owner['id']}:profile",
        "photos:public",
    }
    assert [call[0] for call in recorder.calls] == ["after"]  # an upload widens

    recorder.calls.clear()
    assert client.simulate_patch(url, json={"caption": "new"}, headers=headers).status_code == 200
    assert [(kind, change) for kind, _, change in recorder.calls] == [("after", None)]

    recorder.calls.clear()
    recorder.refuse = True
    refused = client.simulate_patch(url, json={"visibility": "private"}, headers=headers)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert client.simulate_get(url).json["visibility"] == "public"
    (kind, tags, refused_change, seen), after = recorder.calls
    assert (kind, set(tags), seen) == ("before", narrowed, ["public"])
    assert after == ("after", tags, refused_change)  # the rollback ends what the purge began

    recorder.calls.clear()
    recorder.refuse = False
    made = client.simulate_patch(url, json={"visibility": "private"}, headers=headers)
    assert made.status_code == 200
    (kind, tags, change, seen), (after, after_tags, after_change) = recorder.calls
    assert (kind, set(tags), seen) == ("before", narrowed, ["public"])  # not yet committed
    assert (after, after_change) == ("after", change) and set(tags) <= set(after_tags)
    assert change != refused_change  # one id per change

    recorder.calls.clear()
    assert client.simulate_patch(url, json={"visibility": "public"}, headers=headers).status_code
    assert [call[0] for call in recorder.calls] == ["after"]  # made public: widens

    recorder.calls.clear()
    assert client.simulate_delete(url, headers=headers).status_code == 204
    assert [call[0] for call in recorder.calls] == ["before", "after"]
    assert recorder.calls[0][3] == ["public"] and recorder.calls[0][2] == recorder.calls[1][2]
