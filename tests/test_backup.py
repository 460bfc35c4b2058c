"""Backups taken while the service runs and writes go on, verified and restored whole; the
storage check that re-hashes every file."""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from lumen.config import load_settings
from lumen.models import Photo
from tests.conftest import _pg_database, jpeg, multipart, run_lumen, service_env


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def storage_path(root: Path, sha: str) -> Path:
    return root / sha[:2] / sha[2:4] / sha


class Traffic(threading.Thread):
    """One user uploading, editing and deleting photos in a loop until stopped."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.done = {"upload": 0, "edit": 0, "delete": 0}
        self.failures: list = []
        self.photos: list[str] = []
        self.rng = random.Random(7)
        name = f"bk_{uuid.uuid4().hex[:10]}"
        self.call("POST", "/api/v1/users", {"username": name, "password": "correct horse"})
        token = self.call("POST", "/api/v1/tokens", {"username": name, "password": "correct horse"})
        self.auth = {"Authorization": f"Bearer {token['token']}"}

    def call(self, method, path, body=None, headers=None, expect=(200, 201, 204)):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if isinstance(body, dict):
                body = json.dumps(body).encode()
                headers = {**(headers or {}), "Content-Type": "application/json"}
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        if answer.status not in expect:
            raise AssertionError(f"{method} {path}: {answer.status} {data[:200]!r}")
        return json.loads(data) if data else None

    def upload(self) -> None:
        body, content_type = multipart(
            {"file": ("p.jpg", jpeg(64 + self.rng.randrange(64), 48)), "caption": "new"}
        )
        photo = self.call(
            "POST", "/api/v1/photos", body, {**self.auth, "Content-Type": content_type}
        )
        self.photos.append(photo["id"])
        self.done["upload"] += 1

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.45 or len(self.photos) < 5:
            self.upload()
        elif roll < 0.7:
            photo_id = self.rng.choice(self.photos)
            body = {"caption": f"edited {self.rng.random()}"}
            self.call("PATCH", f"/api/v1/photos/{photo_id}", body, self.auth)
            self.done["edit"] += 1
        else:
            photo_id = self.photos.pop(self.rng.randrange(len(self.photos)))
            self.call("DELETE", f"/api/v1/photos/{photo_id}", headers=self.auth)
            self.done["delete"] += 1

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except Exception as exc:  # reported by the test, not lost in the thread
            self.failures.append(exc)

    def total(self) -> int:
        return sum(self.done.values())


@pytest.fixture
def restore_target(backend, tmp_path):
    """The URL of a fresh, empty database of the backend's kind."""
    if backend[0] == "postgresql":
        url, drop = _pg_database()
        yield url
        drop()
    else:
        yield "sqlite:///" + str(tmp_path / "restored.db")


def photo_rows(url: str) -> dict[str, tuple]:
    engine = create_engine(load_settings({"DATABASE_URL": url}).database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Photo.id, Photo.sha256, Photo.thumb_sha256, Photo.public_sha256)
            ).all()
    finally:
        engine.dispose()
    return {str(r.id): tuple(s for s in r[1:] if s is not None) for r in rows}


