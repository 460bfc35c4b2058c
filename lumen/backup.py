"""Backups: one consistent snapshot of the database and the image files, taken while the
service runs, and its verification and restore.

A snapshot is a folder ``DEST/<UTC time>`` holding the database (``database.pgdump``, from
``pg_dump`` in the custom format, or ``database.sqlite3``, from SQLite's online backup API),
``files/`` (the image files it refers to, content-addressed like the storage) and
``manifest.json`` (every file's sha256 and size, the database file's sha256). It is written
under ``DEST/.partial-<time>`` and renamed when complete, so a snapshot that exists is whole.

Consistency: files are content-addressed and never overwritten, and a photo's files are
removed only after the deleting transaction committed. So the database is snapshotted first,
then the files its rows refer to are copied, while the storage holds every removal of a file
(``Storage.hold_deletions``): a photo deleted meanwhile keeps its files until they are copied.
Uploads meanwhile add files the snapshot does not refer to, and are not copied.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL
from tqdm import tqdm

from lumen import __version__, maintenance_mode, migrate
from lumen.maintenance import StorageReport, check_storage, file_sha256
from lumen.photos import remove_unreferenced

MANIFEST = "manifest.json"
FORMAT = 1
PARTIAL = ".partial-"
PG_DUMP = "database.pgdump"
SQLITE_COPY = "database.sqlite3"
_PHOTO_FILES = "SELECT sha256, thumb_sha256, public_sha256 FROM photos"


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why."""


@dataclass
class Snapshot:
    path: Path
    photos: int
    files: int
    new_files: int  # copied (or linked) from the storage: the last snapshot lacked them
    reused_files: int  # linked from the last snapshot
    bytes: int
    pruned: list[Path] = field(default_factory=list)


# --- snapshots in a destination ------------------------------------------------------------------


def snapshots(dest: str | os.PathLike) -> list[Path]:
    """The complete snapshots in ``dest``, oldest first."""
    root = Path(dest)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name)


def resolve(source: str | os.PathLike) -> Path:
    """A snapshot folder, or a destination's newest snapshot."""
    path = Path(source)
    if (path / MANIFEST).is_file():
        return path
    found = snapshots(path)
    if not found:
        raise BackupError(f"{path}: no snapshot here")
    return found[-1]


