"""Which part of an image to mirror: all platforms, some, or metadata for all and layers for some.

A selection is turned into a children handler, so the same choice drives the fetch, the tag that is
written afterwards, and ``verify``'s idea of what a complete image is. The choice is recorded in the
store's ``index.json`` entry (annotations below) so it can be read back.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from . import mediatypes
from .content import Fetcher
from .descriptor import Descriptor
from .errors import NotFound
from .handlers import Handler, children_handler, filter_manifest_by_platform
from .platforms import any_of, format_platform, only, parse_platform

#: index.json entry annotations written by ocimirror next to the OCI and containerd ref names.
SOURCE_DIGEST_ANNOTATION = "io.ocimirror.source.digest"
PLATFORMS_ANNOTATION = "io.ocimirror.platforms"
ALL_METADATA_ANNOTATION = "io.ocimirror.all-metadata"


class PlatformSelection(BaseModel):
    """``platforms`` empty: everything. Otherwise, for each requested platform, the best matching manifest
    of every index (containerd's fallbacks apply: ``linux/arm/v7`` takes ``v6`` if there is no ``v7``)
    together with the attestations that describe it. With ``all_metadata``, every manifest and config is
    kept (the index digest stays the source's) and only layers are limited to the platforms asked for."""

    model_config = ConfigDict(frozen=True)

    platforms: tuple[str, ...] = ()
    all_metadata: bool = False

    @field_validator("platforms", mode="before")
    @classmethod
    def _normalise(cls, value: Sequence[str]) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        return tuple(dict.fromkeys(format_platform(parse_platform(p)) for p in value))

    @property
    def rewrites_index(self) -> bool:
        """Whether a selected image is stored under a new, filtered index rather than the source's."""
        return bool(self.platforms) and not self.all_metadata

    def select(self, index: Descriptor, children: Sequence[Descriptor]) -> list[Descriptor]:
        """The children of ``index`` this selection keeps, in index order.

        Children without a platform are kept (containerd's ``FilterPlatforms``). Nothing matching any
        requested platform is ``NotFound``, naming them.
        """
        if not self.platforms or self.all_metadata:
            return list(children)
        candidates = [child for child in children if child.platform is not None and not child.is_attestation_manifest]
        chosen: set[str] = set()
        for platform in self.platforms:
            best = only(platform).best([child.platform for child in candidates if child.platform is not None])
            if best is not None:
                chosen.add(candidates[best].digest)
        if not chosen:
            raise NotFound(f"{index.digest}: no manifest for platform {', '.join(self.platforms)}")
        return [
            child
            for child in children
            if child.digest in chosen
            or (child.platform is None and not child.is_attestation_manifest)
            or (child.is_attestation_manifest and _attested_digest(child) in chosen)
        ]

    def keep(self, parent: Descriptor, children: Sequence[Descriptor]) -> list[Descriptor]:
        """The children of ``parent`` this selection keeps: the chosen manifests under an index; with
        ``all_metadata``, only the config under a manifest of another platform."""
        if not self.platforms:
            return list(children)
        if self.all_metadata:
            return list(filter_manifest_by_platform(lambda _: children, any_of(self.platforms))(parent))
        if mediatypes.is_index(parent.media_type):
            return self.select(parent, children)
        return list(children)

    def children_handler(self, provider: Fetcher) -> Handler:
        """The children handler for this selection, reading documents from ``provider``."""
        children = children_handler(provider)
        return lambda descriptor: self.keep(descriptor, children(descriptor))

    def annotations(self, source: Descriptor) -> dict[str, str]:
        """What the store's index.json entry records about this selection and its source."""
        recorded = {SOURCE_DIGEST_ANNOTATION: source.digest}
        if self.platforms:
            recorded[PLATFORMS_ANNOTATION] = ",".join(self.platforms)
        if self.all_metadata:
            recorded[ALL_METADATA_ANNOTATION] = "true"
        return recorded

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None) -> PlatformSelection:
        """The selection an index.json entry was mirrored with (everything, for entries of other tools)."""
        annotations = annotations or {}
        platforms = [p for p in annotations.get(PLATFORMS_ANNOTATION, "").split(",") if p]
        return cls(platforms=platforms, all_metadata=annotations.get(ALL_METADATA_ANNOTATION) == "true")


def _attested_digest(attestation: Descriptor) -> str | None:
    return (attestation.annotations or {}).get(mediatypes.ATTESTATION_REFERENCE_DIGEST)