@pytest.mark.slow
def test_a_backup_taken_under_writes_restores_every_photo_whole(
    gunicorn_server, environ, clean_db, restore_target, tmp_path
):
    env = {**environ, "LUMEN_PLUGINS": "none"}
    server = gunicorn_server(env, workers=2)
    traffic = Traffic(server.port)
    for _ in range(15):
        traffic.upload()
    dest = tmp_path / "backups"
    cli_env = service_env(**env)

    traffic.start()
    snapshots = []
    try:
        for keep in ("3", "1"):
            before = traffic.total()
            made = run_lumen(
                "backup", "create", str(dest), "--keep", keep, env=cli_env, cwd=tmp_path
            )
            assert made.returncode == 0, made.stderr
            snapshots.append(made.stdout)
            assert traffic.total() > before, "no write went on while the backup ran"
            assert not traffic.failures, traffic.failures
    finally:
        traffic.stop.set()
        traffic.join(timeout=60)
    assert not traffic.failures, traffic.failures
    assert traffic.done["delete"] and traffic.done["edit"]

    # Retention kept the newest only; the second run linked what the first had copied.
    kept = [p for p in dest.iterdir() if not p.name.startswith(".")]
    assert len(kept) == 1 and "removed old snapshot" in snapshots[1]
    assert "from the last snapshot" in snapshots[1] and " 0 from the last" not in snapshots[1]
    manifest = json.loads((kept[0] / "manifest.json").read_text())

    verified = run_lumen("backup", "verify", str(dest), env=cli_env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    restored_storage = tmp_path / "restored-storage"
    target_env = service_env(
        **{**env, "DATABASE_URL": restore_target, "STORAGE_PATH": str(restored_storage)}
    )
    restored = run_lumen("backup", "restore", str(dest), env=target_env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "every photo has its files" in restored.stdout
    # The snapshot's counters are those of its rows (taken in the same snapshot).
    assert "found 0 wrong photo counters" in restored.stdout

    # Every photo of the snapshot has its row, its files and their exact bytes.
    rows = photo_rows(restore_target)
    assert len(rows) == manifest["photos"] >= 10
    referenced = {sha for shas in rows.values() for sha in shas}
    assert referenced == set(manifest["files"])
    for shas in rows.values():
        for sha in shas:
            assert sha256_of(storage_path(restored_storage, sha)) == sha
    # The rows are those the service had: a photo still there has the same files.
    live = photo_rows(environ["DATABASE_URL"])
    assert all(live[i] == shas for i, shas in rows.items() if i in live)

    again = run_lumen("backup", "restore", str(dest), env=target_env, cwd=tmp_path)
    assert again.returncode == 1 and "not empty" in again.stderr


def test_verify_finds_a_damaged_snapshot(app, api, environ, tmp_path):
    from lumen import backup

    owner = api.user()
    api.upload(owner)
    made = backup.create(app.lumen, tmp_path / "backups", progress=False)
    assert made.photos == 1 and made.files == 2 and made.new_files == 2
    assert backup.verify(made.path, progress=False)[1] == []

    sha = sorted(json.loads((made.path / "manifest.json").read_text())["files"])[0]
    damaged = backup.file_path(made.path, sha)
    damaged.unlink()  # a hard link to the storage: break it before writing
    damaged.write_bytes(b"not the image")
    assert backup.verify(made.path, progress=False)[1] == [f"file {sha} is corrupt"]
    # An incremental run does not link a damaged file: verify has told the operator.
    cli_env = service_env(**environ)
    checked = run_lumen("backup", "verify", str(made.path), env=cli_env, cwd=tmp_path)
    assert checked.returncode == 1 and f"file {sha} is corrupt" in checked.stdout


def test_restore_refuses_a_snapshot_of_the_other_database_kind(app, api, tmp_path, backend):
    from lumen import backup
    from lumen.app import Lumen
    from lumen.plugins import make_plugin_manager

    api.upload(api.user())
    made = backup.create(app.lumen, tmp_path / "backups", progress=False)
    other = "postgresql://postgres@127.0.0.1:5432/postgres"
    if backend[0] == "postgresql":
        other = f"sqlite:///{tmp_path}/other.db"
    settings = load_settings({"DATABASE_URL": other, "STORAGE_PATH": str(tmp_path / "s2")})
    lumen = Lumen(settings, make_plugin_manager([]))
    try:
        with pytest.raises(backup.BackupError, match="snapshot is of a"):
            backup.restore(lumen, made.path, progress=False)
    finally:
        lumen.engine.dispose()


def test_a_deletion_during_a_backup_waits_for_its_end(app, api, client, tmp_path):
    """While a backup holds deletions, a deleted photo's files stay; they go once it ends."""
    from lumen.photos import remove_unreferenced

    owner = api.user()
    photo = api.upload(owner)
    storage = app.lumen.storage
    with app.lumen.Session() as session:
        shas = {session.get(Photo, uuid.UUID(photo["id"])).sha256}
    release = storage.hold_deletions()
    try:
        deleted = client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=owner["headers"])
        assert deleted.status_code == 204
        assert all(storage.exists(sha) for sha in shas)
        assert shas <= storage.deferred()
    finally:
        release()
    remove_unreferenced(app.lumen, storage.deferred())
    assert not any(storage.exists(sha) for sha in shas) and not storage.deferred()


def test_storage_check_verify_finds_a_corrupt_and_a_missing_file(app, api, environ, tmp_path):
    owner = api.user()
    corrupt, missing, intact = api.upload(owner), api.upload(owner), api.upload(owner)
    storage = app.lumen.storage
    with app.lumen.Session() as session:
        corrupt_sha = session.get(Photo, uuid.UUID(corrupt["id"])).sha256
        missing_thumb = session.get(Photo, uuid.UUID(missing["id"])).thumb_sha256
    damaged = storage.path_for(corrupt_sha)
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    storage.path_for(missing_thumb).unlink()

    cli_env = service_env(**environ)
    plain = run_lumen("storage", "check", env=cli_env, cwd=tmp_path)
    assert "corrupt" not in plain.stdout  # without --verify files are not read
    checked = run_lumen("storage", "check", "--verify", env=cli_env, cwd=tmp_path)
    assert checked.returncode == 1
    assert "found 1 photos with missing files" in checked.stdout
    assert f"  photo {missing['id']}" in checked.stdout
    assert "found 1 corrupt files" in checked.stdout
    assert f"  file {corrupt_sha} of photo {corrupt['id']}" in checked.stdout
    assert intact["id"] not in checked.stdout


def test_maintenance_option_refuses_writes_during_the_backup(app, api, client, tmp_path):
    """`--maintenance` switches the flag on for the backup's duration, and off after."""
    from click.testing import CliRunner

    from lumen import backup, maintenance_mode
    from lumen.cli import Context, cli

    api.upload(api.user())
    seen = []
    original = backup._copy_files

    def copy_files(*args):
        seen.append(maintenance_mode.current(app.lumen.engine))
        return original(*args)

    environ = app.lumen.settings.environ
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backup, "_copy_files", copy_files)
        for name, value in environ.items():
            patch.setenv(name, value)
        ran = CliRunner().invoke(
            cli, ["backup", "create", str(tmp_path / "b"), "--maintenance"], obj=Context()
        )
    assert ran.exit_code == 0, ran.output
    assert seen[0] is not None and "backup" in seen[0].message
    assert maintenance_mode.current(app.lumen.engine) is None


