"""Fan-out: a sync's changed images as runs of the ``fetch-image`` deployment, on its work pool's workers.

One machine is the limit of an in-process sync; a work pool is Prefect's way past it (processes, Docker
containers or Kubernetes jobs on any number of machines). The sync's own run plans as usual, then starts one
deployment run per changed image, pinned to the digest the plan resolved, with the store and registries as
plain settings (secrets stay references, read on the worker), at most ``runs`` at a time; it waits for
them and reports each image as the in-process path does. The children share the store safely: blobs are
committed by digest, tags by conditional writes of ``index.json``, and each child holds its own write lease.

A run that crashed (its worker or process killed, its machine gone) is started again, up to ``ATTEMPTS``
runs an image: what it committed stays, so the next run resumes from there. A run that failed or was
cancelled is reported as failed, with its message.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import State, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from ocimirror.errors import ConfigError
from ocimirror.plan import PlannedImage, is_current
from ocimirror.report import ErrorDetail, FetchResult, ImageOutcome, SyncFailed, SyncResult, describe_error
from tasks.clients import Target

from .mirroring import RunLogger, log_outcome, log_plan, tree_artifact

#: The deployment each image runs as: ``flow name/deployment name`` (``deployments/prefect.yaml``).
DEFAULT_DEPLOYMENT = "fetch-image/fetch-image"
#: Image runs in flight at once; the work pool's workers decide how many actually run.
DEFAULT_RUNS = 16
#: Runs an image gets when its runs crash: the first and one more.
ATTEMPTS = 2
#: Seconds between reads of a child run's state.
POLL_SECONDS = 2.0


def image_parameters(image: PlannedImage, target: Target) -> dict[str, Any]:
    """The ``fetch-image`` parameters for ``image``: its reference pinned to the planned digest (the tag kept:
    it is what the image is recorded under), and only plain settings (secrets by reference)."""
    selection, wanted = image.request.selection, image.request.referrers
    return {
        "reference": str(image.source),
        "store": target.store.model_dump(mode="json"),
        "platforms": list(selection.platforms) or None,
        "all_metadata": selection.all_metadata,
        "registries": {host: settings.model_dump(mode="json") for host, settings in target.registries.items()},
        "concurrency": target.concurrency,
        "referrers": (list(wanted.artifact_types) or True) if wanted is not None else False,
    }


def fan_out_planned(
    planned: Sequence[PlannedImage],
    target: Target,
    logger: RunLogger,
    deployment: str = DEFAULT_DEPLOYMENT,
    runs: int = DEFAULT_RUNS,
) -> SyncResult:
    """Run every planned image of ``planned`` as a run of ``deployment`` and report them all, in plan order.

    Each child is started and awaited from a thread of its own (with the flow run's context, so it shows
    as a subflow of this run); this run's own task runner is not used, so nothing here can wait for a slot
    it holds itself.
    """
    log_plan(logger, planned)
    to_fetch = [image for image in planned if image.status == "planned"]
    if to_fetch:
        _check_deployment(deployment)

    def run_one(image: PlannedImage) -> ImageOutcome:
        try:
            outcome = _run_image(image, target, logger, deployment)
        except Exception as error:  # noqa: BLE001 - the API failing for one image fails that image only
            outcome = ImageOutcome(
                reference=image.name,
                status="failed",
                source_digest=image.root.digest if image.root else None,
                error=describe_error(error),
                failure=ErrorDetail.of(error),
            )
        log_outcome(logger, outcome)
        return outcome

    outcomes: dict[str, ImageOutcome] = {}
    if to_fetch:
        with ThreadPoolExecutor(max_workers=max(1, min(runs, len(to_fetch))), thread_name_prefix="fan-out") as pool:
            futures = {image.name: pool.submit(contextvars.copy_context().run, run_one, image) for image in to_fetch}
            outcomes = {name: future.result() for name, future in futures.items()}
    result = SyncResult(images=[outcomes.get(image.name) or image.outcome() for image in planned])
    for outcome in result.images:
        if outcome.result is not None:
            tree_artifact(outcome)
    return result


def _check_deployment(deployment: str) -> None:
    """Refuse, before any image, a deployment name that is malformed or not deployed, with what to do."""
    if deployment.count("/") != 1:
        raise ConfigError(f"deployment {deployment!r}: expected 'flow-name/deployment-name'")
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(
                f"deployment {deployment!r} not found: deploy it first "
                "(prefect deploy --prefect-file deployments/prefect.yaml --name fetch-image)"
            ) from None


def _run_image(image: PlannedImage, target: Target, logger: RunLogger, deployment: str) -> ImageOutcome:
    parameters = image_parameters(image, target)
    for attempt in range(1, ATTEMPTS + 1):
        run = run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=POLL_SECONDS)
        assert isinstance(run, FlowRun), "called from a thread without an event loop: the sync form"
        state = run.state
        if state is not None and state.is_crashed() and attempt < ATTEMPTS:
            logger.warning("%s: run %s crashed (%s); running it again", image.name, run.name, state.message)
            continue
        return _outcome(image, target, run, state)
    raise AssertionError("unreachable: the last attempt always returns")


def _outcome(image: PlannedImage, target: Target, run: FlowRun, state: State[Any] | None) -> ImageOutcome:
    """What a finished child run did to ``image``: its FetchResult when the run's result can be read (a result
    storage every worker and this run share), else what the store says."""
    assert image.root is not None
    if state is not None and state.is_completed():
        fetched = _result_of(state)
        if isinstance(fetched, FetchResult):
            return ImageOutcome(reference=image.name, status="fetched", source_digest=image.root.digest, result=fetched)
        if is_current(target.open_store(), image.name, image.root, image.request.selection):
            return ImageOutcome(reference=image.name, status="fetched", source_digest=image.root.digest)
        message = f"run {run.name} completed but {image.name} is not tagged at {image.root.digest}"
        return ImageOutcome(reference=image.name, status="failed", source_digest=image.root.digest, error=message)
    if state is not None and state.is_failed():
        failed = _result_of(state)
        if isinstance(failed, SyncFailed) and failed.result.images:
            return failed.result.images[0].model_copy(update={"reference": image.name})
    kind = state.name if state is not None else "no state"
    message = f"run {run.name} ended {kind}: {state.message if state is not None else ''}".rstrip(": ")
    return ImageOutcome(
        reference=image.name,
        status="failed",
        source_digest=image.root.digest,
        error=message,
        failure=ErrorDetail(type=kind, message=message, transient=state is not None and state.is_crashed()),
    )


def _result_of(state: State[Any]) -> object:
    """The run's result or exception, or ``None`` when it cannot be read here (not persisted, or kept in
    storage this machine cannot reach): the caller then asks the store."""
    try:
        return state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - any failure to read a result falls back to the store's word
        return None
