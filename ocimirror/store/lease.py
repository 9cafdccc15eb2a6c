"""Leases: how writers (pull, sync, repair) and the garbage collector keep out of each other's way.

Deleting is safe only if nothing can still make a deleted blob reachable. A writer makes blobs reachable
late: it commits (or finds already present) every blob of an image and writes the tag last, minutes or
hours later. ``gc`` therefore sweeps only while no writer is active, and writers do not start while a sweep
runs. The marker each side holds is a *lease*: a small object ``leases/<kind>-<id>.json`` in the store,
rewritten every ``ttl / 4`` by a background thread and removed when done. A lease whose object was last
written more than ``ttl`` ago is stale (its holder crashed or lost the store) and is ignored.

Acquiring is the same for both sides, in this order: write your own lease, then list the others' leases;
if one of the other kind is live, remove yours, wait and try again. Because S3, GCS and local disk list
strongly after a write, two parties acquiring at the same time cannot both miss each other: whichever lists
second sees the other's lease. Ages are measured against the store's own clock (the modification time of
the lease just written), never against the local clock, so clock skew between machines does not matter.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ..errors import TransientError
from .files import modified_at

if TYPE_CHECKING:
    from .layout import LayoutStore

log = logging.getLogger(__name__)

LEASE_DIR = "leases"
#: A lease not rewritten for this long is stale. Renewed every quarter of it, so three renewals in a row
#: can fail (a slow or briefly unreachable store) before a live holder loses its protection.
LEASE_TTL = 60.0
#: Seconds between attempts while waiting for the other side's leases to go.
POLL_INTERVAL = 2.0

LeaseKind = Literal["write", "gc"]
_OTHER: dict[LeaseKind, LeaseKind] = {"write": "gc", "gc": "write"}


class StoreBusy(TransientError):
    """Leases of the other kind stayed live for longer than the caller was willing to wait."""


class LeaseLost(TransientError):
    """A lease went unrenewed for too long: the other side may have acted as if it were gone."""


@dataclass(frozen=True)
class LeaseInfo:
    """A lease found in the store: its kind, object name and when it was last renewed (store clock)."""

    kind: LeaseKind
    name: str
    renewed_at: datetime

    def age(self, now: datetime) -> float:
        return (now - self.renewed_at).total_seconds()


class Lease:
    """One lease object, renewed in the background while held."""

    def __init__(self, store: LayoutStore, kind: LeaseKind, ttl: float) -> None:
        self.kind = kind
        self.ttl = ttl
        self._fs = store.fs
        self._path = posixpath.join(store.backend.root, LEASE_DIR, f"{kind}-{uuid.uuid4().hex}.json")
        self._body = json.dumps(
            {"kind": kind, "host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now(UTC).isoformat()}
        ).encode()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renewed = time.monotonic()
        self._lapsed = False

    @property
    def name(self) -> str:
        return posixpath.basename(self._path)

    def write(self) -> None:
        """Write (or rewrite) the lease object. Its age is counted from before the write was sent, so the
        holder never thinks it fresher than others see it."""
        started = time.monotonic()
        self._fs.makedirs(posixpath.dirname(self._path), exist_ok=True)
        self._fs.pipe_file(self._path, self._body)
        if started - self._renewed >= self.ttl / 2:
            self._lapsed = True  # others may have seen it stale meanwhile: never trust it again
        self._renewed = started

    def written_at(self) -> datetime:
        """The lease object's modification time: the store's clock at the last write."""
        self._fs.invalidate_cache(self._path)
        return modified_at(self._fs.info(self._path))

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name=f"ocimirror-lease-{self.kind}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.write()
            except Exception as error:  # noqa: BLE001 - keep trying; held() tells the holder when it lapsed
                log.warning("could not renew %s lease %s: %s", self.kind, self.name, error)

    def held(self) -> bool:
        """Whether the lease has certainly been live for others all along: renewed within the last
        ``ttl / 2`` and never left longer than that since it was acquired. A lease that lapsed once may have
        looked stale to the other side, which may then have acted (deleted, or written) meanwhile."""
        return not self._lapsed and time.monotonic() - self._renewed < self.ttl / 2

    def release(self) -> None:
        """Stop renewing and remove the object. A removal that fails is only logged: the lease goes stale
        by itself, and the holder's own outcome (or error) is what matters to its caller."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._fs.rm_file(self._path)
        except FileNotFoundError:
            pass
        except Exception as error:  # noqa: BLE001 - see above
            log.warning(
                "could not remove %s lease %s (it goes stale in %.0f s): %s", self.kind, self.name, self.ttl, error
            )


