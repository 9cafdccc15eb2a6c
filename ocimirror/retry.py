"""How failed work is tried again, in one place for both ways of running it.

Transient failures (``ocimirror.errors.is_transient``: 5xx, 429, resets, timeouts) are retried a few times
with exponential backoff and jitter; permanent ones (404, refused credentials, a digest served wrong twice)
never are, since they only delay the report. The Prefect tasks hand these numbers to Prefect's own retries
(``tasks.policy``), so they show in the UI; the in-process engine uses :func:`call_with_retries`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Attempts after the first.
RETRIES = 3
#: Delay before retry ``n`` (0-based) is ``BACKOFF_SECONDS * 2**n``, stretched by up to ``JITTER``.
BACKOFF_SECONDS = 1.0
JITTER = 0.5


def retry_delays() -> list[float]:
    """The base delay before each retry, without jitter."""
    return [BACKOFF_SECONDS * 2**attempt for attempt in range(RETRIES)]


def call_with_retries(work: Callable[[], T], what: str) -> T:
    """``work()``, tried again after each transient failure while retries are left; logged, so a retry
    that succeeds is still visible."""
    for attempt, delay in enumerate([*retry_delays(), None]):
        try:
            return work()
        except Exception as error:
            if delay is None or not is_transient(error):
                raise
            pause = delay * (1 + random.uniform(0, JITTER))
            log.warning("%s: %s (%s); retry %d of %d in %.1f s", what, type(error).__name__, error, attempt + 1,
                        RETRIES, pause)  # fmt: skip
            time.sleep(pause)
    raise AssertionError("unreachable")
