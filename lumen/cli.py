"""The ``lumen`` command. Plugins add sub-commands through the ``lumen_cli`` hook."""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import sys
import time

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
@click.option(
    "--allow-data-loss",
    is_flag=True,
    help="Drop columns and tables that hold data no upgrade can bring back.",
)
@pass_context
def downgrade(obj: Context, revision, allow_data_loss):
    """Step the schema back to REVISION (default -1; with several branches say BRANCH@-1).

    A step that would drop data no upgrade can bring back is refused unless
    --allow-data-loss is given (take a backup first: `lumen backup create`)."""
    try:
        migrate.downgrade(obj.lumen, revision, allow_data_loss=allow_data_loss)
    except migrate.DataLossRefused as exc:
        fail(str(exc))
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
@click.option(
    "--bulk",
    is_flag=True,
    help="Insert the photos in batches (COPY on PostgreSQL), sharing a small pool of image "
    "files: a million in minutes. Needs --users of at least 1.",
)
@pass_context
def seed_command(obj: Context, user_count, photo_count, seed_value, bulk):
    """Create synthetic users and photos with real images (demos, load tests).

    Seeded users share the password 'seeded-user-password'.
    """
    from lumen.bulk_seed import bulk_seed
    from lumen.maintenance import seed

    started = time.monotonic()
    try:
        make = bulk_seed if bulk else seed
        users_made, photos_made = make(obj.lumen, user_count, photo_count, seed_value)
    except ValueError as exc:
        fail(str(exc))
    took = time.monotonic() - started
    click.echo(f"created {users_made} users and {photos_made} photos in {took:.1f} s")


@cli.group()
def storage():
    """Stored image files."""


@storage.command("check")
@click.option(
    "--fix",
    is_flag=True,
    help="Remove orphan files and photos whose file is gone; recompute wrong photo counters.",
)
@click.option("--verify", is_flag=True, help="Re-hash every file against its recorded sha256.")
@pass_context
def storage_check(obj: Context, fix, verify):
    """Find files no photo refers to, photos whose files are missing (or corrupt), and photo
    counters that differ from COUNT(*)."""
    from lumen.maintenance import check_storage

    report = check_storage(obj.lumen, fix=fix, verify=verify)
    print_storage_report(report, fix)
    if report.corrupt_files or (not fix and not report.clean):
        sys.exit(1)


def print_storage_report(report, fix: bool = False) -> None:
    verb = "removed" if fix else "found"
    click.echo(f"{verb} {len(report.orphan_files)} orphan files")
    click.echo(f"{verb} {len(report.missing_files)} photos with missing files")
    click.echo(f"{verb} {report.stale_temporary} stale temporary files")
    click.echo(
        f"{'repaired' if fix else 'found'} {len(report.wrong_counters)} wrong photo counters"
    )
    for line in report.wrong_counters:
        click.echo(f"  {line}")
    for photo_id in report.missing_files:
        click.echo(f"  photo {photo_id}")
    if report.corrupt_files:
        click.echo(f"found {len(report.corrupt_files)} corrupt files")
        for sha, photo_ids in report.corrupt_files.items():
            click.echo(f"  file {sha} of photo {', '.join(photo_ids)}")


@storage.command("strip-locations")
@pass_context
def storage_strip_locations(obj: Context):
    """Give photos uploaded before public copies existed theirs (run once after `db upgrade`)."""
    from lumen.maintenance import strip_locations

    made = strip_locations(obj.lumen)
    click.echo(f"made {made} copies without location metadata")


# --- operations: maintenance mode and backups ----------------------------------------------------


@cli.group()
def maintenance():
    """Maintenance mode: writes refused with 503 on every worker of every host, reads served."""


@maintenance.command("on")
@click.option("--message", default=None, help="The description of the 503 answers.")
@click.option(
    "--retry-after", type=click.IntRange(min=0), default=None, help="Retry-After, in seconds."
)
@pass_context
def maintenance_on(obj: Context, message, retry_after):
    """Refuse writes (within a second on every worker); reads go on."""
    from lumen import maintenance_mode

    state = maintenance_mode.switch_on(
        obj.lumen.engine,
        message or maintenance_mode.DEFAULT_MESSAGE,
        maintenance_mode.DEFAULT_RETRY_AFTER if retry_after is None else retry_after,
    )
    click.echo(f"maintenance mode on: {state.message} (Retry-After: {state.retry_after})")


@maintenance.command("off")
@pass_context
def maintenance_off(obj: Context):
    """Serve writes again."""
    from lumen import maintenance_mode

    was_on = maintenance_mode.switch_off(obj.lumen.engine)
    click.echo("maintenance mode off" + ("" if was_on else " (it was not on)"))


@maintenance.command("status")
@pass_context
def maintenance_status(obj: Context):
    """Say whether maintenance mode is on (exit 1 when it is)."""
    from lumen import maintenance_mode

    state = maintenance_mode.current(obj.lumen.engine)
    if state is None:
        click.echo("maintenance mode off")
        return
    click.echo(
        f"maintenance mode on since {state.since.isoformat()}: {state.message} "
        f"(Retry-After: {state.retry_after})"
    )
    sys.exit(1)


