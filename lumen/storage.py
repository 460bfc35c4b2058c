"""Content-addressed files under STORAGE_PATH.

A file's path is derived from the sha256 of its bytes only, so a client can never choose a path,
and identical bytes are kept once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TooLarge(Exception):
    """The incoming file exceeds the byte limit it was received with."""


@dataclass
class Incoming:
    """A file received into a temporary place, not yet kept."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Storage:
    def __init__(self, root: str, max_gb: float):
        self.root = Path(root)
        self.max_bytes = int(max_gb * 1024**3)
        self._tmp = self.root / "tmp"

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def receive(self, stream: BinaryIO, max_bytes: int) -> Incoming:
        """Stream into a temporary file, hashing as it goes; never holds the file in memory."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge()
                    digest.update(chunk)
                    out.write(chunk)
                # On disk before the row that points at it can commit.
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(name)
            raise
        return Incoming(Path(name), digest.hexdigest(), size)

    def receive_bytes(self, data: bytes) -> Incoming:
        import io

        return self.receive(io.BytesIO(data), len(data))

    def keep(self, incoming: Incoming) -> bool:
        """Move a received file to its content address. Returns True when this call created
        the file (False when identical bytes were already kept)."""
        target = self.path_for(incoming.sha256)
        if target.exists():
            incoming.discard()
            os.utime(target)  # in use again: the storage check's grace period starts anew
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming.path, target)  # atomic: readers see the whole file or none
        return True

    def lock(self, *sha256s: str) -> Callable[[], None]:
        """Hold the locks of these files until the returned function is called.

        Keeping a file and deleting it take the same lock, so a file shared by several photos
        is never deleted while another request is about to point a new photo at it. The locks
        are striped by hash prefix and taken in sorted order (no deadlock); flock makes them
        hold across threads and the worker processes of one host.
        """
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        descriptors = []
        for stripe in sorted({sha[:2] for sha in sha256s}):
            fd = os.open(folder / stripe, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            descriptors.append(fd)

        def release() -> None:
            while descriptors:
                os.close(descriptors.pop())  # closing the descriptor drops its lock

        return release

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    # --- deletions held while a backup copies --------------------------------------------------
    #
    # A backup copies the files its database snapshot refers to; a photo deleted after the
    # snapshot must keep its files until they are copied. Removers take a shared lock of
    # ``locks/deletions`` without waiting; a backup holds it exclusively, so while it copies
    # every removal is deferred: recorded under ``deferred/`` and done once it has finished.

    def _deletions_lock(self) -> int:
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / "deletions", os.O_CREAT | os.O_RDWR, 0o600)

    def hold_deletions(self) -> Callable[[], None]:
        """Defer every removal of an unreferenced file until the returned function is called
        (waits for removals under way to finish)."""
        fd = self._deletions_lock()
        fcntl.flock(fd, fcntl.LOCK_EX)
        return lambda: os.close(fd)

    def delete_unreferenced(self, sha256: str) -> bool:
        """Delete a file no photo refers to any more, or defer it while a backup holds
        deletions. Returns whether the file was deleted (callers hold the file's lock)."""
        fd = self._deletions_lock()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                deferred = self.root / "deferred"
                deferred.mkdir(exist_ok=True)
                (deferred / self.path_for(sha256).name).touch()
                return False
            self.delete(sha256)
            self.forget_deferred(sha256)
            return True
        finally:
            os.close(fd)

    def deferred(self) -> set[str]:
        """The files whose removal a backup deferred."""
        folder = self.root / "deferred"
        names = (p.name for p in folder.iterdir()) if folder.is_dir() else ()
        return {name for name in names if _SHA256.match(name)}

    def forget_deferred(self, sha256: str) -> None:
        (self.root / "deferred" / self.path_for(sha256).name).unlink(missing_ok=True)

    def files(self) -> Iterator[Path]:
        """Every file in the content-addressed tree (for the storage check)."""
        if self.root.is_dir():
            yield from (p for p in self.root.glob("??/??/*") if p.is_file())

    def free_bytes(self) -> int:
        probe = self.root if self.root.exists() else self.root.parent
        return shutil.disk_usage(probe).free
