"""OCI 1.1 referrers: the signatures, SBOMs and attestations whose ``subject`` is an image's manifest.

*Discovery* asks the registry, for each manifest and index of an image (its *subjects*):

- the referrers API, ``GET /v2/<name>/referrers/<digest>`` (every ``Link`` page, bounded; one
  ``artifactType`` asked for when only one is wanted, and filtered here anyway unless the registry says
  ``OCI-Filters-Applied: artifactType``);
- where that answers 404 (distribution 2.x), the tag schema: the tag ``sha256-<hex>`` holding an index of
  the referrers;
- cosign's legacy tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom``, which predate ``subject``: the tag's
  name is the only link, and they carry cosign's OCI 1.1 artifact types (``COSIGN_ARTIFACT_TYPES``).

A listing is only a claim: every referrer named by the API or the tag schema is read (verified, at most
4 MiB) and kept only if its own ``subject`` is the subject it was listed for; anything else (another
subject, no such manifest, a body that does not hash to its digest or does not parse) is logged and
ignored, never stored. An error of the registry itself (5xx, 401, a listing that is not an index, endless
pages) fails the image's plan: what its referrers are is then unknown.

Referrers can have referrers (a signature of an SBOM): they are followed to ``MAX_REFERRER_DEPTH`` levels,
each digest a subject once, so a cycle (possible through mutable cosign tags) ends.

*Storage*: each referrer is an ``index.json`` entry of its own, without a ref name (it is not a tag), with
annotations naming its subject, the repository it belongs to and the cosign tag it was found under, if any
(``SUBJECT_ANNOTATION``...). Every reader finds them there without a registry: ``ls`` counts them, ``verify``
checks them, ``gc`` keeps their trees, ``serve`` answers the referrers API and the tag schema from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from . import mediatypes
from .content import Fetcher, read_document
from .descriptor import Descriptor
from .errors import DigestMismatch, InvalidManifest, NotFound, PermanentError, SizeMismatch
from .manifest import Index, Manifest
from .mediatypes import MediaType
from .remotes import Registry
from .remotes.reference import Reference
from .store import LayoutStore

log = logging.getLogger(__name__)

#: index.json annotations of a stored referrer: the digest it refers to, the repository it was mirrored
#: from (``registry/repo``, where ``serve`` answers for it) and the cosign tag it was found under.
SUBJECT_ANNOTATION = "io.ocimirror.referrer.subject"
REPOSITORY_ANNOTATION = "io.ocimirror.referrer.repository"
TAG_ANNOTATION = "io.ocimirror.referrer.tag"
_OWN_ANNOTATIONS = (SUBJECT_ANNOTATION, REPOSITORY_ANNOTATION, TAG_ANNOTATION)

#: cosign's legacy tag suffixes and the artifact types cosign gives the same artifacts in OCI 1.1 mode.
COSIGN_ARTIFACT_TYPES = {
    ".sig": "application/vnd.dev.cosign.artifact.sig.v1+json",
    ".att": "application/vnd.dev.cosign.artifact.att.v1+json",
    ".sbom": "application/vnd.dev.cosign.artifact.sbom.v1+json",
}
#: Levels of referrers followed: referrers of the image, of those referrers, and so on.
MAX_REFERRER_DEPTH = 3
#: Most referrers of one image: beyond it the registry is flooding, and the image fails with a clear error.
MAX_REFERRERS = 1000

#: The children of a document an image keeps (``PlatformSelection.keep``).
Keep = Callable[[Descriptor, Sequence[Descriptor]], list[Descriptor]]


class ReferrerSelection(BaseModel):
    """Which referrers to mirror: every one (``artifact_types`` empty) or those of the listed types."""

    model_config = ConfigDict(frozen=True)

    artifact_types: tuple[MediaType, ...] = ()

    @field_validator("artifact_types", mode="before")
    @classmethod
    def _unique(cls, value: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys([value] if isinstance(value, str) else value))

    @classmethod
    def of(cls, setting: bool | Sequence[str] | None) -> ReferrerSelection | None:
        """The selection a config or command line setting asks for: ``True`` every type, a list of types
        those, ``False``, ``None`` or an empty list none."""
        if setting is None or setting is False or (not isinstance(setting, bool) and not setting):
            return None
        return cls() if setting is True else cls(artifact_types=tuple(setting))

    def wants(self, artifact_type: str | None) -> bool:
        return not self.artifact_types or artifact_type in self.artifact_types


class Referrer(BaseModel):
    """One referrer found for an image: the manifest (or index) it is, with its ``artifactType`` and
    annotations, the digest of its subject, and the cosign tag it was found under (``None`` for a referrer
    with a ``subject``)."""

    model_config = ConfigDict(frozen=True)

    subject: str
    descriptor: Descriptor
    tag: str | None = None

    @property
    def artifact_type(self) -> str | None:
        return self.descriptor.artifact_type

    def entry(self, repository: str) -> Descriptor:
        """The ``index.json`` entry recording this referrer of ``repository``."""
        recorded = {SUBJECT_ANNOTATION: self.subject, REPOSITORY_ANNOTATION: repository}
        if self.tag:
            recorded[TAG_ANNOTATION] = self.tag
        return self.descriptor.model_copy(
            update={"annotations": {**(self.descriptor.annotations or {}), **recorded}, "data": None}
        )


def schema_tag(digest: str) -> str:
    """The tag schema's name for the referrers of ``digest``: ``sha256-<hex>``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}"


