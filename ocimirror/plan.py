"""Choosing tags: from an ImageSpec and a registry's tag list to the references to mirror."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import InvalidVersion, Version

from .config import ImageSpec, compile_pattern


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
