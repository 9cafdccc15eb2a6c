"""Planning a sync: from a mirror config (or a list of references) to the images that need fetching.

Planning is the same whoever fetches afterwards (the in-process engine or the Prefect flows): list tags
only where a selector needs them, resolve every reference to its root descriptor, and compare with what
the store already has tagged. An image whose tag already points at the same source digest, mirrored with
the same platform selection, is up to date and costs one manifest request. Registry calls run in parallel;
a failure is recorded against its image and never stops the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from .config import ImageSpec, MirrorConfig, compile_pattern
from .descriptor import Descriptor
from .errors import NotFound, OcimirrorError
from .pull import recorded_name
from .referrers import Referrer, ReferrerSelection, find_referrers, image_documents, recorded_referrers
from .remotes import Registry
from .remotes.reference import Reference, parse_reference
from .report import ErrorDetail, ImageOutcome, describe_error
from .selection import SOURCE_DIGEST_ANNOTATION, PlatformSelection
from .store import LayoutStore

T = TypeVar("T")
R = TypeVar("R")


def _version(tag: str) -> Version | None:
    try:
        return Version(tag)
    except InvalidVersion:
        return None


def select_tags(spec: ImageSpec, available: Sequence[str]) -> list[str]:
    """The tags of ``spec`` to mirror, given the registry's ``available`` tags (ignored unless needed).

    Explicit ``tags`` are always kept (a missing one fails at resolve, loudly). Listed tags pass
    ``include`` (any pattern), then not ``exclude`` (RE2 full matches: linear time, whatever the pattern),
    then the version range; ``latest`` keeps the N highest versions among those. Pre-releases count only
    when the range names one, as with pip. The result is sorted and without duplicates, so plans are
    stable from run to run.
    """
    chosen = set(spec.tags)
    if spec.lists_tags:
        include = [compile_pattern(pattern) for pattern in spec.include]
        exclude = [compile_pattern(pattern) for pattern in spec.exclude]
        candidates = [
            tag
            for tag in available
            if (not include or any(pattern.fullmatch(tag) for pattern in include))
            and not any(pattern.fullmatch(tag) for pattern in exclude)
        ]
        version_range = spec.version_range
        if version_range is not None or spec.latest:
            versioned = [(version, tag) for tag in candidates if (version := _version(tag)) is not None]
            if version_range is not None:
                prereleases = bool(version_range.prereleases)
                versioned = [(v, t) for v, t in versioned if version_range.contains(v, prereleases=prereleases)]
            else:
                versioned = [(v, t) for v, t in versioned if not v.is_prerelease]
            versioned.sort(reverse=True)
            if spec.latest:
                versioned = versioned[: spec.latest]
            candidates = [tag for _, tag in versioned]
        chosen.update(candidates)
    elif not spec.tags and not spec.digests:
        chosen.add("latest")
    return sorted(chosen)


class ImageRequest(BaseModel):
    """One image asked for: where it comes from and which part of it to keep."""

    model_config = ConfigDict(frozen=True)

    reference: Reference
    selection: PlatformSelection = PlatformSelection()
    referrers: ReferrerSelection | None = None  # None: the image only
    spec: int | None = None  # which entry of a mirror config asked for it (for pruning)

    @property
    def name(self) -> str:
        return recorded_name(self.reference)


class PlannedImage(BaseModel):
    """An image of the plan: ``planned`` (to fetch from ``root``, with ``referrers``), ``up-to-date``, or
    ``failed`` with why."""

    model_config = ConfigDict(frozen=True)

    request: ImageRequest
    status: Literal["planned", "up-to-date", "failed"]
    root: Descriptor | None = None
    referrers: tuple[Referrer, ...] = ()
    error: str | None = None
    failure: ErrorDetail | None = None

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def source(self) -> Reference:
        """The reference to fetch from, pinned to the digest the plan resolved, so a tag moving during the
        sync cannot mix two versions of an image."""
        reference = self.request.reference
        return reference.with_digest(self.root.digest) if self.root else reference

    def outcome(self) -> ImageOutcome:
        """This entry as a result: what a dry run reports, and what a sync reports for images it did not
        need to fetch."""
        return ImageOutcome(
            reference=self.name,
            status=self.status,
            source_digest=self.root.digest if self.root else None,
            error=self.error,
            failure=self.failure,
            referrers=list(self.referrers),
        )


def parallel(function: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``function`` over ``items`` on up to ``workers`` threads, results in input order."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="plan") as pool:
        return list(pool.map(function, items))


def spec_selection(config: MirrorConfig, spec: ImageSpec) -> PlatformSelection:
    """The platform selection of ``spec``: its own settings, else the config's defaults."""
    platforms = spec.platforms if spec.platforms is not None else config.platforms
    all_metadata = spec.all_metadata if spec.all_metadata is not None else config.all_metadata
    return PlatformSelection(platforms=platforms, all_metadata=all_metadata)


