"""The in-memory backend (``memory://``): the local rules with in-process locks, for tests and demos."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from fsspec import AbstractFileSystem

from ..errors import StoreError
from .ingest import IngestBackend


class _NamedLocks:
    """Locks created on first use and dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[int, str], tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: tuple[int, str], timeout: float | None = None) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=-1 if timeout is None else timeout):
                raise StoreError(f"gave up after {timeout:g} s waiting for the lock {name[1]}")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


#: One registry per process: every MemoryFileSystem sharing a store dict must meet at the same locks.
_LOCKS = _NamedLocks()


class MemoryBackend(IngestBackend):
    """A store in fsspec's ``MemoryFileSystem``; visible to this process only."""

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        super().__init__(fs, root)
        # Instances created with global_store=False have their own dict, so their own lock names.
        self._namespace = id(getattr(fs, "store", fs))

    def lock(self, path: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """A ``threading.Lock`` per path (releasable from another thread, unlike ``RLock``)."""
        return _LOCKS.hold((self._namespace, path), timeout)

    def publish(self, source: str, target: str) -> None:
        """Copy then remove: the copy replaces ``target`` in one dict assignment, so readers see it whole."""
        self.fs.cp_file(source, target)
        self.fs.rm_file(source)