def list_leases(store: LayoutStore) -> list[LeaseInfo]:
    """Every lease object in the store (live or stale), listed afresh."""
    directory = posixpath.join(store.backend.root, LEASE_DIR)
    store.fs.invalidate_cache(directory)
    try:
        entries = store.fs.ls(directory, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = posixpath.basename(entry["name"])
        kind = name.partition("-")[0]
        if entry.get("type") == "file" and kind in _OTHER and name.endswith(".json"):
            found.append(LeaseInfo(kind=kind, name=name, renewed_at=modified_at(entry)))
    return found


def live_leases(store: LayoutStore, kind: LeaseKind, now: datetime, ttl: float = LEASE_TTL) -> list[LeaseInfo]:
    """The leases of ``kind`` renewed within ``ttl`` seconds of ``now`` (store clock)."""
    return [lease for lease in list_leases(store) if lease.kind == kind and lease.age(now) < ttl]


def remove_stale_leases(store: LayoutStore, now: datetime, older_than: float) -> int:
    """Remove lease objects not renewed for ``older_than`` seconds: their holders died, everyone ignores
    them already; removed so they do not pile up. Returns how many went."""
    removed = 0
    for lease in list_leases(store):
        if lease.age(now) > older_than:
            with suppress(FileNotFoundError):
                store.fs.rm_file(posixpath.join(store.backend.root, LEASE_DIR, lease.name))
                removed += 1
    return removed


def _acquire(
    store: LayoutStore,
    kind: LeaseKind,
    ttl: float,
    wait: float | None,
    on_wait: Callable[[list[LeaseInfo]], None] | None,
) -> tuple[Lease, datetime]:
    """Write a lease of ``kind`` and keep it only once no live lease of the other kind exists."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        lease = Lease(store, kind, ttl)
        lease.write()
        now = lease.written_at()
        blockers = live_leases(store, _OTHER[kind], now, ttl)
        if not blockers:
            return lease, now
        lease.release()
        if deadline is not None and time.monotonic() >= deadline:
            raise StoreBusy(
                f"{store}: {len(blockers)} {_OTHER[kind]} lease(s) still held after waiting {wait:.0f} s "
                f"({', '.join(blocker.name for blocker in blockers)})"
            )
        if on_wait is not None:
            on_wait(blockers)
        time.sleep(POLL_INTERVAL * random.uniform(0.5, 1.5))  # jitter: two waiters do not retry in lockstep


@contextmanager
def hold(
    store: LayoutStore,
    kind: LeaseKind,
    ttl: float = LEASE_TTL,
    wait: float | None = None,
    on_wait: Callable[[list[LeaseInfo]], None] | None = None,
) -> Iterator[tuple[Lease, datetime]]:
    """Hold a lease of ``kind`` for the duration of the block; yield it and the store's time at acquisition.

    Waits while the other kind holds live leases: forever when ``wait`` is ``None`` (writers: a sweep is
    short, and a crashed collector's lease is stale after ``ttl``), else at most ``wait`` seconds, then
    ``StoreBusy``.
    """
    lease, now = _acquire(store, kind, ttl, wait, on_wait)
    lease.start_renewing()
    try:
        yield lease, now
    finally:
        lease.release()


@contextmanager
def write_lease(store: LayoutStore, ttl: float = LEASE_TTL) -> Iterator[Lease]:
    """What every writer holds from its first look at the store's blobs until its last tag is written, so
    that ``gc`` never deletes a blob it has committed, or found present, but not tagged yet. Check
    ``held()`` right before tagging (``ensure_held``): a lease that lapsed protected nothing."""

    def waiting(blockers: list[LeaseInfo]) -> None:
        log.info("%s: waiting for a garbage collection to finish (%s)", store, blockers[0].name)

    with hold(store, "write", ttl, on_wait=waiting) as (lease, _):
        yield lease


def ensure_held(lease: Lease, store: LayoutStore) -> None:
    """Raise ``LeaseLost`` (transient: run again) unless ``lease`` has been live all along."""
    if not lease.held():
        raise LeaseLost(
            f"{store}: the {lease.kind} lease could not be renewed in time; a garbage collection may have "
            "run meanwhile, so nothing more is written (running again is safe)"
        )
