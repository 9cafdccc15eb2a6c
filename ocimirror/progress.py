"""Progress of fetches as in-process events.

Flows publish; whoever shows progress subscribes: the Prefect progress artifact, the CLI's rich bars. The
core stays ignorant of both, and a fetch with no subscriber costs one lock per event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """How far the fetch of ``reference`` has got. Totals grow as the tree is discovered level by level."""

    reference: str
    blobs_done: int
    blobs_total: int
    bytes_done: int
    bytes_total: int
    finished: bool = False


Subscriber = Callable[[Progress], None]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call ``subscriber`` with every Progress published from now on; returns the unsubscribe function."""
    with _lock:
        _subscribers.append(subscriber)

    def unsubscribe() -> None:
        with _lock:
            if subscriber in _subscribers:
                _subscribers.remove(subscriber)

    return unsubscribe


def publish(progress: Progress) -> None:
    """Deliver ``progress`` to every subscriber; a failing subscriber never breaks a fetch."""
    with _lock:
        subscribers = list(_subscribers)
    for subscriber in subscribers:
        try:
            subscriber(progress)
        except Exception:
            log.exception("progress subscriber %r failed", subscriber)