def artifact_type_of(document: Manifest | Index) -> str | None:
    """A referrer's artifact type as the referrers API reports it: ``artifactType``, else a manifest's
    config media type."""
    if document.artifact_type:
        return document.artifact_type
    return document.config.media_type if isinstance(document, Manifest) else None


def discover_referrers(
    registry: Registry, reference: Reference, subject: Descriptor, selection: ReferrerSelection
) -> list[Referrer]:
    """The referrers of ``subject`` in ``reference``'s repository that ``selection`` wants: through the
    referrers API (or, where it answers 404, the tag schema), then cosign's legacy tags. Each referrer from
    the API or tag schema is read and kept only if its ``subject`` is ``subject``."""
    repository = Reference(registry=reference.registry, repository=reference.repository)
    fetcher = registry.fetcher(repository)
    wanted_type = selection.artifact_types[0] if len(selection.artifact_types) == 1 else None
    try:
        listed, filtered = registry.referrers(repository, subject.digest, wanted_type)
    except PermanentError as error:
        if not _no_referrers_api(error):
            raise
        listed, filtered = _schema_listing(registry, fetcher, repository, subject), False
    found: list[Referrer] = []
    for candidate in dict((d.digest, d) for d in listed).values():
        if not filtered and candidate.artifact_type is not None and not selection.wants(candidate.artifact_type):
            continue  # a listing's type is a hint that saves a read; the manifest's own type decides below
        referrer = _checked(fetcher, candidate, subject, repository)
        if referrer is not None and selection.wants(referrer.artifact_type):
            found.append(referrer)
    found += _cosign_referrers(registry, repository, subject, selection)
    return found


def _no_referrers_api(error: PermanentError) -> bool:
    """Whether a registry's refusal means it has no referrers API: 404 as the spec says, or (older
    registries) 405 or ``UNSUPPORTED``."""
    return isinstance(error, NotFound) or error.status == 405 or "UNSUPPORTED" in error.codes


def _schema_listing(
    registry: Registry, fetcher: Fetcher, repository: Reference, subject: Descriptor
) -> list[Descriptor]:
    """The descriptors of the tag schema's index for ``subject`` (none when the tag does not exist)."""
    tag = schema_tag(subject.digest)
    try:
        descriptor = registry.resolve(repository.with_tag(tag))
    except NotFound:
        return []
    if not mediatypes.is_index(descriptor.media_type):
        log.warning("%s:%s is not an index of referrers (%s); ignored", repository.name, tag, descriptor.media_type)
        return []
    try:
        return read_document(fetcher, descriptor).children()
    except (InvalidManifest, DigestMismatch, SizeMismatch) as error:
        log.warning("%s:%s is not a usable index of referrers (%s); ignored", repository.name, tag, error)
        return []


def _checked(fetcher: Fetcher, candidate: Descriptor, subject: Descriptor, repository: Reference) -> Referrer | None:
    """``candidate`` as a referrer of ``subject`` if it is a manifest or index whose ``subject`` is
    ``subject``; ``None`` (logged) for anything else a registry lists."""
    where = f"{repository.name}@{candidate.digest}"
    if not mediatypes.is_document(candidate.media_type):
        what = candidate.media_type
        log.warning("%s listed as a referrer of %s is a %s, not a manifest; ignored", where, subject.digest, what)
        return None
    try:
        document = read_document(fetcher, candidate.model_copy(update={"data": None}))
    except (NotFound, InvalidManifest, DigestMismatch, SizeMismatch) as error:
        log.warning("%s listed as a referrer of %s cannot be used (%s); ignored", where, subject.digest, error)
        return None
    if document.subject is None or document.subject.digest != subject.digest:
        claimed = document.subject.digest if document.subject else "none"
        log.warning("%s listed as a referrer of %s has subject %s; ignored", where, subject.digest, claimed)
        return None
    descriptor = Descriptor(
        media_type=candidate.media_type,
        digest=candidate.digest,
        size=candidate.size,
        artifact_type=artifact_type_of(document),
        annotations=document.annotations or None,
    )
    return Referrer(subject=subject.digest, descriptor=descriptor)


