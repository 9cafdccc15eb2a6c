"""Waiting for a lock file held by another process: say what is waited for, and give up in time.

Store locks on local disk are flocks (``filelock``), held only by live processes: the kernel drops them
when the holder dies. A live holder can still be stuck (stopped with SIGSTOP, hung on a dead NFS server, a
debugger at a breakpoint), and a writer waiting on it silently looks hung too. So a wait longer than
``WAIT_NOTICE_SECONDS`` is logged with the lock file's path, and a wait with a ``timeout`` ends with a
``StoreError`` naming the lock.

``index.json`` is only ever held for one read-modify-write (milliseconds), so its waits are bounded by
``index_lock_timeout()``: ``OCIMIRROR_LOCK_TIMEOUT`` seconds, 120 by default. The lock of an ingest is held
for a whole blob transfer, which may rightly take an hour: those waits are logged but not bounded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import Timeout, UnixFileLock

from ..errors import ConfigError, StoreError

log = logging.getLogger(__name__)

#: The environment variable bounding waits for the ``index.json`` lock, in seconds.
LOCK_TIMEOUT_ENV = "OCIMIRROR_LOCK_TIMEOUT"
#: Two minutes: a thousand times the longest index update seen, short enough for a person to notice.
DEFAULT_LOCK_TIMEOUT = 120.0
#: How long a wait stays silent before it is logged.
WAIT_NOTICE_SECONDS = 3.0


def index_lock_timeout() -> float:
    """Seconds to wait for the ``index.json`` lock: ``$OCIMIRROR_LOCK_TIMEOUT`` or 120."""
    value = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # also refuses NaN
        raise ConfigError(f"{LOCK_TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


@contextmanager
def wait_for_lock(path: str, timeout: float | None = None, blocking: bool = True) -> Iterator[None]:
    """Hold the flock on ``path``; after ``WAIT_NOTICE_SECONDS`` of waiting log which lock is waited for,
    and after ``timeout`` seconds (``None``: no bound) raise ``StoreError`` naming it. Without ``blocking``
    a lock held elsewhere raises ``filelock.Timeout`` at once (for callers that skip what is in use)."""
    lock = UnixFileLock(path, thread_local=False, fallback_to_soft=False, blocking=blocking)
    started = time.monotonic()
    if not blocking:
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    first = WAIT_NOTICE_SECONDS if timeout is None else min(WAIT_NOTICE_SECONDS, timeout)
    try:
        lock.acquire(timeout=first)
    except Timeout:
        bound = "" if timeout is None else f" (giving up after {timeout:g} s; {LOCK_TIMEOUT_ENV} sets this)"
        log.warning("waiting for the lock %s, held by another process%s", path, bound)
        remaining = -1.0 if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        try:
            lock.acquire(timeout=remaining)
        except Timeout:
            raise StoreError(
                f"gave up after {timeout:g} s waiting for the lock {path}, held by another process "
                f"(a stuck writer? it is released when that process ends; {LOCK_TIMEOUT_ENV} sets the wait)"
            ) from None
        log.info("got the lock %s after %.1f s", path, time.monotonic() - started)
    try:
        yield
    finally:
        lock.release()
