"""The local-disk backend: flock-based locks that work across threads and processes, durable renames, and
no symbolic link followed below the store root.

A store on local disk may be shared with people who can write into it but are not trusted with the rest of
the machine. Whatever they plant under the root (a link at ``ingest/<key>/data``, ``ingest`` or
``blobs/sha256`` pointing elsewhere, a FIFO as ``status.json``) must never make a writer follow it: files are
opened with ``O_NOFOLLOW`` (and created with ``O_EXCL``), checked to be regular files with ``fstat``, and every
directory between the root and a file written is checked with ``lstat`` to be a real directory. The root
itself is the user's choice and may be a link.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

from filelock import Timeout

from ..errors import StoreError
from .backend import AbandonedIngest
from .ingest import IngestBackend
from .locks import wait_for_lock

#: Opening never follows a link at the last component, and never blocks on a FIFO or device planted there.
_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK


def _fsync_directory(path: str) -> None:
    """Make a rename in ``path`` durable: on POSIX the directory entry is only safe once its directory is."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _open_regular(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses links and anything but a regular file, with one ``StoreError`` for both."""
    try:
        descriptor = os.open(path, flags | _NO_FOLLOW, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symbolic link: refusing to follow it") from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise StoreError(f"{path} is not a regular file")
    os.set_blocking(descriptor, True)
    return descriptor


class LocalBackend(IngestBackend):
    """A store on a local filesystem (``/path``, ``file://``)."""

    def _real_parents(self, path: str, create: bool) -> bool:
        """Check that every directory between the root and ``path`` is a real directory, not a link;
        ``create`` makes missing ones. Returns ``False`` if one is missing (and not created); raises
        ``StoreError`` naming the first one that is a link or not a directory."""
        relative = posixpath.relpath(posixpath.dirname(path), self.root)
        if relative.startswith(".."):
            raise StoreError(f"{path} is outside the store {self.root}")
        current = self.root
        for part in [] if relative == "." else relative.split("/"):
            current = posixpath.join(current, part)
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if not create:
                    return False
                with suppress(FileExistsError):
                    os.mkdir(current)
                mode = os.lstat(current).st_mode
            if not stat.S_ISDIR(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
                raise StoreError(f"{current} is {kind}: refusing to write through it")
        return True

    def read_small(self, path: str, limit: int) -> bytes | None:
        """The regular file ``path``, if it and its directories are not links and it is at most ``limit``."""
        try:
            if not self._real_parents(path, create=False):
                return None
            descriptor = _open_regular(path, os.O_RDONLY)
        except (StoreError, FileNotFoundError):
            return None
        with os.fdopen(descriptor, "rb") as file:
            content = file.read(limit + 1)
        return content if len(content) <= limit else None

    def write_small(self, path: str, content: bytes) -> None:
        """Overwrite the regular file ``path`` (or create it), never through a link."""
        self._real_parents(path, create=True)
        with os.fdopen(_open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as file:
            file.write(content)

    def open_data(self, path: str, fresh: bool) -> BinaryIO:
        """Open for appending with ``O_NOFOLLOW``; ``fresh`` creates with ``O_EXCL``, so nothing planted is
        reused."""
        self._real_parents(path, create=fresh)
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if fresh else 0)
        try:
            return os.fdopen(_open_regular(path, flags), "ab")
        except FileNotFoundError:
            raise StoreError(f"{path} is gone") from None

    def make_directory(self, path: str) -> None:
        """Create ``path`` and its parents as real directories (``StoreError`` if a link is in the way)."""
        self._real_parents(posixpath.join(path, "."), create=True)
        with suppress(FileExistsError):
            os.mkdir(path)
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise StoreError(f"{path} is not a directory: refusing to write through it")

    def remove_directory(self, path: str) -> None:
        """Remove ``path``: a link or file there is unlinked (its target untouched), a directory is removed
        with everything under it (``shutil.rmtree`` does not follow the links inside)."""
        if not self._real_parents(path, create=False):
            return
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        with suppress(FileNotFoundError):
            if stat.S_ISDIR(mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)

    @contextmanager
    def lock(self, path: str, timeout: float | None = None, blocking: bool = True) -> Iterator[None]:
        """Hold an flock on the file ``path``, created on demand and removed before release.

        Removing the lock file while still holding it is the last step of every critical section, so no lock
        files are left behind; a waiter that then wins the flock on the removed inode sees it unlinked and
        tries again on a fresh file (filelock checks ``st_nlink``). The kernel drops the flock if the process
        dies. Soft (existence) locking is refused: removing its marker would hand the lock to two holders.
        A lock held by another process is waited for as ``wait_for_lock`` says (logged, bounded); without
        ``blocking``, it raises ``filelock.Timeout`` at once.
        """
        self._real_parents(path, create=True)
        with wait_for_lock(path, timeout, blocking):
            try:
                yield
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(path)

    def publish(self, source: str, target: str) -> None:
        """fsync ``source``, rename it over ``target``, fsync the directory: durable and all-or-nothing.

        ``source`` must be a regular file (a link is never committed) and the target's directories real
        ones; a link already at ``target`` is replaced, not followed.
        """
        self._real_parents(source, create=False)
        self._real_parents(target, create=True)
        with os.fdopen(_open_regular(source, os.O_RDONLY), "rb") as file:
            os.fsync(file.fileno())
        os.replace(source, target)
        _fsync_directory(os.path.dirname(target))

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