def load_manifest(snapshot: Path) -> dict:
    try:
        manifest = json.loads((snapshot / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{snapshot}: unreadable manifest: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{snapshot}: unknown manifest format {manifest.get('format')!r}")
    return manifest


def file_path(snapshot: Path, sha256: str) -> Path:
    return snapshot / "files" / sha256[:2] / sha256[2:4] / sha256


def prune(dest: str | os.PathLike, keep: int) -> list[Path]:
    """Remove the oldest snapshots, keeping the newest ``keep``; returns those removed. Files
    shared with a kept snapshot by a hard link stay there."""
    found = snapshots(dest)
    removed = found[: max(len(found) - keep, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed


# --- create --------------------------------------------------------------------------------------


def create(lumen, dest: str | os.PathLike, keep: int | None = None, progress=True) -> Snapshot:
    """Take one snapshot of the database and the files into ``dest``; with ``keep``, remove
    the oldest snapshots beyond that many afterwards."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    previous = snapshots(root)
    last = previous[-1] if previous else None
    last_files = load_manifest(last)["files"] if last is not None else {}
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    work = root / f"{PARTIAL}{name}"
    work.mkdir()
    try:
        release = lumen.storage.hold_deletions()
        try:
            database, shas = _snapshot_database(lumen, work)
            files, new, reused = _copy_files(lumen.storage, shas, work, last, last_files, progress)
        finally:
            release()
        photos = database.pop("photos")
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "lumen": __version__,
            "database": database,
            "photos": photos,
            "files": files,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        final = root / name
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        # The removals deferred while the files were copied.
        remove_unreferenced(lumen, lumen.storage.deferred())
    snapshot = Snapshot(final, manifest["photos"], len(files), new, reused, sum(files.values()))
    if keep is not None:
        snapshot.pruned = prune(root, keep)
    return snapshot


def _snapshot_database(lumen, work: Path) -> tuple[dict, set[str]]:
    """Dump the database; returns what the manifest says of it and the sha256 of every file
    the dump's photos refer to, read from the very same snapshot."""
    dialect = lumen.engine.dialect.name
    if dialect == "postgresql":
        info, rows = _pg_dump(lumen, work / PG_DUMP)
    elif dialect == "sqlite":
        info, rows = _sqlite_copy(lumen, work / SQLITE_COPY)
    else:
        raise BackupError(f"cannot back up a {dialect} database")
    shas = {sha for row in rows for sha in row if sha is not None}
    info.update(dialect=dialect, sha256=file_sha256(work / info["file"]), photos=len(rows))
    return info, shas


def _pg_dump(lumen, target: Path) -> tuple[dict, list]:
    # pg_dump runs in the snapshot this transaction exports, so the rows read here are those
    # of the dump. The maintenance flag's rows are left out: a restore never starts in it.
    connection = lumen.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connection, connection.begin():
        snapshot_id = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        rows = connection.execute(text(_PHOTO_FILES)).all()
        revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        revisions = sorted(revisions)
        _run(
            ["pg_dump", "--format=custom", f"--snapshot={snapshot_id}", f"--file={target}"]
            + ["--exclude-table-data=maintenance"],
            lumen.engine.url,
        )
    return {"file": target.name, "revisions": revisions}, rows


def _sqlite_copy(lumen, target: Path) -> tuple[dict, list]:
    source = sqlite3.connect(_sqlite_path(lumen.engine.url))
    copy = sqlite3.connect(target)
    try:
        with source:
            source.backup(copy)
        tables = {r[0] for r in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "maintenance" in tables:
            with copy:
                copy.execute("DELETE FROM maintenance")
        rows = copy.execute(_PHOTO_FILES).fetchall()
        revisions = sorted(r[0] for r in copy.execute("SELECT version_num FROM alembic_version"))
    finally:
        source.close()
        copy.close()
    return {"file": target.name, "revisions": revisions}, rows


def _copy_files(storage, shas, work: Path, last: Path | None, last_files: dict, progress):
    """Copy (or hard-link) each file into the snapshot, checking its sha256. A file the last
    snapshot has is linked from there; others come from the storage."""
    files, new, reused, missing = {}, 0, 0, []
    same_device = None
    for sha in tqdm(sorted(shas), desc="files", unit="file", disable=_quiet(progress)):
        target = file_path(work, sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        if last is not None and sha in last_files and _link(file_path(last, sha), target):
            files[sha], reused = last_files[sha], reused + 1
            continue
        source = storage.path_for(sha)
        if not source.is_file():
            missing.append(sha)
            continue
        if same_device is None:
            same_device = source.stat().st_dev == work.stat().st_dev
        if not (same_device and _link(source, target)):
            shutil.copyfile(source, target)
        if file_sha256(target) != sha:
            raise BackupError(
                f"file {sha} is corrupt in the storage (`lumen storage check --verify`)"
            )
        files[sha], new = target.stat().st_size, new + 1
    if missing:
        raise BackupError(
            f"{len(missing)} files the database refers to are missing from the storage, "
            f"e.g. {missing[0]} (`lumen storage check`)"
        )
    return files, new, reused


def _quiet(progress: bool) -> bool | None:
    # tqdm's None: a bar on a terminal only.
    return None if progress else True


def _link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


# --- verify --------------------------------------------------------------------------------------


def verify(source: str | os.PathLike, progress=True) -> tuple[Path, list[str]]:
    """Check a snapshot's files against its manifest; returns the snapshot and its problems
    (none: it is whole)."""
    snapshot = resolve(source)
    manifest = load_manifest(snapshot)
    problems = []
    database = snapshot / manifest["database"]["file"]
    if not database.is_file():
        problems.append(f"database file {database.name} is missing")
    elif file_sha256(database) != manifest["database"]["sha256"]:
        problems.append(f"database file {database.name} is corrupt")
    for sha, size in tqdm(
        sorted(manifest["files"].items()), desc="verifying", unit="file", disable=_quiet(progress)
    ):
        path = file_path(snapshot, sha)
        if not path.is_file():
            problems.append(f"file {sha} is missing")
        elif path.stat().st_size != size or file_sha256(path) != sha:
            problems.append(f"file {sha} is corrupt")
    return snapshot, problems


# --- restore -------------------------------------------------------------------------------------


def restore(
    lumen, source: str | os.PathLike, force=False, progress=True, maintenance_message=None
) -> StorageReport:
    """Restore a snapshot into the configured database and storage, which must be empty
    unless ``force``; ends with the storage check (files re-hashed) of what was restored.
    With ``maintenance_message``, writes are refused while it runs: from the start when the
    database has the flag's table, and in the restored database until the end."""
    snapshot, problems = verify(source, progress)
    if problems:
        raise BackupError(f"{snapshot}: {problems[0]} (and {len(problems) - 1} more problems)")
    manifest = load_manifest(snapshot)
    dialect = manifest["database"]["dialect"]
    if dialect != lumen.engine.dialect.name:
        raise BackupError(
            f"the snapshot is of a {dialect} database, DATABASE_URL names "
            f"a {lumen.engine.dialect.name} one"
        )
    tables = inspect(lumen.engine).get_table_names()
    if tables and not force:
        raise BackupError(
            f"the database is not empty ({len(tables)} tables): restore into an empty one, "
            "or pass --force to replace it"
        )
    if any(lumen.storage.files()) and not force:
        raise BackupError(
            f"the storage folder {lumen.storage.root} is not empty: restore into an empty one, "
            "or pass --force to add the snapshot's files to it"
        )

    def refuse_writes() -> None:
        if maintenance_message is not None and _has_flag(lumen):
            maintenance_mode.switch_on(lumen.engine, maintenance_message)

    refuse_writes()
    try:
        database = snapshot / manifest["database"]["file"]
        if dialect == "postgresql":
            _pg_restore(lumen, database, replace=bool(tables))
        else:
            _sqlite_restore(lumen, database)
        refuse_writes()  # the restored database holds no flag
        heads = migrate.current(lumen)
        if heads != set(manifest["database"]["revisions"]):
            raise BackupError(f"the restored database is at {sorted(heads)}, not the snapshot's")
        _restore_files(lumen.storage, snapshot, manifest["files"], progress)
        return check_storage(lumen, verify=True, progress=progress)
    finally:
        if maintenance_message is not None and _has_flag(lumen):
            maintenance_mode.switch_off(lumen.engine)


def _has_flag(lumen) -> bool:
    return "maintenance" in inspect(lumen.engine).get_table_names()


def _pg_restore(lumen, dump: Path, replace: bool) -> None:
    if replace:
        with lumen.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    lumen.engine.dispose()
    _run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        + [str(dump)],
        lumen.engine.url,
        database_option=True,
    )


def _sqlite_restore(lumen, copy: Path) -> None:
    lumen.engine.dispose()
    source = sqlite3.connect(copy)
    target = sqlite3.connect(_sqlite_path(lumen.engine.url))
    try:
        source.backup(target)  # replaces the whole database, page by page
    finally:
        source.close()
        target.close()


def _restore_files(storage, snapshot: Path, files: dict, progress) -> None:
    tmp = storage.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for sha in tqdm(sorted(files), desc="files", unit="file", disable=_quiet(progress)):
        target = storage.path_for(sha)
        if target.is_file() and file_sha256(target) == sha:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        incoming = tmp / f"restore-{sha}"
        shutil.copyfile(file_path(snapshot, sha), incoming)
        os.replace(incoming, target)


# --- the database's client tools -----------------------------------------------------------------


def _sqlite_path(url: URL) -> str:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return url.database


def libpq_environment(url: URL) -> dict[str, str]:
    """The connection of a SQLAlchemy URL as libpq variables: the password never appears in
    a command line other processes can read."""
    values = {
        "PGHOST": url.query.get("host") or url.host,
        "PGPORT": url.port,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    return {name: str(value) for name, value in values.items() if value}


def _run(argv: list[str], url: URL, database_option: bool = False) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(libpq_environment(url))
    if database_option:
        argv = [*argv[:1], f"--dbname={env.get('PGDATABASE', '')}", *argv[1:]]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} not found: install the PostgreSQL client tools") from None
    if done.returncode != 0:
        raise BackupError(f"{argv[0]} failed: {done.stderr.strip()}")
