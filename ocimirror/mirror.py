"""Mirroring many images at once: one bounded pool of fetches, shared content fetched once, and each image
tagged as soon as its own tree is committed.

This is containerd's dispatch (``handlers.dispatch``) widened from one root to a whole sync. Each digest
of the run is a node; every image that needs it waits on it; when it is in the store, each waiting image
keeps the children its own platform selection keeps, and the walk goes on. Nothing here waits on anything
but its own event queue: workers report back by posting events, so no unit of work ever waits on another
(a bounded pool cannot deadlock) and all bookkeeping happens in one thread, without locks.

*Where* a unit of work runs is a runner's choice (``ocimirror.work``: threads in this process, or Prefect
task runs, which also group small blobs into batches). Existence checks run here, on a small pool, so
content already present costs neither a task run nor a fetch.

An image's referrers (found by the plan: ``ocimirror.referrers``) are more roots of the same image: their
trees are walked whole, whatever the platform selection, shared with everything else by digest, and the
image is tagged (its referrers recorded, ``ocimirror.work.tag_mirrored``) only once all of them are committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from . import progress, transfers
from .descriptor import Descriptor
from .errors import DamagedContent, OcimirrorError
from .handlers import children_handler
from .plan import PlannedImage
from .report import ErrorDetail, FetchResult, ImageOutcome, TreeRow, describe, describe_error
from .store import LayoutStore
from .store.lease import Lease, LeaseLost, ensure_held
from .work import BatchFailed, Done, Fetched, FetchUnit, Runner, batchable

log = logging.getLogger(__name__)

#: How long the engine's loop sleeps at most between events: the pace of progress reports while a single
#: large blob streams.
PROGRESS_INTERVAL_SECONDS = 0.25
#: How long an interrupted run waits for its units in flight to notice and stop.
CANCEL_GRACE_SECONDS = 10.0


@dataclass(eq=False)
class _Node:
    """One digest of the run and the images waiting for it."""

    descriptor: Descriptor
    waiters: list[_Image] = field(default_factory=list)
    state: str = "probing"  # probing -> queued -> running -> done | failed
    children: tuple[Descriptor, ...] = ()
    transferred: int = 0
    damaged: bool = False  # present, but the stored copy does not hash to its name


@dataclass(eq=False)
class _Image:
    """One image of the run: what is still outstanding, and what happened to each of its descriptors."""

    planned: PlannedImage
    started: float
    outstanding: int = 0
    seen: set[str] = field(default_factory=set)
    unfiltered: set[str] = field(default_factory=set)  # referrer trees: every child kept, whatever the platform
    rows: list[TreeRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    blobs_total: int = 0
    bytes_total: int = 0
    blobs_done: int = 0
    bytes_done: int = 0
    tagged: Descriptor | None = None
    tagging: bool = False
    finished: float | None = None
    failure: ErrorDetail | None = None

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def active(self) -> bool:
        return self.finished is None


class Mirror:
    """Mirror planned images into ``store`` through ``runner`` with at most ``limit`` units in flight.

    :meth:`run` returns one outcome per image, in the order given. One image's failure never stops the
    others; a failed image is not tagged (its previous tag, if any, stays). ``on_image`` is called in the
    engine's thread as each image finishes, so callers can report images as they complete.
    """

    def __init__(
        self,
        store: LayoutStore,
        runner: Runner,
        limit: int = 8,
        on_image: Callable[[ImageOutcome], None] | None = None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._limit = max(1, limit)
        self._on_image = on_image
        self._children = children_handler(store)
        self._events: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._nodes: dict[str, _Node] = {}
        self._queue: deque[_Node] = deque()
        self._images: list[_Image] = []
        self._in_flight = 0
        self._probing = 0
        self._unprobed: list[_Node] = []
        self._stop = threading.Event()
        self._last_progress = 0.0
        self._streamed: dict[str, int] = {}
        self._streamed_lock = threading.Lock()
        self._lease: Lease | None = None

    # -- the transfers registry's Watcher ------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def transferred(self, digest: str, size: int) -> None:
        """Count bytes in flight (called per chunk from worker threads): a sum under a lock, read when
        progress is published, so the engine's loop is not woken for every chunk."""
        with self._streamed_lock:
            self._streamed[digest] = self._streamed.get(digest, 0) + size

    def cancel(self) -> None:
        """Stop every transfer of this run within a chunk; running units end with TransferCancelled."""
        self._stop.set()

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, images: Sequence[PlannedImage]) -> list[ImageOutcome]:
        """Fetch and tag every ``planned`` image; the others are reported as they are."""
        started = time.monotonic()
        self._images = [_Image(planned=image, started=started) for image in images if image.status == "planned"]
        if not self._images:
            return [image.outcome() for image in images]
        with self._store.lease() as lease:  # gc keeps what this run commits until it is tagged
            self._lease = lease
            return self._run(images)

    def _run(self, images: Sequence[PlannedImage]) -> list[ImageOutcome]:
        probe_pool = ThreadPoolExecutor(max_workers=self._limit, thread_name_prefix="probe")
        self._probe_pool = probe_pool
        try:
            for image in self._images:
                assert image.planned.root is not None
                self._need(image, image.planned.root)
                for referrer in image.planned.referrers:  # trees of their own, fetched with the image's
                    image.unfiltered.add(referrer.descriptor.digest)
                    self._need(image, referrer.descriptor)
                self._check_finished(image)
            self._flush_probes()
            while self._busy():
                try:
                    event = self._events.get(timeout=PROGRESS_INTERVAL_SECONDS)
                except queue.Empty:
                    self._publish_progress()
                    continue
                event()
                self._flush_probes()
                self._submit_ready()
                self._publish_progress()
        except BaseException:
            self._stop_in_flight()  # interrupted (Ctrl-C, a cancelled flow run)
            raise
        finally:
            if self._in_flight == 0:
                transfers.unwatch(self)
            # else: units outlived the grace period (a slow chunk); this stopped watcher stays registered so
            # they end at their next chunk instead of finishing transfers nobody waits for.
            probe_pool.shutdown(wait=not self._stop.is_set(), cancel_futures=True)
        self._publish_progress(force=True)
        outcomes = {id(image.planned): self._outcome(image) for image in self._images}
        return [outcomes.get(id(image)) or image.outcome() for image in images]

    def _stop_in_flight(self) -> None:
        """Stop every transfer of this run and wait (briefly) for the units in flight to end: a transfer
        stops within one chunk, and what it wrote stays in its ingest, to be resumed by the next run."""
        self.cancel()
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while self._in_flight > 0 and time.monotonic() < deadline:
            try:
                self._events.get(timeout=0.1)()
            except queue.Empty:
                continue

    def _busy(self) -> bool:
        return self._in_flight > 0 or self._probing > 0 or any(image.active for image in self._images)

    def _post(self, event: Callable[[], None]) -> None:
        self._events.put(event)

    def _reporter(self, handle: Done) -> Done:
        """A ``done`` callback for a runner: any thread may call it; ``handle`` runs in the engine's."""
        return lambda outcome: self._post(lambda: handle(outcome))

    # -- walking ------------------------------------------------------------------------------------
    def _need(self, image: _Image, descriptor: Descriptor) -> None:
        """``image`` needs ``descriptor``: share the node if the run already has it, else probe the store."""
        if descriptor.digest in image.seen:
            return
        image.seen.add(descriptor.digest)
        image.outstanding += 1
        image.blobs_total += 1
        image.bytes_total += descriptor.size
        node = self._nodes.get(descriptor.digest)
        if node is None:
            node = self._nodes[descriptor.digest] = _Node(descriptor)
            transfers.watch(self, [descriptor.digest])
            node.waiters.append(image)
            self._unprobed.append(node)
        elif node.state == "done":
            self._deliver(node, image, fetched_here=False)
        elif node.state == "failed":
            self._fail(image, node.descriptor, "failed earlier in this run", None)
            self._settle(image)
        else:
            node.waiters.append(image)

    def _flush_probes(self) -> None:
        """Check the store for every node discovered since the last event, in parallel, and take the
        answers back as one event: siblings (a manifest's layers) reach the queue together, so they can be
        spread over the free slots or batched, rather than trickling in one by one."""
        if not self._unprobed:
            return
        group, self._unprobed = self._unprobed, []
        self._probing += 1
        outcomes: list[object] = [None] * len(group)
        remaining = [len(group)]
        lock = threading.Lock()

        def probe(position: int, node: _Node) -> None:
            try:
                present = self._store.exists(node.descriptor)
                outcomes[position] = (present, tuple(self._children(node.descriptor)) if present else ())
            except DamagedContent:
                node.damaged = True  # fetched again over the bad copy, as `verify --repair` would
                outcomes[position] = (False, ())
            except BaseException as error:  # noqa: BLE001 - reported against the descriptor
                outcomes[position] = error
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._post(lambda: self._probed(group, outcomes))

        for position, node in enumerate(group):
            self._probe_pool.submit(probe, position, node)

    def _probed(self, group: list[_Node], outcomes: list[object]) -> None:
        self._probing -= 1
        for node, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._node_failed(node, outcome)
            elif isinstance(outcome, tuple) and outcome[0]:
                self._node_done(node, Fetched(node.descriptor, outcome[1], 0), fetched=False)
            elif any(not waiter.failed for waiter in node.waiters):
                node.state = "queued"
                self._queue.append(node)
            else:
                self._node_failed(node, None)

    def _submit_ready(self) -> None:
        while self._queue and self._in_flight < self._limit and not self._stop.is_set():
            nodes = self._next_unit()
            if not nodes:
                continue
            unit = FetchUnit(
                nodes[0].waiters[0].planned.source,
                tuple(node.descriptor for node in nodes),
                replace=any(node.damaged for node in nodes),
            )
            for node in nodes:
                node.state = "running"
            self._in_flight += 1
            self._runner.fetch(unit, self._reporter(partial(self._unit_done, nodes)))

    def _next_unit(self) -> list[_Node]:
        """The next unit of work from the queue: one node, or a batch of small blobs of one source."""
        head = self._queue.popleft()
        if all(waiter.failed for waiter in head.waiters):  # nobody needs it any more
            self._node_failed(head, None)
            return []
        batching = self._runner.batching
        if batching is None or head.damaged or not batchable(head.descriptor, batching):
            return [head]
        source = head.waiters[0].planned.source
        candidates = [
            node
            for node in self._queue
            if batchable(node.descriptor, batching) and not node.damaged and node.waiters[0].planned.source == source
        ]
        # Spread many small blobs over every slot, but never below min_count a batch: fewer task runs win.
        share = max(batching.min_count, -(-(len(candidates) + 1) // self._limit))
        batch, size = [head], head.descriptor.size
        for node in candidates:
            if len(batch) >= min(share, batching.max_count) or size + node.descriptor.size > batching.max_bytes:
                break
            batch.append(node)
            size += node.descriptor.size
        for node in batch[1:]:
            self._queue.remove(node)
        return batch

    def _unit_done(self, nodes: list[_Node], outcome: object) -> None:
        self._in_flight -= 1
        by_digest = {node.descriptor.digest: node for node in nodes}
        if isinstance(outcome, list):
            fetched, failures = outcome, []
        elif isinstance(outcome, BatchFailed):
            fetched, failures = outcome.fetched, outcome.failures
        elif isinstance(outcome, BaseException):
            fetched, failures = [], [(node.descriptor, outcome) for node in nodes]
        else:
            raise TypeError(f"unexpected unit outcome {outcome!r}")
        for item in fetched:
            self._node_done(by_digest[item.descriptor.digest], item, fetched=True)
        for descriptor, error in failures:
            self._node_failed(by_digest[descriptor.digest], error)

    def _node_done(self, node: _Node, item: Fetched, fetched: bool) -> None:
        node.state, node.children, node.transferred = "done", item.children, item.transferred
        waiters, node.waiters = node.waiters, []
        for position, image in enumerate(waiters):
            self._deliver(node, image, fetched_here=fetched and position == 0)

    def _node_failed(self, node: _Node, error: BaseException | None) -> None:
        """``node`` failed with ``error`` for every waiting image; with no error it was only dropped
        (every image that wanted it had failed), and an image that needs it later starts afresh."""
        node.state = "failed"
        if error is None:
            del self._nodes[node.descriptor.digest]
        waiters, node.waiters = node.waiters, []
        for image in waiters:
            if error is not None:
                self._fail(image, node.descriptor, describe_error(error), error)
            self._settle(image)

    def _deliver(self, node: _Node, image: _Image, fetched_here: bool) -> None:
        """``node`` is in the store: record it for ``image`` and walk on to the children it keeps."""
        descriptor = node.descriptor
        image.rows.append(
            TreeRow.of(
                descriptor,
                "fetched" if fetched_here else "present",
                transferred=node.transferred if fetched_here else 0,
            )
        )
        image.blobs_done += 1
        image.bytes_done += descriptor.size
        if not image.failed:
            try:
                if descriptor.digest in image.unfiltered:
                    kept = list(node.children)
                    image.unfiltered.update(child.digest for child in kept)
                else:
                    kept = image.planned.request.selection.keep(descriptor, list(node.children))
            except OcimirrorError as error:
                self._fail(image, descriptor, describe_error(error), error)
                kept = []
            for child in kept:
                self._need(image, child)
        self._settle(image)

    def _fail(self, image: _Image, descriptor: Descriptor, reason: str, error: BaseException | None) -> None:
        image.failures.append(f"{describe(descriptor)}: {reason}")
        if error is not None and image.failure is None:
            image.failure = ErrorDetail.of(error, descriptor.digest)

    def _settle(self, image: _Image) -> None:
        image.outstanding -= 1
        self._check_finished(image)

    def _check_finished(self, image: _Image) -> None:
        """Tag an image whose tree is complete; finish one that failed or is tagged."""
        if image.outstanding > 0 or not image.active or image.tagging:
            return
        if image.failed or self._stop.is_set():
            self._finish(image)
            return
        assert self._lease is not None, "run() holds a lease while images are active"
        try:
            ensure_held(self._lease, self._store)  # a lapsed lease protected nothing: do not tag on it
        except LeaseLost as error:
            image.failures.append(f"tag {image.planned.name}: {describe_error(error)}")
            image.failure = ErrorDetail.of(error)
            self._finish(image)
            return
        image.tagging = True
        self._in_flight += 1
        self._runner.tag(image.planned, self._reporter(lambda outcome: self._tag_done(image, outcome)))

    def _tag_done(self, image: _Image, outcome: object) -> None:
        self._in_flight -= 1
        if isinstance(outcome, Descriptor):
            image.tagged = outcome
        elif isinstance(outcome, BaseException):
            image.failures.append(f"tag {image.planned.name}: {describe_error(outcome)}")
            image.failure = image.failure or ErrorDetail.of(outcome)
        self._finish(image)

    def _finish(self, image: _Image) -> None:
        image.finished = time.monotonic()
        self._publish_progress(force=True)
        if self._on_image is not None:
            self._on_image(self._outcome(image))

    # -- progress and results -----------------------------------------------------------------------
    def _publish_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress = now
        with self._streamed_lock:
            streamed = dict(self._streamed)
        for image in self._images:
            nodes = [self._nodes.get(digest) for digest in image.seen]  # dropped nodes are gone
            in_flight = sum(
                min(streamed.get(node.descriptor.digest, 0), node.descriptor.size)
                for node in nodes
                if node and node.state == "running"
            )
            progress.publish(
                progress.Progress(
                    reference=image.planned.name,
                    blobs_done=image.blobs_done,
                    blobs_total=image.blobs_total,
                    bytes_done=image.bytes_done + in_flight,
                    bytes_total=image.bytes_total,
                    finished=not image.active,
                )
            )

    def _outcome(self, image: _Image) -> ImageOutcome:
        planned = image.planned
        assert planned.root is not None
        if image.failed or image.tagged is None:
            reason = "; ".join(image.failures) or "cancelled"
            return ImageOutcome(
                reference=planned.name,
                status="failed",
                source_digest=planned.root.digest,
                error=reason,
                failure=image.failure,
                referrers=list(planned.referrers),
            )
        fetched = [row for row in image.rows if row.status == "fetched"]
        present = [row for row in image.rows if row.status == "present"]
        result = FetchResult(
            reference=planned.name,
            source_digest=planned.root.digest,
            digest=image.tagged.digest,
            media_type=image.tagged.media_type,
            platforms=list(planned.request.selection.platforms),
            blobs_fetched=len(fetched),
            blobs_present=len(present),
            bytes_fetched=sum(row.transferred for row in fetched),
            bytes_present=sum(row.size for row in present),
            duration_seconds=round((image.finished or time.monotonic()) - image.started, 3),
            tree=image.rows,
        )
        return ImageOutcome(
            reference=planned.name,
            status="fetched",
            source_digest=planned.root.digest,
            result=result,
            referrers=list(planned.referrers),
        )
