"""``mirror_sync``: keep a set of images mirrored in a store, as a Prefect flow for schedules and the UI.

The flow plans first (list tags where the config selects by pattern, version or recency; resolve every
reference to its digest), then runs ``fetch_image`` as a subflow for each image that changed. An image
whose resolved digest is already tagged in the store costs one manifest request and no task run. A failing
image does not stop the others: every failure is reported, finished images stay committed, and the run
ends Failed if anything failed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from ocimirror.config import ImageSpec, MirrorConfig, load_config, parse_config
from ocimirror.descriptor import Descriptor
from ocimirror.errors import NotFound, OcimirrorError
from ocimirror.plan import select_tags
from ocimirror.pull import recorded_name
from ocimirror.remotes.reference import Reference, parse_reference
from ocimirror.report import ImageOutcome, SyncResult
from ocimirror.selection import SOURCE_DIGEST_ANNOTATION, PlatformSelection
from tasks.clients import registry_client, target_store

from .fetch import fetch_image

T = TypeVar("T")


class PlannedImage(ImageOutcome):
    """An image of the plan with what is needed to fetch it."""

    platforms: list[str] = Field(default_factory=list)
    all_metadata: bool = False


def _selection(config: MirrorConfig, spec: ImageSpec) -> PlatformSelection:
    platforms = spec.platforms if spec.platforms is not None else config.platforms
    all_metadata = spec.all_metadata if spec.all_metadata is not None else config.all_metadata
    return PlatformSelection(platforms=platforms, all_metadata=all_metadata)


def _references(config: MirrorConfig, spec: ImageSpec) -> list[Reference]:
    """Every reference ``spec`` asks for; lists the repository's tags only when a selector needs them."""
    repository = parse_reference(spec.source)
    available: list[str] = []
    if spec.lists_tags:
        available = registry_client(config.registries, config.concurrency).tags(repository)
    references = [repository.with_tag(tag) for tag in select_tags(spec, available)]
    untagged = Reference(registry=repository.registry, repository=repository.repository)
    references += [untagged.with_digest(digest) for digest in spec.digests]
    return references


def _is_current(config: MirrorConfig, name: str, root: Descriptor, selection: PlatformSelection) -> bool:
    """Whether the store already has ``name`` mirrored from ``root`` with the same selection.

    Tags are written only after their whole tree is committed, so the tag is the completeness record;
    ``ocimirror verify`` is what re-checks the blobs themselves.
    """
    store = target_store(config.store)
    try:
        entry = store.resolve(name)
    except NotFound:
        return False
    annotations = entry.annotations or {}
    return (
        annotations.get(SOURCE_DIGEST_ANNOTATION) == root.digest
        and PlatformSelection.from_annotations(annotations) == selection
        and store.exists(entry)
    )


def _plan_spec(config: MirrorConfig, spec: ImageSpec) -> list[PlannedImage]:
    selection = _selection(config, spec)
    try:
        references = _references(config, spec)
    except OcimirrorError as error:
        return [PlannedImage(reference=spec.source, status="failed", error=str(error))]
    registry = registry_client(config.registries, config.concurrency)
    planned = []
    for reference in references:
        name = recorded_name(reference)
        try:
            root = registry.resolve(reference)
        except OcimirrorError as error:
            planned.append(PlannedImage(reference=name, status="failed", error=str(error)))
            continue
        status = "up-to-date" if _is_current(config, name, root, selection) else "planned"
        planned.append(
            PlannedImage(
                reference=name,
                status=status,
                source_digest=root.digest,
                platforms=list(selection.platforms),
                all_metadata=selection.all_metadata,
            )
        )
    return planned


def _parallel(function: Callable[[ImageSpec], list[T]], specs: list[ImageSpec], workers: int) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(specs)))) as pool:
        return [item for items in pool.map(function, specs) for item in items]


def _load(config: MirrorConfig | dict | str) -> MirrorConfig:
    if isinstance(config, MirrorConfig):
        return config
    if isinstance(config, str):
        return load_config(Path(config))
    return parse_config(config, source="config parameter")


@flow(name="mirror-sync", validate_parameters=False)
def mirror_sync(config: MirrorConfig | dict | str, dry_run: bool = False) -> State:
    """Mirror every image of ``config`` (a MirrorConfig, its dict form, or a path to its YAML file).

    With ``dry_run`` the plan is returned and shown as an artifact, and nothing is written.
    """
    logger = get_run_logger()
    config = _load(config)
    plan = _parallel(lambda spec: _plan_spec(config, spec), config.images, config.concurrency)
    for image in plan:
        logger.info("plan: %s %s %s", image.status, image.reference, image.source_digest or image.error or "")
    if dry_run:
        result = SyncResult(dry_run=True, images=[_outcome(image) for image in plan])
        create_markdown_artifact(key="mirror-sync-plan", markdown=_plan_markdown(result), description="Dry-run plan")
        return Completed(message=f"dry run: {len(plan)} image(s) planned", data=result)

    outcomes = [_run(config, image) if image.status == "planned" else _outcome(image) for image in plan]
    result = SyncResult(images=outcomes)
    create_table_artifact(
        key="mirror-sync",
        table=[
            {
                "reference": o.reference,
                "status": o.status,
                "digest": o.source_digest or "",
                "fetched": o.result.blobs_fetched if o.result else 0,
                "error": o.error or "",
            }
            for o in outcomes
        ],
        description=f"{len(outcomes)} image(s), {len(result.failed)} failed",
    )
    if result.failed:
        names = ", ".join(o.reference for o in result.failed)
        return Failed(message=f"{len(result.failed)} of {len(outcomes)} image(s) failed: {names}", data=result)
    return Completed(message=f"{len(outcomes)} image(s) mirrored", data=result)


def _outcome(image: PlannedImage) -> ImageOutcome:
    """The plan entry as a result entry (dropping what was only needed to fetch it)."""
    return ImageOutcome(**image.model_dump(include=set(ImageOutcome.model_fields)))


def _run(config: MirrorConfig, image: PlannedImage) -> ImageOutcome:
    """Fetch one planned image as a subflow, pinned to the digest the plan resolved."""
    reference = parse_reference(image.reference)
    pinned = str(reference.with_digest(image.source_digest)) if image.source_digest else image.reference
    state = fetch_image(
        reference=pinned,
        store=config.store,
        platforms=image.platforms,
        all_metadata=image.all_metadata,
        registries=config.registries,
        concurrency=config.concurrency,
        return_state=True,
    )
    if state.is_completed():
        return ImageOutcome(
            reference=image.reference, status="fetched", source_digest=image.source_digest, result=state.result()
        )
    try:
        state.result()
        error_text = state.message or "failed"
    except Exception as error:  # noqa: BLE001 - the subflow's failure, reported as this image's
        error_text = f"{type(error).__name__}: {error}"
    return ImageOutcome(reference=image.reference, status="failed", source_digest=image.source_digest, error=error_text)


def _plan_markdown(result: SyncResult) -> str:
    lines = ["| reference | status | digest |", "|---|---|---|"]
    lines += [f"| {o.reference} | {o.status} | {o.source_digest or o.error or ''} |" for o in result.images]
    return "\n".join(lines)
