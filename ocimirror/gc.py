"""Garbage collection: delete the blobs no ``index.json`` entry reaches, safely while syncs run.

*Mark*: every ``index.json`` entry is a root (tags, digest-named images, referrers stored as their own
entries); from each, indexes and Docker manifest lists lead to manifests, manifests to their config and
layers. ``subject`` is a back-reference, not a child: a referrer keeps its own tree, not its subject's.
A document that cannot be read (missing, damaged, unparseable) stops the collection before anything is
deleted, because what it reaches is unknown: repair the store first.

*Sweep*, under a ``gc`` lease (``ocimirror.store.lease``): the lease excludes writers, so no sync is between
committing a blob and tagging it while blobs are deleted. Under the lease ``index.json`` is read again (a
sync that finished while we waited may have tagged blobs the mark found unreachable), then the unreachable
blobs committed more than ``grace`` ago (store clock) are deleted, with the ingests crashed writers left.
The grace period protects writers that hold no lease (other tools writing the layout, a writer whose lease
lapsed); the lease protects ocimirror's writers however long they take.

Cost: one listing of ``blobs/<alg>/`` (paginated, linear in blobs), one read per distinct manifest or
index (cached by digest across the two walks: content under a digest never changes), batched deletes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from . import mediatypes
from .content import read_document
from .descriptor import Descriptor
from .errors import DigestMismatch, InvalidManifest, NotFound, SizeMismatch, StoreError
from .store.layout import BlobEntry, LayoutStore
from .store.lease import LEASE_TTL, LeaseInfo, ensure_held, hold, live_leases, remove_stale_leases

#: Unreachable blobs younger than this are kept (a writer outside the lease protocol may tag them soon).
DEFAULT_GRACE = 3600.0
#: How long ``gc`` waits for running writers to finish before giving up (nothing deleted).
DEFAULT_WAIT = 3600.0
#: Blobs deleted per request batch; the lease is checked between batches.
DELETE_BATCH = 1000
#: Manifests and indexes read at once while marking (small reads: latency, not bandwidth, is the cost).
READ_PARALLELISM = 8

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``0``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or a sum such as ``1h30m``."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if value == "0":
        return 0.0
    parts = _DURATION.findall(value)
    if not value or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"{text!r} is not a duration: use a number with a unit, e.g. 30s, 15m, 2h, 7d or 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class GcRefused(StoreError):
    """The collection stopped before deleting anything: a tree could not be walked."""


class GcReport(BaseModel):
    """What ``collect_garbage`` found and freed (or, with ``dry_run``, would free)."""

    dry_run: bool
    grace_seconds: float
    images: int = 0
    blobs: int = 0
    bytes: int = 0
    reachable: int = 0
    deleted: list[str] = []
    blobs_deleted: int = 0
    bytes_deleted: int = 0
    kept_recent: int = 0
    ingests_removed: int = 0
    ingest_bytes_removed: int = 0
    writers_running: int = 0

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        text = (
            f"{verb} {self.blobs_deleted} blobs ({self.bytes_deleted} bytes) and {self.ingests_removed} abandoned "
            f"ingests ({self.ingest_bytes_removed} bytes); {self.blobs} blobs listed, {self.reachable} reachable "
            f"from {self.images} images, {self.kept_recent} unreachable kept (committed within the grace period)"
        )
        if self.dry_run and self.writers_running:
            text += f"; {self.writers_running} writer(s) running now (a real run waits for them)"
        return text


class _Walker:
    """Reachability from a set of roots, level by level, reading each level's new documents in parallel
    (one round trip each on an object store), and remembering every document's children by digest."""

    def __init__(self, store: LayoutStore, parallel: int = READ_PARALLELISM) -> None:
        self._store = store
        self._parallel = parallel
        self._children: dict[str, list[Descriptor]] = {}

    def reachable(self, roots: Iterable[Descriptor]) -> set[str]:
        seen: set[str] = set()
        level = list(roots)
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="ocimirror-gc") as pool:
            while level:
                fresh = list({d.digest: d for d in level if d.digest not in seen}.values())
                seen.update(descriptor.digest for descriptor in fresh)
                documents = [d for d in fresh if mediatypes.is_document(d.media_type)]
                unread = [d for d in documents if d.digest not in self._children]
                for descriptor, children in zip(unread, pool.map(self._read, unread), strict=True):
                    self._children[descriptor.digest] = children
                level = [child for descriptor in documents for child in self._children[descriptor.digest]]
        return seen

    def _read(self, descriptor: Descriptor) -> list[Descriptor]:
        try:
            return read_document(self._store, descriptor).children()
        except (NotFound, DigestMismatch, SizeMismatch, InvalidManifest) as error:
            raise GcRefused(
                f"cannot walk {descriptor.kind} {descriptor.digest}: {error}. Nothing was deleted: what it "
                f"reaches is unknown; run `ocimirror verify --repair {self._store}` first"
            ) from None


