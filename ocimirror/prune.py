"""Retention: which images of a mirrored repository a sync no longer selects, and untagging them.

A sync records each image under its full name (``registry/repo:tag``, or ``registry/repo@digest`` for a
``digests:`` selector; see ``ocimirror.pull.recorded_name``). With ``prune: true`` for a source, the names of
that source's repository that the sync did not select this time (a ``latest: 5`` window that moved on, a tag
deleted upstream, a digest taken out of the config) are untagged after the sync succeeded. Only the tags
go: the blobs stay until ``ocimirror gc`` finds nothing reaching them.

Only names that a sync of this exact repository writes are candidates: another repository's names (also
``registry/repo-other`` or ``registry/repo/sub``), names in any other form (written by other tools) and
entries without a name are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .errors import InvalidReference
from .pull import recorded_name
from .remotes.reference import parse_reference
from .store.layout import LayoutStore, ref_name

if TYPE_CHECKING:
    from .config import MirrorConfig
    from .plan import PlannedImage
    from .report import ImageOutcome


def repository_of(source: str) -> str:
    """The normalised ``registry/repository`` of a source (``alpine`` -> ``docker.io/library/alpine``); any
    tag or digest in ``source`` is ignored."""
    return parse_reference(source).name


def recorded_repository(name: str) -> str | None:
    """The repository an ``index.json`` name was recorded for by a sync, or ``None`` when ``name`` is not in
    the exact form a sync writes (so it is not a sync's to remove)."""
    try:
        reference = parse_reference(name)
    except InvalidReference:
        return None
    if reference.tag is not None and reference.digest is not None:
        return None  # a sync records either the tag or the digest, never both
    return reference.name if recorded_name(reference) == name else None


def prune_candidates(store: LayoutStore, source: str, selected: Iterable[str]) -> list[str]:
    """The names recorded for ``source``'s repository in ``store`` that are not in ``selected`` (the recorded
    names the sync chose, as ``recorded_name`` makes them), in ``index.json`` order.

    Digest-named entries (``repo@sha256:...``) are candidates like tags: they were recorded because the
    config listed the digest, so a config that no longer lists it no longer wants them. ``selected`` names of
    other repositories are allowed and ignored.
    """
    repository = repository_of(source)
    keep = set(selected)
    candidates: list[str] = []
    for entry in store.images():
        name = ref_name(entry)
        if name is not None and name not in keep and recorded_repository(name) == repository:
            candidates.append(name)
    return list(dict.fromkeys(candidates))


def prune(store: LayoutStore, names: Iterable[str]) -> list[str]:
    """Untag ``names`` in one ``index.json`` update; return those removed. A name already gone (another sync
    or ``rm`` removed it meanwhile) is skipped, not an error: it is what was wanted."""
    return store.untag(*names, missing_ok=True)


class PrunePlan(BaseModel):
    """What a sync untags for one config entry with ``prune``, once every image it selected is mirrored:
    an entry whose tag listing or any image failed prunes nothing (a failed plan selects too little)."""

    source: str
    names: list[str]
    requires: list[str]


def plan_prunes(config: MirrorConfig, planned: Sequence[PlannedImage], store: LayoutStore) -> list[PrunePlan]:
    """The prune plan of every config entry with ``prune`` whose planning succeeded."""
    plans = []
    for position, spec in enumerate(config.images):
        if not spec.prunes(config):
            continue
        selected = [image for image in planned if image.request.spec == position]
        if any(image.status == "failed" for image in selected):
            continue
        names = prune_candidates(store, spec.source, [image.name for image in selected])
        if names:
            plans.append(PrunePlan(source=spec.source, names=names, requires=[image.name for image in selected]))
    return plans


def apply_prunes(store: LayoutStore, plans: Sequence[PrunePlan], outcomes: Sequence[ImageOutcome]) -> list[str]:
    """Untag what ``plans`` name where every image the plan requires is now mirrored; the names removed."""
    mirrored = {outcome.reference for outcome in outcomes if outcome.status in ("fetched", "up-to-date")}
    names = [name for plan in plans if set(plan.requires) <= mirrored for name in plan.names]
    return prune(store, names) if names else []