@contextlib.contextmanager
def maintenance_for(lumen, enabled: bool, message: str):
    """Maintenance mode for the duration of a command (left as it was when already on)."""
    from lumen import maintenance_mode

    if not enabled or maintenance_mode.current(lumen.engine) is not None:
        yield
        return
    maintenance_mode.switch_on(lumen.engine, message)
    click.echo("maintenance mode on", err=True)
    try:
        yield
    finally:
        maintenance_mode.switch_off(lumen.engine)
        click.echo("maintenance mode off", err=True)


MAINTENANCE_OPTION = click.option(
    "--maintenance", is_flag=True, help="Refuse writes (maintenance mode) while this runs."
)


@cli.group()
def backup():
    """Snapshots of the database and the image files together."""


@backup.command("create")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--keep", type=click.IntRange(min=1), help="Then remove all but the newest N.")
@MAINTENANCE_OPTION
@pass_context
def backup_create(obj: Context, dest, keep, maintenance):
    """Take a consistent snapshot into DEST while the service runs (incremental: files the
    last snapshot has are hard-linked from it)."""
    from lumen import backup as backups

    lumen = obj.lumen
    try:
        with maintenance_for(lumen, maintenance, "A backup is being taken; try again shortly."):
            snapshot = backups.create(lumen, dest, keep=keep)
    except backups.BackupError as exc:
        fail(str(exc), code=1)
    click.echo(
        f"snapshot {snapshot.path}: {snapshot.photos} photos, {snapshot.files} files "
        f"({snapshot.new_files} new, {snapshot.reused_files} from the last snapshot), "
        f"{snapshot.bytes} bytes"
    )
    for path in snapshot.pruned:
        click.echo(f"removed old snapshot {path}")


@backup.command("verify")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
def backup_verify(source):
    """Check a snapshot (or DEST's newest) against its manifest."""
    from lumen import backup as backups

    try:
        snapshot, problems = backups.verify(source)
    except backups.BackupError as exc:
        fail(str(exc), code=1)
    for problem in problems:
        click.echo(f"  {problem}")
    if problems:
        fail(f"{snapshot}: {len(problems)} problems", code=1)
    click.echo(f"snapshot {snapshot}: every file matches its manifest")


@backup.command("restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--force", is_flag=True, help="Replace a database, and add to a storage, not empty.")
@MAINTENANCE_OPTION
@pass_context
def backup_restore(obj: Context, source, force, maintenance):
    """Restore a snapshot (or DEST's newest) into an empty database and storage folder, then
    check every restored file (`storage check --verify`)."""
    from lumen import backup as backups

    lumen = obj.lumen
    try:
        message = "A restore is under way; try again shortly." if maintenance else None
        report = backups.restore(lumen, source, force=force, maintenance_message=message)
    except backups.BackupError as exc:
        fail(str(exc), code=1)
    print_storage_report(report)
    if report.missing_files or report.corrupt_files:
        fail("the restored data is not whole", code=1)
    click.echo("restored: every photo has its files, every file its sha256")


# --- loadtest: the release gate ----------------------------------------------------------------


class _RunByDefault(click.Group):
    """``lumen loadtest [URL] [OPTIONS]`` is ``lumen loadtest run ...``; ``prepare`` is the
    other sub-command."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _loadtests_file(name: str) -> str:
    """loadtests/NAME of the working folder, else of the checkout Lumen is installed from."""
    from pathlib import Path

    for folder in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (folder / "loadtests" / name).exists():
            return str(folder / "loadtests" / name)
    return str(Path("loadtests") / name)


@cli.group(cls=_RunByDefault)
def loadtest():
    """The release gate: Locust's scenarios against a deployment, judged by thresholds.

    `lumen loadtest [URL] [OPTIONS]` runs it (see `lumen loadtest run --help`); without URL on
    a local deployment of its own. `lumen loadtest prepare` makes a target's data."""


@loadtest.command("prepare")
@click.option("--members", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--photos", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--origin", help="An allowed origin for the CORS scenario (default: from settings).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="loadtest-data.json",
    show_default=True,
    help="The data file the scenarios read (mode 0600: it holds tokens).",
)
@click.pass_context
def loadtest_prepare(ctx, members, photos, origin, out):
    """Make this deployment's load-test data: members with tokens (as `lumen users create`
    does, registration open or not), photos (as `lumen seed` makes them), the gazetteer."""
    from lumen.loadtest.prepare import default_origin, prepare, write

    obj = ctx.find_object(Context)
    lumen = obj.lumen
    if "locations" in lumen.plugin_names:
        locations = ctx.find_root().command.get_command(ctx, "locations")
        ctx.invoke(
            locations.get_command(ctx, "import"), dataset=None, min_population=None, if_empty=True
        )
    origin = origin or default_origin(lumen.settings.environ)
    data = prepare(lumen, members, photos, origin, progress=sys.stderr.isatty())
    write(data, out)
    click.echo(
        f"prepared {len(data['members'])} members with tokens (until {data['tokens_expire_at']}) "
        f"and {len(data['photos'])} public photos; written to {out}"
    )
    if origin is None:
        click.echo("no allowed origin known: the CORS scenario will be left out (--origin)")


