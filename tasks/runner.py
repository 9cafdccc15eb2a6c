"""The engine's Runner on Prefect: each fetch is a task run on the flow's task runner.

A task run costs ~25 ms of wall time on a 2-core machine, and about as much CPU again in the server that
records it, while a 4 MiB blob arrives in ~7 ms over a fast link: below ``SINGLE_FROM`` bytes a blob shares
a task run with others (``MIN_COUNT`` to ``MAX_COUNT`` blobs, at most ``MAX_BYTES``); manifests, indexes
and larger layers get one each. Tagging is one index.json update: it runs in this process with the core's
retry policy rather than as a task run. Measured with ``bench/sync_set.py``: see bench/README.md.
"""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectFuture

from ocimirror.plan import PlannedImage
from ocimirror.work import Batching, Done, FetchUnit, LocalRunner

from .clients import Target
from .fetch import fetch_unit

#: Blobs from this size on get a task run of their own.
SINGLE_FROM = 16 * 1024 * 1024
#: A batch takes at least this many blobs when they are waiting, at most ``MAX_COUNT`` and ``MAX_BYTES``.
MIN_COUNT = 8
MAX_COUNT = 32
MAX_BYTES = 64 * 1024 * 1024
#: Threads that write tags (index.json updates are serialised by the store anyway).
TAG_WORKERS = 2


def _report(done: Done) -> Any:
    """A Prefect done-callback handing the task's result, or the exception it ended with, to ``done``."""

    def callback(future: PrefectFuture[Any]) -> None:
        try:
            outcome: object = future.result()
        except BaseException as error:  # noqa: BLE001 - the engine reports it against the unit
            outcome = error
        done(outcome)

    return callback


class PrefectRunner:
    """Submits the engine's units of work as task runs of the running flow."""

    batching = Batching(single_from=SINGLE_FROM, min_count=MIN_COUNT, max_count=MAX_COUNT, max_bytes=MAX_BYTES)

    def __init__(self, target: Target) -> None:
        self._target = target
        self._local = LocalRunner(target.registry().fetcher, target.open_store(), TAG_WORKERS)

    def fetch(self, unit: FetchUnit, done: Done) -> None:
        fetch_unit.submit(unit, self._target).add_done_callback(_report(done))

    def tag(self, image: PlannedImage, done: Done) -> None:
        self._local.tag(image, done)

    def close(self) -> None:
        self._local.close()
