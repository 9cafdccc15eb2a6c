"""``fetch_image``: the recursive fetch of one image, as a Prefect flow.

containerd dispatches handlers recursively; here the flow is the dispatcher. It walks the image tree
level by level (index -> manifests -> configs and layers) and maps the ``fetch_descriptor`` task over each
level's descriptors, so every descriptor is one task run a person can find in the UI, and no task ever
waits on another (a bounded pool would deadlock). Content already in the store costs an existence check
and no task run; a manifest already present is read from the store to find its children. The tag is
written last, after every blob is committed.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from ocimirror import progress
from ocimirror.config import RegistrySettings, StoreSettings
from ocimirror.descriptor import Descriptor
from ocimirror.errors import OcimirrorError
from ocimirror.pull import recorded_name
from ocimirror.remotes.reference import parse_reference
from ocimirror.report import FetchResult, TreeRow, describe, human_size
from ocimirror.selection import PlatformSelection
from tasks.clients import target_store
from tasks.fetch import fetch_descriptor
from tasks.index import tag_in_store
from tasks.resolve import resolve_reference

#: Upper bound of task runs in flight; the ``concurrency`` parameter chooses within it.
MAX_CONCURRENCY = 64
#: Progress artifact updates cost ~10 ms each against the API: at most one per interval.
PROGRESS_INTERVAL_SECONDS = 1.0


class ImageFetchFailed(OcimirrorError):
    """Some descriptors of an image could not be fetched; the message lists each with its reason."""

    def __init__(self, reference: str, failures: Sequence[tuple[Descriptor, BaseException]]) -> None:
        lines = [f"{describe(d)}: {type(e).__name__}: {e}" for d, e in failures]
        super().__init__(f"{reference}: {len(failures)} descriptor(s) failed:\n  " + "\n  ".join(lines))
        self.failures = list(failures)


def artifact_key(prefix: str, reference: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) naming ``reference``."""
    slug = re.sub(r"[^a-z0-9]+", "-", reference.lower()).strip("-")
    return f"{prefix}-{slug}"[:100].rstrip("-")


