"""Units of work of a sync and where they run.

A unit is one or more descriptors to copy from one source repository into the store (:class:`FetchUnit`);
:func:`fetch_descriptors` is what every unit does, wherever it runs. A :class:`Runner` decides where: on
threads of this process (:class:`LocalRunner`, with the retry policy of ``ocimirror.retry``), or as Prefect
task runs (``tasks.runner.PrefectRunner``, which also groups small blobs into batches, since a task run has
a fixed cost a 16 KiB blob should not pay alone: :class:`Batching`). The dispatcher that hands out units
is ``ocimirror.mirror``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from . import mediatypes, transfers
from .content import Fetcher, Ingester, copy_content
from .descriptor import Descriptor
from .errors import OcimirrorError, PermanentError, TransientError, is_transient
from .handlers import children_handler
from .plan import PlannedImage
from .pull import tag_image
from .referrers import record_referrers
from .remotes.reference import Reference
from .report import describe, describe_error, human_size
from .retry import call_with_retries
from .store import LayoutStore


@dataclass(frozen=True)
class Fetched:
    """One descriptor brought into the store: its children (a document's, unfiltered; none for a blob)
    and the bytes actually transferred (0 when it was already there, less than its size after a resume)."""

    descriptor: Descriptor
    children: tuple[Descriptor, ...]
    transferred: int


class BatchFailed(OcimirrorError):
    """Some descriptors of a unit of work failed. Carries what did succeed, so a retry or the report can
    tell them apart, and names every failed descriptor. Transient only while every failure is."""

    def __init__(self, fetched: Sequence[Fetched], failures: Sequence[tuple[Descriptor, BaseException]]) -> None:
        lines = "; ".join(f"{describe(d)}: {describe_error(e)}" for d, e in failures)
        super().__init__(f"{len(failures)} of {len(fetched) + len(failures)} blob(s) failed: {lines}")
        self.fetched = list(fetched)
        self.failures = list(failures)


class TransientBatchFailed(BatchFailed, TransientError):
    """A batch whose every failure may succeed if tried again (what retry policies look for)."""


class PermanentBatchFailed(BatchFailed, PermanentError):
    """A batch with at least one failure that will not change by trying again."""


def fetch_descriptors(
    fetcher: Fetcher, store: LayoutStore, descriptors: Sequence[Descriptor], replace: bool = False
) -> list[Fetched]:
    """Copy ``descriptors`` into ``store`` one after another and read the children of the documents among
    them. Every descriptor is tried; failures are raised together as a :class:`BatchFailed`, transient or
    permanent, carrying the successes (which a retry then finds present, at the cost of a stat). With
    ``replace`` the content is fetched again over a damaged stored copy (atomically, verified)."""
    children = children_handler(store)
    source = transfers.watched(fetcher)
    ingester: Ingester = store.replacing() if replace else store
    fetched: list[Fetched] = []
    failures: list[tuple[Descriptor, BaseException]] = []
    for descriptor in descriptors:
        try:
            transferred = copy_content(source, ingester, descriptor)
            fetched.append(Fetched(descriptor, tuple(children(descriptor)), transferred))
        except transfers.TransferCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - every failure is reported, by descriptor
            failures.append((descriptor, error))
    if failures:
        transient = all(is_transient(error) for _, error in failures)
        raise (TransientBatchFailed if transient else PermanentBatchFailed)(fetched, failures)
    return fetched


@dataclass(frozen=True)
class FetchUnit:
    """One unit of work for a runner: descriptors to fetch from ``source``'s repository, in order."""

    source: Reference
    descriptors: tuple[Descriptor, ...]
    replace: bool = False  # the stored copy is damaged: fetch it again over it

    def describe(self) -> str:
        """``manifest linux/amd64 sha256:1a2b3c4d 1.2 kB`` for one, ``12 blobs 1.4 MB`` for a batch."""
        if len(self.descriptors) == 1:
            return describe(self.descriptors[0])
        return f"{len(self.descriptors)} blobs {human_size(sum(d.size for d in self.descriptors))}"


Done = Callable[[object], None]


class Runner(Protocol):
    """Runs units of work somewhere and reports each outcome (a result or the exception) through ``done``,
    from any thread. ``batching`` says how small blobs are grouped; ``None`` sends each alone."""

    batching: Batching | None

    def fetch(self, unit: FetchUnit, done: Done) -> None: ...

    def tag(self, image: PlannedImage, done: Done) -> None: ...

    def close(self) -> None:
        """Wait for the work handed to this runner's own threads, then release them."""
        ...


@dataclass(frozen=True)
class Batching:
    """How small blobs share a unit of work. Documents and blobs of ``single_from`` bytes or more always go
    alone (a person wants to see a manifest or a large layer by name); the rest are grouped, at most
    ``max_count`` and ``max_bytes`` a batch. Batches are at least ``min_count`` blobs when that many are
    waiting, and smaller when spreading a long queue over every slot needs it."""

    single_from: int
    min_count: int
    max_count: int
    max_bytes: int


class LocalRunner:
    """Units of work on threads of this process; transient failures retried with the same policy as the
    Prefect tasks (``ocimirror.retry``)."""

    batching: Batching | None = None

    def __init__(self, fetcher_for: Callable[[Reference], Fetcher], store: LayoutStore, workers: int) -> None:
        self._fetcher_for = fetcher_for
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")

    def _run(self, work: Callable[[], object], done: Done, what: str) -> None:
        def run() -> None:
            try:
                outcome: object = call_with_retries(work, what)
            except BaseException as error:  # noqa: BLE001 - handed to the engine, which reports it
                outcome = error
            done(outcome)

        self._pool.submit(run)

    def fetch(self, unit: FetchUnit, done: Done) -> None:
        fetcher = self._fetcher_for(unit.source)
        self._run(
            lambda: fetch_descriptors(fetcher, self._store, unit.descriptors, unit.replace), done, unit.describe()
        )

    def tag(self, image: PlannedImage, done: Done) -> None:
        self._run(lambda: tag_mirrored(self._store, image), done, f"tag {image.name}")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def tag_mirrored(store: LayoutStore, image: PlannedImage) -> Descriptor:
    """Tag a mirrored image (see :func:`~ocimirror.pull.tag_image`), then record its referrers in the same
    store: the last step, once every blob under the image and its referrers is committed. A crash between
    the two leaves the image tagged and its referrers unrecorded, which the next plan sees and completes."""
    assert image.root is not None, "only a planned image is tagged"
    tagged = tag_image(store, image.name, image.root, image.request.selection)
    record_referrers(store, image.request.reference.name, image.referrers)
    return tagged


def batchable(descriptor: Descriptor, batching: Batching) -> bool:
    return descriptor.size < batching.single_from and not mediatypes.is_document(descriptor.media_type)