def config_requests(
    config: MirrorConfig, registry: Registry, workers: int | None = None
) -> tuple[list[ImageRequest], list[PlannedImage]]:
    """Every image ``config`` asks for, listing tags (in parallel) only for specs whose selectors need them.

    A spec whose tag list cannot be read becomes one failed entry named by its source.
    """

    def expand(entry: tuple[int, ImageSpec]) -> list[ImageRequest] | PlannedImage:
        position, spec = entry
        repository = parse_reference(spec.source)
        selection = spec_selection(config, spec)
        referrers = ReferrerSelection.of(spec.referrer_setting(config))
        try:
            available = registry.tags(repository) if spec.lists_tags else []
        except OcimirrorError as error:
            return PlannedImage(
                request=ImageRequest(reference=repository, selection=selection, spec=position),
                status="failed",
                error=describe_error(error),
                failure=ErrorDetail.of(error),
            )
        references = [repository.with_tag(tag) for tag in select_tags(spec, available)]
        untagged = Reference(registry=repository.registry, repository=repository.repository)
        references += [untagged.with_digest(digest) for digest in spec.digests]
        return [
            ImageRequest(reference=reference, selection=selection, referrers=referrers, spec=position)
            for reference in references
        ]

    requests: list[ImageRequest] = []
    failed: list[PlannedImage] = []
    for expanded in parallel(expand, list(enumerate(config.images)), workers or config.concurrency):
        if isinstance(expanded, PlannedImage):
            failed.append(expanded)
        else:
            requests.extend(expanded)
    return _unique(requests), failed


def _unique(requests: Iterable[ImageRequest]) -> list[ImageRequest]:
    """One request per recorded name: two specs naming the same tag would race for one index.json entry."""
    return list({request.name: request for request in requests}.values())


def plan(
    requests: Sequence[ImageRequest],
    registry: Registry,
    store: LayoutStore,
    workers: int = 8,
    refresh: bool = False,
) -> list[PlannedImage]:
    """Resolve every request (in parallel) and compare it with the store; results keep the input order.

    With ``refresh``, an image already tagged at the same digest is planned anyway: its tree is walked
    again (existence checks, no transfer of what is present), so the result describes every blob.

    An image that asks for referrers has them discovered here, for each of its manifests and indexes
    (``ocimirror.referrers``): the plan lists them, the engine fetches their trees with the image's, and an
    image whose referrers are not all recorded in the store is not up to date (a new signature is news).
    """

    def plan_one(request: ImageRequest) -> PlannedImage:
        try:
            root = registry.resolve(request.reference)
            referrers = _referrers(registry, request, root)
        except OcimirrorError as error:
            return PlannedImage(
                request=request, status="failed", error=describe_error(error), failure=ErrorDetail.of(error)
            )
        current = (
            not refresh
            and is_current(store, request.name, root, request.selection)
            and referrers_recorded(store, request.reference.name, referrers)
        )
        status: Literal["planned", "up-to-date"] = "up-to-date" if current else "planned"
        return PlannedImage(request=request, status=status, root=root, referrers=tuple(referrers))

    return parallel(plan_one, _unique(requests), workers)


def _referrers(registry: Registry, request: ImageRequest, root: Descriptor) -> list[Referrer]:
    """The referrers of the image under ``root`` that ``request`` asks for (none unless it asks)."""
    if request.referrers is None:
        return []
    source = request.reference.with_digest(root.digest)
    subjects = image_documents(registry.fetcher(source), root, request.selection.keep)
    return find_referrers(registry, source, subjects, request.referrers)


def referrers_recorded(store: LayoutStore, repository: str, referrers: Sequence[Referrer]) -> bool:
    """Whether every one of ``referrers`` of ``repository`` is recorded in ``store`` already."""
    if not referrers:
        return True
    recorded = recorded_referrers(store)
    return all((repository, r.subject, r.descriptor.digest) in recorded for r in referrers)


def plan_config(config: MirrorConfig, registry: Registry, store: LayoutStore) -> list[PlannedImage]:
    """The whole plan of a mirror config: failed tag listings first, then every resolved reference."""
    requests, failed = config_requests(config, registry)
    return failed + plan(requests, registry, store, config.concurrency)


def is_current(store: LayoutStore, name: str, root: Descriptor, selection: PlatformSelection) -> bool:
    """Whether the store already has ``name`` mirrored from ``root`` with the same selection.

    Tags are written only after their whole tree is committed, so the tag is the completeness record;
    ``ocimirror verify`` is what re-checks the blobs themselves.
    """
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