def test_the_database_snapshot_carries_no_maintenance_flag(app, backend, tmp_path):
    from lumen import backup, maintenance_mode

    maintenance_mode.switch_on(app.lumen.engine, "on during the dump")
    made = backup.create(app.lumen, tmp_path / "b", progress=False)
    maintenance_mode.switch_off(app.lumen.engine)
    if backend[0] == "sqlite":
        engine = create_engine(f"sqlite:///{made.path / 'database.sqlite3'}")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM maintenance")).scalar() == 0
        engine.dispose()
    else:
        listing = (
            __import__("subprocess")
            .run(
                ["pg_restore", "--list", str(made.path / "database.pgdump")],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout
        )
        assert "TABLE DATA public maintenance" not in listing
        assert "TABLE DATA public photos" in listing


def test_a_photo_deleted_between_the_snapshot_and_the_copy_is_backed_up_whole(
    app, api, client, tmp_path, monkeypatch
):
    """The race the design closes: the snapshot has the photo, the service deletes it before
    its files are copied; the files stay until the copy is done, then go."""
    from lumen import backup

    owner = api.user()
    photo = api.upload(owner)
    original = backup._copy_files

    def delete_then_copy(*args):
        answer = client.simulate_delete(f"/api/v1/photos/{photo['id']}", headers=owner["headers"])
        assert answer.status_code == 204
        return original(*args)

    monkeypatch.setattr(backup, "_copy_files", delete_then_copy)
    made = backup.create(app.lumen, tmp_path / "b", progress=False)
    assert made.photos == 1 and made.files == 2
    assert backup.verify(made.path, progress=False)[1] == []
    storage = app.lumen.storage
    assert not any(storage.files()) and not storage.deferred()  # removed after the copy


def test_a_backup_fails_whole_on_a_missing_or_corrupt_storage_file(app, api, tmp_path):
    from lumen import backup

    owner = api.user()
    first, second = api.upload(owner), api.upload(owner)
    with app.lumen.Session() as session:
        shas = [session.get(Photo, uuid.UUID(p["id"])).sha256 for p in (first, second)]
    storage = app.lumen.storage
    dest = tmp_path / "b"
    storage.path_for(shas[0]).unlink()
    with pytest.raises(backup.BackupError, match="1 files the database refers to are missing"):
        backup.create(app.lumen, dest, progress=False)
    storage.path_for(shas[1]).write_bytes(b"rot")
    with pytest.raises(backup.BackupError, match=f"file {shas[1]} is corrupt in the storage"):
        backup.create(app.lumen, dest, progress=False)
    assert list(dest.iterdir()) == []  # no partial snapshot left behind
    with pytest.raises(backup.BackupError, match="no snapshot here"):
        backup.verify(dest)


def test_restore_with_force_and_maintenance(app, api, restore_target, tmp_path, monkeypatch):
    """A second restore over the first is refused, then done with force; with a maintenance
    message the flag is on while files are copied, and off at the end."""
    from lumen import backup, maintenance_mode
    from lumen.app import Lumen
    from lumen.plugins import make_plugin_manager

    api.upload(api.user())
    made = backup.create(app.lumen, tmp_path / "b", progress=False)
    settings = load_settings(
        {"DATABASE_URL": restore_target, "STORAGE_PATH": str(tmp_path / "restored")}
    )
    lumen = Lumen(settings, make_plugin_manager([]))
    try:
        assert backup.restore(lumen, tmp_path / "b", progress=False).clean
        with pytest.raises(backup.BackupError, match="database is not empty"):
            backup.restore(lumen, made.path, progress=False)
        seen = []
        original = backup._restore_files

        def restore_files(*args):
            seen.append(maintenance_mode.current(lumen.engine))
            return original(*args)

        monkeypatch.setattr(backup, "_restore_files", restore_files)
        report = backup.restore(
            lumen, made.path, force=True, progress=False, maintenance_message="restoring"
        )
        assert report.clean and seen[0].message == "restoring"
        assert maintenance_mode.current(lumen.engine) is None
        assert len(photo_rows(restore_target)) == 1
    finally:
        lumen.engine.dispose()


def test_restore_refuses_a_storage_folder_that_is_not_empty(app, api, restore_target, tmp_path):
    from lumen import backup
    from lumen.app import Lumen
    from lumen.plugins import make_plugin_manager

    api.upload(api.user())
    made = backup.create(app.lumen, tmp_path / "b", progress=False)
    settings = load_settings(
        {"DATABASE_URL": restore_target, "STORAGE_PATH": app.lumen.storage.root.as_posix()}
    )
    lumen = Lumen(settings, make_plugin_manager([]))
    try:
        with pytest.raises(backup.BackupError, match="storage folder .* is not empty"):
            backup.restore(lumen, made.path, progress=False)
    finally:
        lumen.engine.dispose()


def test_libpq_environment_keeps_the_password_off_the_command_line():
    from sqlalchemy.engine import make_url

    from lumen.backup import libpq_environment

    url = make_url("postgresql+psycopg2://lumen:s3cret@db.internal:6432/photos")
    assert libpq_environment(url) == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGUSER": "lumen",
        "PGPASSWORD": "s3cret",
        "PGDATABASE": "photos",
    }
    socket = make_url("postgresql+psycopg2://u@/photos?host=/cloudsql/project:region:db")
    assert libpq_environment(socket)["PGHOST"] == "/cloudsql/project:region:db"


def test_maintenance_already_on_stays_on_after_a_backup(app, api, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lumen import maintenance_mode
    from lumen.cli import Context, cli

    maintenance_mode.switch_on(app.lumen.engine, "the operator's own")
    for name, value in app.lumen.settings.environ.items():
        monkeypatch.setenv(name, value)
    ran = CliRunner().invoke(
        cli, ["backup", "create", str(tmp_path / "b"), "--maintenance"], obj=Context()
    )
    assert ran.exit_code == 0, ran.output
    assert maintenance_mode.current(app.lumen.engine).message == "the operator's own"
    status = CliRunner().invoke(cli, ["maintenance", "status"], obj=Context())
    assert status.exit_code == 1 and "the operator's own" in status.output
    off = CliRunner().invoke(cli, ["maintenance", "off"], obj=Context())
    assert off.output == "maintenance mode off\n"
    again = CliRunner().invoke(cli, ["maintenance", "off"], obj=Context())
    assert again.output == "maintenance mode off (it was not on)\n"
