"""The registry request budget of a whole fleet: Prefect global concurrency limits keyed by registry host.

Every worker's registry client draws from the same limits on the Prefect server, so ``max_parallel_fetches``
and ``max_requests_per_second`` hold for the sync as a whole, however many workers run its images. Limits are
named ``ocimirror-registry-<host>-fetches`` (a limit of N slots, held per transfer) and
``ocimirror-registry-<host>-requests`` (a rate limit: N slots that decay at N a second, one taken per
request), created or updated on first use in each process from the mirror config's values, so changing the
config changes the limit.

A fetch slot is held under a lease the worker renews; a worker killed while holding one gives it back when
the lease runs out (``FETCH_LEASE_SECONDS``), not at once.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from contextlib import AbstractContextManager

from prefect import get_client
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.exceptions import ObjectAlreadyExists

#: How long a fetch slot outlives a worker that died holding it; renewed while the worker lives. The
#: server's shortest lease.
FETCH_LEASE_SECONDS = 60.0


def registry_limit_name(host: str, kind: str) -> str:
    """``ocimirror-registry-<host>-<kind>``: readable, safe as a limit name, one per host whatever its case."""
    readable = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")[-40:]
    return f"ocimirror-registry-{readable}-{hashlib.sha256(host.lower().encode()).hexdigest()[:8]}-{kind}"


class PrefectBudget:
    """A :class:`~ocimirror.remotes.budget.RequestBudget` over Prefect global concurrency limits."""

    def __init__(self) -> None:
        self._upserted: set[tuple[str, int, float | None]] = set()
        self._lock = threading.Lock()

    def _ensure(self, name: str, limit: int, decay: float | None = None) -> None:
        """Create or update the limit ``name`` once per process and value."""
        key = (name, limit, decay)
        with self._lock:
            if key in self._upserted:
                return
            with get_client(sync_client=True) as client:
                try:
                    client.upsert_global_concurrency_limit_by_name(name, limit=limit, slot_decay_per_second=decay)
                except ObjectAlreadyExists:
                    # Another worker created it between our read and our create: now it is there to update.
                    client.upsert_global_concurrency_limit_by_name(name, limit=limit, slot_decay_per_second=decay)
            self._upserted.add(key)

    def request(self, host: str, per_second: float) -> None:
        name = registry_limit_name(host, "requests")
        self._ensure(name, max(1, math.ceil(per_second)), per_second)
        rate_limit(name, occupy=1, strict=True)

    def fetch(self, host: str, parallel: int) -> AbstractContextManager[None]:
        name = registry_limit_name(host, "fetches")
        self._ensure(name, parallel)
        return concurrency(name, occupy=1, strict=True, lease_duration=FETCH_LEASE_SECONDS)


#: One budget per worker process: its limits are upserted once, whatever the number of clients.
BUDGET = PrefectBudget()
