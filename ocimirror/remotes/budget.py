"""A per-registry request budget: how many requests a second, and how many transfers at once, one registry
gets from us.

Registries limit pulls (Docker Hub counts manifest requests per account and per address; ghcr.io and quay.io
answer 429 beyond their rate). Retrying after a 429 keeps one process polite; a fleet of workers needs one
budget they all draw from. The registry client only knows the :class:`RequestBudget` protocol: before every
request it calls :meth:`~RequestBudget.request`, and around every transfer (a manifest or blob from the
first byte asked for to the last byte read, a resolve, one page of a listing) it holds
:meth:`~RequestBudget.fetch`. Both are asked only for hosts whose settings name a limit. This module gives
the budget of one process (:class:`LocalBudget`, threads); the Prefect tasks give one shared by every worker
of a fleet (``tasks.budget``), behind the same protocol.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol


class RequestBudget(Protocol):
    """Admits requests to registry hosts; ``host`` is the registry's settings key (``docker.io``)."""

    def request(self, host: str, per_second: float) -> None:
        """Return once one more request to ``host`` fits in ``per_second`` (blocks until it does)."""
        ...

    def fetch(self, host: str, parallel: int) -> AbstractContextManager[None]:
        """Hold one of ``host``'s ``parallel`` transfer slots for the block (waits for a free one)."""
        ...


class Unlimited:
    """No budget: every request goes at once."""

    def request(self, host: str, per_second: float) -> None:
        return None

    def fetch(self, host: str, parallel: int) -> AbstractContextManager[None]:
        return nullcontext()


class _TokenBucket:
    """``rate`` requests a second on average, bursts of at most ``max(1, rate)``."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token; the seconds to wait before using it (0 when one was there)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class LocalBudget:
    """The budget of one process: a token bucket and a semaphore per host, created on first use.

    What a sync without Prefect uses; several processes each get their own, so a fleet needs the shared one.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, float], _TokenBucket] = {}
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def request(self, host: str, per_second: float) -> None:
        with self._lock:
            bucket = self._buckets.get((host, per_second))
            if bucket is None:
                bucket = self._buckets[host, per_second] = _TokenBucket(per_second, self._clock)
        wait = bucket.take()
        if wait > 0:
            self._sleep(wait)

    def fetch(self, host: str, parallel: int) -> AbstractContextManager[None]:
        with self._lock:
            slots = self._slots.get((host, parallel))
            if slots is None:
                slots = self._slots[host, parallel] = threading.BoundedSemaphore(parallel)
        return _held(slots)


@contextmanager
def _held(slots: threading.BoundedSemaphore) -> Iterator[None]:
    with slots:
        yield
