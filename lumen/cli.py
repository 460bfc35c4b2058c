"""The ``lumen`` command. Plugins add sub-commands through the ``lumen_cli`` hook."""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys

import click
from sqlalchemy.exc import DBAPIError

from lumen import logs, migrate
from lumen.config import (
    ConfigError,
    CoreSettingsSchema,
    ServeSettingsSchema,
    load_section,
    load_settings,
    shown,
)
from lumen.plugins import PluginError, installed_plugins, make_plugin_manager, plugin_name
from lumen.validation import first_problem


class Context:
    """What commands share: settings and plugins, loaded once; the started app object on
    demand (``obj.lumen``, or a command decorated with ``pass_lumen``)."""

    def __init__(self):
        self.error: Exception | None = None
        self.settings = self.pm = None
        self._lumen = None
        try:
            self.settings = load_settings()
            self.pm = make_plugin_manager(self.settings.enabled_plugins)
        except (ConfigError, PluginError) as exc:
            self.error = exc

    def fail_if_invalid(self) -> None:
        if self.error is not None:
            fail(str(self.error))

    @property
    def lumen(self):
        """The started application object (plugins have validated their settings)."""
        self.fail_if_invalid()
        if self._lumen is None:
            from lumen.app import Lumen

            logs.configure(self.settings)
            try:
                lumen = Lumen(self.settings, self.pm)
                lumen.start()
            except (ConfigError, PluginError) as exc:
                fail(str(exc))
            self._lumen = lumen
        return self._lumen


def fail(message: str, code: int = 2):
    click.echo(f"lumen: {message}", err=True)
    sys.exit(code)


pass_context = click.make_pass_decorator(Context)


def pass_lumen(command):
    """Decorate a click command to receive the started application object first."""

    @pass_context
    @functools.wraps(command)
    def with_lumen(obj: Context, *args, **kwargs):
        return command(obj.lumen, *args, **kwargs)

    return with_lumen


@click.group()
@click.version_option(package_name="lumen")
@click.pass_context
def cli(ctx):
    """Lumen, a plugin-based photo-sharing REST backend."""
    ctx.ensure_object(Context)


# --- serve -----------------------------------------------------------------------------------


@cli.command()
@click.option("--bind", help="Address to listen on (LUMEN_BIND), e.g. 127.0.0.1:8000.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (WEB_CONCURRENCY).")
@pass_context
def serve(obj: Context, bind, workers):
    """Serve the API with gunicorn (migrating an empty embedded database first)."""
    if bind:
        os.environ["LUMEN_BIND"] = bind
    if workers:
        os.environ["WEB_CONCURRENCY"] = str(workers)
    try:
        # Checked here too: gunicorn reads WEB_CONCURRENCY itself, before any config file.
        load_section(ServeSettingsSchema, os.environ)
    except ConfigError as exc:
        fail(str(exc))
    lumen = obj.lumen
    if lumen.settings.is_embedded_database:
        migrate.upgrade(lumen)
    lumen.shutdown()
    argv = ["gunicorn", "--config", "python:lumen.gunicorn_conf", "lumen.wsgi:app"]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


# --- db --------------------------------------------------------------------------------------


@cli.group()
def db():
    """Database schema migrations (the core and every enabled plugin)."""


@db.command()
@click.argument("revision", default="heads")
@pass_context
def upgrade(obj: Context, revision):
    """Bring the schema to REVISION (default: every branch to its head)."""
    migrate.upgrade(obj.lumen, revision)
    click.echo("database at: " + ", ".join(sorted(migrate.current(obj.lumen))))


@db.command()
@click.argument("revision", default="-1")
@pass_context
def downgrade(obj: Context, revision):
    """Step the schema back to REVISION (default -1; with several branches say BRANCH@-1)."""
    migrate.downgrade(obj.lumen, revision)
    click.echo("database at: " + (", ".join(sorted(migrate.current(obj.lumen))) or "base"))


@db.command()
@pass_context
def current(obj: Context):
    """Show the revision of each branch."""
    click.echo(", ".join(sorted(migrate.current(obj.lumen))) or "base (not migrated)")


# --- config and plugins ----------------------------------------------------------------------


