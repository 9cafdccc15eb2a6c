"""The local-disk backend: flock-based locks that work across threads and processes, and durable renames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from filelock import Timeout, UnixFileLock

from .backend import AbandonedIngest
from .ingest import IngestBackend


def _fsync_directory(path: str) -> None:
    """Make a rename in ``path`` durable: on POSIX the directory entry is only safe once its directory is."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalBackend(IngestBackend):
    """A store on a local filesystem (``/path``, ``file://``)."""

    @contextmanager
    def lock(self, path: str, blocking: bool = True) -> Iterator[None]:
        """Hold an flock on the file ``path``, created on demand and removed before release.

        Removing the lock file while still holding it is the last step of every critical section, so no lock
        files are left behind; a waiter that then wins the flock on the removed inode sees it unlinked and
        tries again on a fresh file (filelock checks ``st_nlink``). The kernel drops the flock if the process
        dies. Soft (existence) locking is refused: removing its marker would hand the lock to two holders.
        Without ``blocking``, a lock held elsewhere raises ``filelock.Timeout`` at once.
        """
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with UnixFileLock(path, thread_local=False, fallback_to_soft=False, blocking=blocking):
            try:
                yield
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(path)

    def publish(self, source: str, target: str) -> None:
        """fsync ``source``, rename it over ``target``, fsync the directory: durable and all-or-nothing."""
        with open(source, "rb") as file:
            os.fsync(file.fileno())
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        os.replace(source, target)
        _fsync_directory(directory)

    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        """Remove an abandoned ingest under its own lock, taken without waiting: an ingest whose lock is
        held has a live writer, however old its files look, and is left alone."""
        if ingest.path.endswith(".tmp"):
            return super().remove_ingest(ingest)
        lock = ingest.path if ingest.path.endswith(".lock") else f"{ingest.path}.lock"
        try:
            with self.lock(lock, blocking=False):  # leaving the lock removes its file
                return super().remove_ingest(ingest)
        except Timeout:
            return False
