"""What every ocimirror flow does once it has a plan: run the engine with Prefect as the runner, show
progress, and report each image.

All images of a run proceed at once over one bounded set of task runs (``ocimirror.mirror``): shared
layers are fetched once, each image is tagged as soon as its own tree is committed, and one image's
failure never stops the others. A person sees, in the run's page: a progress artifact that moves with
the bytes in flight, a log line per image as it completes, a table per fetched image (``fetch-<name>``)
and one summary table for the run.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from logging import Logger, LoggerAdapter
from typing import Any

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.states import Completed, Failed, State

from ocimirror import progress
from ocimirror.digest import short
from ocimirror.mirror import Mirror
from ocimirror.plan import PlannedImage
from ocimirror.referrers import describe_referrers
from ocimirror.report import ImageOutcome, SyncFailed, SyncResult, human_size
from tasks.clients import Target
from tasks.runner import PrefectRunner

#: Upper bound of task runs in flight; a config's ``concurrency`` chooses within it.
MAX_CONCURRENCY = 64
#: Progress artifact updates cost ~10 ms each against the API: at most one per interval.
PROGRESS_INTERVAL_SECONDS = 1.0

RunLogger = Logger | LoggerAdapter[Any]


def artifact_key(prefix: str, reference: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) naming ``reference``."""
    slug = re.sub(r"[^a-z0-9]+", "-", reference.lower()).strip("-")
    return f"{prefix}-{slug}"[:100].rstrip("-")


def shorten_digests(text: str) -> str:
    """``repo@sha256:<64 hex>`` as ``repo@sha256:1a2b3c4d``, for names that must fit a UI column."""
    return re.sub(r"(sha256|sha512):([0-9a-f]{8})[0-9a-f]{56,120}", r"\1:\2", text)


class _ProgressArtifact:
    """One progress artifact for the run, fed by the engine's progress events, at most one update a
    second. Never 100 % before every image is finished: totals grow as trees are discovered."""

    def __init__(self, images: int) -> None:
        self._images = images
        self._latest: dict[str, progress.Progress] = {}
        self._last_update = 0.0
        self._artifact = create_progress_artifact(progress=0.0, description=f"Mirroring {images} image(s)")

    def __call__(self, event: progress.Progress) -> None:
        self._latest[event.reference] = event
        finished = sum(1 for p in self._latest.values() if p.finished)
        now = time.monotonic()
        if now - self._last_update < PROGRESS_INTERVAL_SECONDS and finished < self._images:
            return
        self._last_update = now
        done = sum(p.bytes_done for p in self._latest.values())
        total = sum(p.bytes_total for p in self._latest.values())
        percent = 100.0 if finished == self._images else min(99.0, 100.0 * done / total if total else 0.0)
        update_progress_artifact(
            self._artifact,
            progress=percent,
            description=f"{finished}/{self._images} image(s) done, {human_size(done)} of {human_size(total)} so far",
        )


def mirror_planned(planned: Sequence[PlannedImage], target: Target, logger: RunLogger) -> SyncResult:
    """Fetch and tag every planned image of ``planned`` as task runs of the current flow run."""
    log_plan(logger, planned)
    to_fetch = sum(1 for image in planned if image.status == "planned")
    if not to_fetch:
        return SyncResult(images=[image.outcome() for image in planned])

    def finished(outcome: ImageOutcome) -> None:
        log_outcome(logger, outcome)
        if outcome.result is not None:  # its table while the others still fetch: the API calls overlap
            artifacts.append(reporter.submit(contextvars.copy_context().run, tree_artifact, outcome))

    unsubscribe = progress.subscribe(_ProgressArtifact(to_fetch))
    runner = PrefectRunner(target)
    artifacts: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifacts") as reporter:
        try:
            engine = Mirror(target.open_store(), runner, min(target.concurrency, MAX_CONCURRENCY), finished)
            result = SyncResult(images=engine.run(planned))
        finally:
            runner.close()
            unsubscribe()
    for artifact in artifacts:
        artifact.result()  # a failed artifact call is an error of the run, not lost in a thread
    return result


def log_plan(logger: RunLogger, planned: Sequence[PlannedImage]) -> None:
    """One log line per image of the plan: its status and digest (and referrers found), or why it failed."""
    for image in planned:
        detail = short(image.root.digest) if image.root else image.error
        found = f", {describe_referrers(image.referrers)}" if image.referrers else ""
        logger.info("plan: %s %s %s%s", image.status, image.name, detail, found)


def log_outcome(logger: RunLogger, outcome: ImageOutcome) -> None:
    """One log line for an image as it completes: what was fetched, or why it failed."""
    if outcome.result is not None:
        r = outcome.result
        logger.info(
            "%s tagged as %s: %d fetched (%s), %d already present, %.1f s",
            outcome.reference,
            short(r.digest),
            r.blobs_fetched,
            human_size(r.bytes_fetched),
            r.blobs_present,
            r.duration_seconds,
        )
    elif outcome.status == "fetched":
        logger.info("%s tagged as %s", outcome.reference, short(outcome.source_digest or ""))
    else:
        logger.error("%s failed: %s", outcome.reference, outcome.error)


def tree_artifact(outcome: ImageOutcome) -> None:
    """The table of every descriptor of a fetched image: what was fetched and what was already there."""
    result = outcome.result
    assert result is not None
    create_table_artifact(
        key=artifact_key("fetch", outcome.reference),
        table=[
            {
                "kind": row.kind,
                "platform": row.platform or "",
                "status": row.status,
                "size": human_size(row.size),
                "digest": short(row.digest, 12),
            }
            for row in result.tree
        ],
        description=(
            f"{outcome.reference} -> {short(result.digest, 12)}: {result.blobs_fetched} fetched "
            f"({human_size(result.bytes_fetched)}), {result.blobs_present} already present"
        ),
    )


def summary_artifact(result: SyncResult, key: str) -> None:
    """One row per image, the error before any digest so it stays on screen."""
    create_table_artifact(
        key=key,
        table=[
            {
                "reference": outcome.reference,
                "status": outcome.status,
                "error": outcome.error or "",
                "fetched": f"{outcome.result.blobs_fetched} ({human_size(outcome.result.bytes_fetched)})"
                if outcome.result
                else "",
                "digest": short(outcome.source_digest, 12) if outcome.source_digest else "",
            }
            for outcome in result.images
        ],
        description=result.summary(),
    )


def final_state(result: SyncResult) -> State[Any]:
    """Completed with the result, or Failed with a :class:`SyncFailed` that carries it (Prefect needs a
    failed state's data to be an exception)."""
    if result.failed:
        return Failed(message=result.summary(), data=SyncFailed(result))
    return Completed(message=result.summary(), data=result)