def _cosign_referrers(
    registry: Registry, repository: Reference, subject: Descriptor, selection: ReferrerSelection
) -> list[Referrer]:
    found = []
    for suffix, artifact_type in COSIGN_ARTIFACT_TYPES.items():
        if not selection.wants(artifact_type):
            continue
        tag = schema_tag(subject.digest) + suffix
        try:
            resolved = registry.resolve(repository.with_tag(tag))
        except NotFound:
            continue
        descriptor = Descriptor(
            media_type=resolved.media_type, digest=resolved.digest, size=resolved.size, artifact_type=artifact_type
        )
        found.append(Referrer(subject=subject.digest, descriptor=descriptor, tag=tag))
    return found


def find_referrers(
    registry: Registry,
    reference: Reference,
    subjects: Iterable[Descriptor],
    selection: ReferrerSelection,
    max_depth: int = MAX_REFERRER_DEPTH,
) -> list[Referrer]:
    """Every referrer of ``subjects`` (an image's manifests and indexes) and, to ``max_depth`` levels, of
    those referrers. Each digest is asked about once; a referrer that is already a subject (a cycle) is
    dropped. More than ``MAX_REFERRERS`` is a ``PermanentError``."""
    level = list({subject.digest: subject for subject in subjects}.values())
    asked = {subject.digest for subject in level}
    found: list[Referrer] = []
    for _ in range(max_depth):
        following: list[Descriptor] = []
        for subject in level:
            for referrer in discover_referrers(registry, reference, subject, selection):
                if referrer.descriptor.digest in asked:
                    back = referrer.descriptor.digest
                    log.warning("%s lists %s as its referrer, a cycle; not followed", subject.digest, back)
                    continue
                asked.add(referrer.descriptor.digest)
                found.append(referrer)
                following.append(referrer.descriptor)
        if len(found) > MAX_REFERRERS:
            raise PermanentError(f"{reference.name}: more than {MAX_REFERRERS} referrers")
        if not following:
            break
        level = following
    return found


def image_documents(fetcher: Fetcher, root: Descriptor, keep: Keep) -> list[Descriptor]:
    """The manifests and indexes of the image under ``root`` that ``keep`` selects (indexes are read from
    ``fetcher``; manifests are leaves here): the subjects whose referrers belong to the image."""
    documents: list[Descriptor] = []
    pending = [root]
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        if descriptor.digest in seen or not mediatypes.is_document(descriptor.media_type):
            continue
        seen.add(descriptor.digest)
        documents.append(descriptor)
        if mediatypes.is_index(descriptor.media_type):
            children = read_document(fetcher, descriptor).children()
            pending.extend(reversed(keep(descriptor, children)))
    return documents


# -- the store side ------------------------------------------------------------------------------------


def is_referrer_entry(entry: Descriptor) -> bool:
    """Whether an ``index.json`` entry records a referrer (rather than a tagged image)."""
    return SUBJECT_ANNOTATION in (entry.annotations or {})


def entry_key(entry: Descriptor) -> tuple[str, str, str] | None:
    """What identifies a referrer entry: its repository, subject and digest (``None`` for other entries)."""
    annotations = entry.annotations or {}
    if SUBJECT_ANNOTATION not in annotations:
        return None
    return annotations.get(REPOSITORY_ANNOTATION, ""), annotations[SUBJECT_ANNOTATION], entry.digest


def record_referrers(store: LayoutStore, repository: str, referrers: Sequence[Referrer]) -> None:
    """Record ``referrers`` of ``repository`` in ``store``'s index.json (one update), each replacing its
    earlier entry; their trees must be committed already."""
    if referrers:
        store.record([referrer.entry(repository) for referrer in referrers], entry_key)


def recorded_referrers(store: LayoutStore) -> set[tuple[str, str, str]]:
    """The keys (repository, subject, digest) of every referrer entry in ``store``."""
    return {key for entry in store.images() if (key := entry_key(entry)) is not None}


def served_descriptor(entry: Descriptor) -> Descriptor:
    """A referrer entry as the referrers API lists it: without ocimirror's own annotations."""
    annotations = {k: v for k, v in (entry.annotations or {}).items() if k not in _OWN_ANNOTATIONS}
    return entry.model_copy(update={"annotations": annotations or None})


def referrer_name(entry: Descriptor) -> str | None:
    """``registry/repo@digest`` for a referrer entry: where it came from, a name ``repair`` can fetch from."""
    key = entry_key(entry)
    return f"{key[0]}@{entry.digest}" if key and key[0] else None


def describe_referrers(referrers: Sequence[Referrer]) -> str:
    """``2 referrer(s): application/vnd.example.sig, application/spdx+json``."""
    kinds = ", ".join(dict.fromkeys(r.artifact_type or "unknown" for r in referrers))
    return f"{len(referrers)} referrer(s): {kinds}"