def _run_time(_ctx, _param, value):
    from lumen.loadtest.locust_run import seconds

    try:
        if seconds(value) < 1:
            raise ValueError("must be at least 1s")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@loadtest.command("run")
@click.argument("url", required=False)
@click.option("--users", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--spawn-rate", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option(
    "--run-time", default="1m", show_default=True, callback=_run_time, help="e.g. 90s, 5m, 1h30m."
)
@click.option(
    "--report",
    type=click.Path(file_okay=False),
    default="loadtest-report",
    show_default=True,
    help="Folder for Locust's HTML report, its CSV files and the logs.",
)
@click.option(
    "--thresholds",
    "thresholds_path",
    type=click.Path(dir_okay=False),
    default=lambda: _loadtests_file("thresholds.toml"),
    help="Release thresholds (default loadtests/thresholds.toml).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Locust worker processes under a master (0: one process).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False),
    default="loadtest-data.json",
    show_default=True,
    help="With URL: the file of `lumen loadtest prepare` for that deployment.",
)
@click.option("--locustfile", default=lambda: _loadtests_file("locustfile.py"), hidden=True)
@click.option(
    "--members",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Without URL: members the local deployment prepares.",
)
@click.option(
    "--photos",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Without URL: photos the local deployment prepares.",
)
@click.option(
    "--server-workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Without URL: gunicorn workers of the local deployment.",
)
def loadtest_run(
    url,
    users,
    spawn_rate,
    run_time,
    report,
    thresholds_path,
    workers,
    data_path,
    locustfile,
    members,
    photos,
    server_workers,
):
    """Run the scenarios headless against URL (without URL: a local deployment of its own),
    write the report, print each threshold with its measured value, exit 1 if one is broken."""
    import importlib.util
    from pathlib import Path

    from lumen.loadtest import thresholds as gate
    from lumen.loadtest.local import DeploymentError, deployment
    from lumen.loadtest.locust_run import LocustError, run

    if importlib.util.find_spec("locust") is None:
        fail("the load test needs Locust: pip install -e '.[load]'")
    if not Path(locustfile).exists():
        fail(f"{locustfile}: no such file (run from a checkout of Lumen)")
    try:
        limits = gate.load(Path(thresholds_path))
    except gate.ThresholdsError as exc:
        fail(str(exc))
    folder = Path(report)
    with contextlib.ExitStack() as stack:
        if url is None:
            try:
                local = stack.enter_context(
                    deployment(folder, members, photos, server_workers, echo=click.echo)
                )
            except DeploymentError as exc:
                fail(f"local deployment: {exc} (see {folder / 'server.log'})")
            url, data_path = local.url, local.data_path
        try:
            data = json.loads(Path(data_path).read_text())
        except (OSError, ValueError) as exc:
            fail(f"{data_path}: {exc} (make it with `lumen loadtest prepare`)")
        classes = _user_classes(data)
        click.echo(
            f"load test of {url}: {users} users (spawn rate {spawn_rate}/s) for {run_time}"
            + (f", {workers} Locust workers" if workers else "")
            + f"; scenarios: {', '.join(classes)}"
        )
        try:
            done = run(
                Path(locustfile),
                url,
                Path(data_path),
                folder,
                users,
                spawn_rate,
                run_time,
                workers,
                classes,
                dict(os.environ),
            )
        except LocustError as exc:
            fail(str(exc), code=1)
    total, rows = gate.read_stats(done.stats_json)
    checks = gate.judge(limits, total, rows)
    click.echo(gate.table(checks))
    reasons = gate.failure_reasons(done.failures_json)
    if reasons:
        click.echo("commonest failures:")
        click.echo("\n".join(reasons))
    click.echo(f"report: {done.html} (CSV files: {done.folder}/locust_*.csv)")
    broken = [check for check in checks if not check.passed]
    if broken:
        click.echo(f"release gate FAILED: {len(broken)} thresholds broken", err=True)
        for check in broken:
            click.echo(f"  broken: {check.problem}", err=True)
        sys.exit(1)
    click.echo(f"release gate passed: {len(checks)} thresholds met, {total.requests} requests")


def _user_classes(data: dict) -> list[str]:
    """The scenarios the target supports: search with the locations plugin, the probes with
    health, the preflights with cors and an allowed origin."""
    plugins = set(data.get("plugins", []))
    classes = ["Browser", "Member"]
    if "locations" in plugins:
        classes.append("Searcher")
    if "cors" in plugins and data.get("origin"):
        classes.append("CorsClient")
    if "health" in plugins:
        classes.append("Orchestrator")
    return classes


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