class _Tracker:
    """Counts blobs and bytes for one fetch and reports them to subscribers and a progress artifact."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.blobs_total = self.blobs_done = self.bytes_total = self.bytes_done = 0
        self._artifact = create_progress_artifact(progress=0.0, description=f"Fetching {reference}")
        self._last_update = 0.0

    def discover(self, descriptors: Sequence[Descriptor]) -> None:
        self.blobs_total += len(descriptors)
        self.bytes_total += sum(d.size for d in descriptors)

    def done(self, descriptor: Descriptor) -> None:
        self.blobs_done += 1
        self.bytes_done += descriptor.size
        self.report()

    def report(self, finished: bool = False) -> None:
        progress.publish(
            progress.Progress(
                self.reference, self.blobs_done, self.blobs_total, self.bytes_done, self.bytes_total, finished
            )
        )
        now = time.monotonic()
        if finished or now - self._last_update >= PROGRESS_INTERVAL_SECONDS:
            self._last_update = now
            percent = 100.0 * self.bytes_done / self.bytes_total if self.bytes_total else 100.0
            update_progress_artifact(
                self._artifact,
                progress=percent,
                description=(
                    f"{self.reference}: {self.blobs_done}/{self.blobs_total} blobs, "
                    f"{human_size(self.bytes_done)} of {human_size(self.bytes_total)}"
                ),
            )


def _present(store_settings: StoreSettings, level: Sequence[Descriptor], concurrency: int) -> list[bool]:
    """Which descriptors are already committed, checked in parallel (each check is a stat or a HEAD)."""
    store = target_store(store_settings)
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(level)))) as pool:
        return list(pool.map(store.exists, level))


@flow(
    name="fetch-image",
    flow_run_name="fetch {reference}",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),
    validate_parameters=True,
)
def fetch_image(
    reference: str,
    store: StoreSettings | str,
    platforms: list[str] | None = None,
    all_metadata: bool = False,
    registries: dict[str, RegistrySettings] | None = None,
    concurrency: int = 8,
) -> FetchResult:
    """Mirror ``reference`` into ``store`` and tag it there.

    ``platforms`` limits the image to those platforms (the best match for each, attestations included;
    the store gets an index of just those); with ``all_metadata`` every manifest and config is kept and
    only layers are limited, so the source's index digest is preserved. ``registries`` holds per-host
    settings (mirrors, TLS, credential references). ``concurrency`` bounds fetches in flight.
    """
    started = time.monotonic()
    logger = get_run_logger()
    store = StoreSettings(url=store) if isinstance(store, str) else store
    registries = registries or {}
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    selection = PlatformSelection(platforms=platforms or [], all_metadata=all_metadata)
    parsed = parse_reference(reference)
    name = recorded_name(parsed)  # what the store will call it: a pinned digest only decides what is fetched

    root = resolve_reference(str(parsed), registries, concurrency)
    logger.info("%s resolved to %s", name, describe(root))
    tracker = _Tracker(name)
    rows = _fetch_tree(str(parsed), root, store, registries, selection, concurrency, tracker)
    tagged = tag_in_store(name, root, store, selection)
    tracker.report(finished=True)

    fetched = [row for row in rows if row.status == "fetched"]
    present = [row for row in rows if row.status == "present"]
    result = FetchResult(
        reference=name,
        source_digest=root.digest,
        digest=tagged.digest,
        media_type=tagged.media_type,
        platforms=list(selection.platforms),
        blobs_fetched=len(fetched),
        blobs_present=len(present),
        bytes_fetched=sum(row.size for row in fetched),
        bytes_present=sum(row.size for row in present),
        duration_seconds=round(time.monotonic() - started, 3),
        tree=rows,
    )
    create_table_artifact(
        key=artifact_key("fetch", name),
        table=[row.model_dump() for row in rows],
        description=(
            f"{name} -> {tagged.digest}: {result.blobs_fetched} fetched "
            f"({human_size(result.bytes_fetched)}), {result.blobs_present} already present"
        ),
    )
    logger.info(
        "%s tagged as %s: %d fetched (%s), %d already present, %.1f s",
        name, tagged.digest, result.blobs_fetched, human_size(result.bytes_fetched),
        result.blobs_present, result.duration_seconds,
    )  # fmt: skip
    return result


def _fetch_tree(
    reference: str,
    root: Descriptor,
    store: StoreSettings,
    registries: dict[str, RegistrySettings],
    selection: PlatformSelection,
    concurrency: int,
    tracker: _Tracker,
) -> list[TreeRow]:
    """Fetch the tree under ``root`` level by level; return a row per descriptor, in discovery order."""
    children_in_store = selection.children_handler(target_store(store))
    rows: list[TreeRow] = []
    seen = {root.digest}
    level = [root]
    while level:
        tracker.discover(level)
        next_level: list[Descriptor] = []
        missing: list[Descriptor] = []
        for descriptor, present in zip(level, _present(store, level, concurrency), strict=True):
            if present:
                rows.append(TreeRow.of(descriptor, "present"))
                next_level.extend(children_in_store(descriptor))
                tracker.done(descriptor)
            else:
                missing.append(descriptor)
        for descriptor, children in _map_fetch(reference, missing, store, registries, selection, concurrency, tracker):
            rows.append(TreeRow.of(descriptor, "fetched"))
            next_level.extend(children)
        level = []
        for descriptor in next_level:
            if descriptor.digest not in seen:
                seen.add(descriptor.digest)
                level.append(descriptor)
    return rows


def _map_fetch(
    reference: str,
    descriptors: Sequence[Descriptor],
    store: StoreSettings,
    registries: dict[str, RegistrySettings],
    selection: PlatformSelection,
    concurrency: int,
    tracker: _Tracker,
) -> list[tuple[Descriptor, list[Descriptor]]]:
    """Run ``fetch_descriptor`` over ``descriptors`` with at most ``concurrency`` in flight.

    As in containerd's dispatch, the first failure (a task's, after its own retries of transient errors)
    stops new submissions; fetches already running finish, then every failure is raised together.
    Results keep the input order.
    """
    queue = deque(descriptors)
    running: dict[PrefectFuture, Descriptor] = {}
    results: dict[str, list[Descriptor]] = {}
    failures: list[tuple[Descriptor, BaseException]] = []
    while queue or running:
        while queue and len(running) < concurrency and not failures:
            descriptor = queue.popleft()
            running[fetch_descriptor.submit(descriptor, reference, store, registries, selection, concurrency)] = (
                descriptor
            )
        if not running:
            break
        future = next(as_completed(list(running)))
        descriptor = running.pop(future)
        try:
            results[descriptor.digest] = future.result()
            tracker.done(descriptor)
        except Exception as error:  # noqa: BLE001 - every failure is collected and reported together
            failures.append((descriptor, error))
    if failures:
        raise ImageFetchFailed(reference, failures)
    return [(d, results[d.digest]) for d in descriptors]