@cli.group()
def config():
    """Settings."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def check(obj: Context, as_json):
    """Validate every setting (core, server, plugins); print them with secrets masked."""
    lumen = obj.lumen  # starting the plugins validates their settings
    environ = lumen.settings.environ
    try:
        sections = {"core": shown(CoreSettingsSchema, environ)}
        sections["serve"] = shown(ServeSettingsSchema, environ)
    except ConfigError as exc:
        fail(str(exc))
    for schema_type, (name, _) in lumen.sections.items():
        sections.setdefault(name, {}).update(shown(schema_type, environ))
    sections["core"]["LUMEN_PLUGINS"] = ",".join(lumen.plugin_names)
    if as_json:
        values = {name: value for section in sections.values() for name, value in section.items()}
        click.echo(json.dumps(values, indent=2, default=str))
        return
    width = max(len(name) for section in sections.values() for name in section)
    for section, values in sections.items():
        click.echo(f"# {section}")
        for name, value in values.items():
            click.echo(f"{name:<{width}}  {'' if value is None else value}")


@cli.command("plugins")
@pass_context
def plugins_command(obj: Context):
    """List installed plugins, which are enabled, and what each registers."""
    from lumen.app import create_app

    obj.fail_if_invalid()
    try:
        lumen = create_app(obj.settings, obj.pm).lumen
    except (ConfigError, PluginError) as exc:
        fail(str(exc))
    registers: dict[str, list[str]] = {}
    for hook_name in sorted(h for h in dir(lumen.hook) if h.startswith("lumen_")):
        for impl in getattr(lumen.hook, hook_name).get_hookimpls():
            registers.setdefault(plugin_name(lumen.pm, impl), []).append(hook_name[6:])
    routes: dict[str, list[str]] = {}
    for template, (owner, _) in lumen.routes.items():
        routes.setdefault(owner, []).append(template)
    for name, entry_point in sorted(installed_plugins().items()):
        state = "enabled" if name in lumen.plugin_names else "disabled"
        click.echo(f"{name:<12} {state:<9} {entry_point.value}")
        if state == "enabled":
            click.echo(f"    hooks:  {', '.join(registers.get(name, [])) or '-'}")
            for template in routes.get(name, []):
                click.echo(f"    route:  {template}")
    lumen.shutdown()


# --- users -----------------------------------------------------------------------------------


@cli.group()
def users():
    """User accounts."""


@users.command("create")
@click.argument("username")
@click.option("--display-name", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_context
def users_create(obj: Context, username, display_name, password_stdin):
    """Create a user (works whatever LUMEN_OPEN_REGISTRATION says)."""
    from lumen.schemas import UserCreateSchema, ValidationError
    from lumen.users import UsernameTaken, create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    try:
        UserCreateSchema().load(
            {"username": username, "password": password, "display_name": display_name}
        )
    except ValidationError as err:
        field, rule = first_problem(err)
        fail(f"{field}: {rule}", code=1)
    try:
        with obj.lumen.unit_of_work() as session:
            user = create_user(session, username, password, display_name)
    except UsernameTaken:
        fail(f"username: {username!r} is already taken", code=1)
    click.echo(f"created user {user.username} ({user.id})")


# --- data --------------------------------------------------------------------------------------


@cli.command("seed")
@click.option("--users", "user_count", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--photos", "photo_count", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--seed", "seed_value", type=int, default=1, help="Random seed.")
@pass_context
def seed_command(obj: Context, user_count, photo_count, seed_value):
    """Create synthetic users and photos with real images (demos, load tests).

    Seeded users share the password 'seeded-user-password'.
    """
    from lumen.maintenance import seed

    users_made, photos_made = seed(obj.lumen, user_count, photo_count, seed_value)
    click.echo(f"created {users_made} users and {photos_made} photos")


@cli.group()
def storage():
    """Stored image files."""


@storage.command("check")
@click.option("--fix", is_flag=True, help="Remove orphan files and photos whose file is gone.")
@pass_context
def storage_check(obj: Context, fix):
    """Find files no photo refers to, and photos whose files are missing."""
    from lumen.maintenance import check_storage

    report = check_storage(obj.lumen, fix=fix)
    verb = "removed" if fix else "found"
    click.echo(f"{verb} {len(report.orphan_files)} orphan files")
    click.echo(f"{verb} {len(report.missing_files)} photos with missing files")
    click.echo(f"{verb} {report.stale_temporary} stale temporary files")
    for photo_id in report.missing_files:
        click.echo(f"  photo {photo_id}")
    if not fix and not report.clean:
        sys.exit(1)


@storage.command("strip-locations")
@pass_context
def storage_strip_locations(obj: Context):
    """Give photos uploaded before public copies existed theirs (run once after `db upgrade`)."""
    from lumen.maintenance import strip_locations

    made = strip_locations(obj.lumen)
    click.echo(f"made {made} copies without location metadata")


def make_cli(pm) -> click.Group:
    """The ``lumen`` command of this invocation: the core's commands and the enabled plugins'.
    Built anew each time, so no plugin's command outlives the invocation that added it."""
    group = click.Group(
        cli.name,
        commands=dict(cli.commands),
        callback=cli.callback,
        params=list(cli.params),
        help=cli.help,
    )
    if pm is not None:
        pm.hook.lumen_cli(group=group)
    return group


def main():
    try:
        context = Context()
        make_cli(context.pm)(obj=context)
    except KeyboardInterrupt:
        sys.exit(130)
    except DBAPIError as exc:
        # The usual cause on a new deployment: the schema was never created.
        fail(
            f"database error: {str(exc.orig).strip()} (is the schema migrated? `lumen db upgrade`)"
        )
