"""Watching transfers in flight: bytes as they stream, for progress, and a stop switch, for cancellation.

Whoever runs fetches (the in-process engine, or Prefect task runs in worker threads of the same process)
wraps its Fetcher with :func:`watched`. Whoever waits on them registers a :class:`Watcher` for the digests
it cares about. The registry between the two is by digest, so nothing that cannot be serialised has to
travel through a Prefect task's parameters. A watcher that stops makes every chunk of its digests raise
:class:`TransferCancelled`: threads stop within one chunk and the ingest stays resumable.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable
from contextlib import closing
from typing import Protocol

from .content import Fetcher
from .descriptor import Descriptor
from .errors import OcimirrorError


class TransferCancelled(OcimirrorError):
    """The run that wanted this content was cancelled; what was written so far stays resumable."""


class Watcher(Protocol):
    """Told about bytes of the digests it watches; ``stopped`` ends their transfers."""

    @property
    def stopped(self) -> bool: ...

    def transferred(self, digest: str, size: int) -> None: ...


_lock = threading.Lock()
_watchers: dict[str, list[Watcher]] = {}


def watch(watcher: Watcher, digests: Iterable[str]) -> None:
    """Report the transfers of ``digests`` to ``watcher`` until :func:`unwatch`."""
    with _lock:
        for digest in digests:
            _watchers.setdefault(digest, []).append(watcher)


def unwatch(watcher: Watcher) -> None:
    """Forget ``watcher`` everywhere."""
    with _lock:
        for digest in list(_watchers):
            remaining = [w for w in _watchers[digest] if w is not watcher]
            if remaining:
                _watchers[digest] = remaining
            else:
                del _watchers[digest]


def _report(digest: str, size: int) -> None:
    with _lock:
        watchers = list(_watchers.get(digest, ()))
    if watchers and all(w.stopped for w in watchers):
        raise TransferCancelled(f"{digest}: transfer cancelled")
    for watcher in watchers:
        watcher.transferred(digest, size)


class _WatchedFetcher:
    """A Fetcher that reports every chunk it passes on, and stops when every watcher of the digest has."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Generator[bytes, None, None]:
        _report(descriptor.digest, 0)  # a cancelled run starts no new transfer
        with closing(self._fetcher.fetch(descriptor, offset)) as chunks:
            for chunk in chunks:
                _report(descriptor.digest, len(chunk))
                yield chunk


def watched(fetcher: Fetcher) -> Fetcher:
    """``fetcher``, with its transfers reported to the watchers of their digests."""
    return _WatchedFetcher(fetcher)