def _roots(store: LayoutStore) -> list[Descriptor]:
    """Every ``index.json`` entry: tagged or not, an entry is something someone wants kept."""
    return store.images()


def collect_garbage(
    store: LayoutStore,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    wait: float = DEFAULT_WAIT,
    ttl: float = LEASE_TTL,
    on_wait: Callable[[list[LeaseInfo]], None] | None = None,
) -> GcReport:
    """Delete every blob no ``index.json`` entry reaches and that was committed more than ``grace`` seconds
    ago, and the ingests crashed writers left; with ``dry_run`` only report what would go (nothing is
    written, not even a lease). Waits up to ``wait`` seconds for running writers (``StoreBusy`` after)."""
    if grace < 0:
        raise ValueError("the grace period cannot be negative")
    store.check_layout()
    report = GcReport(dry_run=dry_run, grace_seconds=grace)
    listing = list(store.blob_entries())
    report.blobs, report.bytes = len(listing), sum(entry.size for entry in listing)
    walker = _Walker(store)
    roots = _roots(store)
    reachable = walker.reachable(roots)  # outside the lease: the reads that take time happen here
    if dry_run:
        now = datetime.now(UTC)
        report.writers_running = len(live_leases(store, "write", now, ttl))
        _account(report, listing, reachable, len(roots), now - timedelta(seconds=grace))
        for ingest in store.backend.abandoned_ingests(now - timedelta(seconds=grace)):
            report.ingests_removed += 1
            report.ingest_bytes_removed += ingest.size
        return report
    with hold(store, "gc", ttl, wait, on_wait) as (lease, now):
        roots = _roots(store)
        reachable = walker.reachable(roots)  # tags written while we waited for the lease
        cutoff = now - timedelta(seconds=grace)
        doomed = _account(report, listing, reachable, len(roots), cutoff)
        for start in range(0, len(doomed), DELETE_BATCH):
            ensure_held(lease, store)  # a lapsed lease may have let a writer in: stop deleting
            store.delete_blobs(doomed[start : start + DELETE_BATCH])
        for ingest in store.backend.abandoned_ingests(cutoff):
            if not store.backend.remove_ingest(ingest):
                continue
            report.ingests_removed += 1
            report.ingest_bytes_removed += ingest.size
        remove_stale_leases(store, now, ttl)
    return report


def _account(
    report: GcReport, listing: list[BlobEntry], reachable: set[str], images: int, cutoff: datetime
) -> list[str]:
    """Fill ``report`` with what the mark found; return the names of the blobs to delete."""
    report.images, report.reachable = images, sum(1 for entry in listing if entry.name in reachable)
    doomed = []
    for entry in listing:
        if entry.name in reachable:
            continue
        if entry.committed_at > cutoff:
            report.kept_recent += 1
            continue
        doomed.append(entry.name)
        report.bytes_deleted += entry.size
    report.deleted, report.blobs_deleted = doomed, len(doomed)
    return doomed
