"""The engine's Runner on Prefect: each unit of work is a task run on the flow's task runner.

Small blobs are batched, since a task run costs ~25 ms of wall time on a 2-core machine with the server
recording it, while a 16 KiB blob takes ~5 ms to fetch: below ``SINGLE_FROM`` bytes a blob shares a task
run with others (``MIN_COUNT`` to ``MAX_COUNT`` blobs, at most ``MAX_BYTES``). Measured with
``bench/compare_skopeo.py``: see bench/README.md.
"""

from __future__ import annotations

from typing import Any

from prefect.futures import PrefectFuture

from ocimirror.mirror import Batching, Done, FetchUnit
from ocimirror.plan import PlannedImage

from .clients import Target
from .fetch import fetch_unit, tag_planned

#: Blobs from this size on get a task run of their own.
SINGLE_FROM = 1024 * 1024
#: A batch takes at least this many blobs when they are waiting, at most ``MAX_COUNT`` and ``MAX_BYTES``.
MIN_COUNT = 8
MAX_COUNT = 32
MAX_BYTES = 4 * 1024 * 1024


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

    def fetch(self, unit: FetchUnit, done: Done) -> None:
        fetch_unit.submit(unit, self._target).add_done_callback(_report(done))

    def tag(self, image: PlannedImage, done: Done) -> None:
        tag_planned.submit(image, self._target).add_done_callback(_report(done))
