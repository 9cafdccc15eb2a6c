"""Checking a store and summarising its images: what ``ocimirror verify`` and ``ocimirror ls`` report.

Verification trusts nothing the store says about itself: every blob is re-hashed against its name, and
every tagged image and stored referrer is walked from its ``index.json`` entry down to the layers, so a
missing layer or a manifest that no longer parses is found before anyone pulls the image; a referrer must
also still name the subject it is recorded for.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from typing import Literal

from pydantic import BaseModel, computed_field

from . import mediatypes
from .content import read_blob, read_document
from .descriptor import Descriptor
from .digest import Verifier, validate_digest
from .errors import DigestMismatch, InvalidDigest, InvalidManifest, InvalidReference, NotFound, SizeMismatch
from .jsonlimits import decode_json
from .manifest import Index, Manifest
from .referrers import SUBJECT_ANNOTATION, TAG_ANNOTATION, entry_key, is_referrer_entry, referrer_name
from .remotes.reference import parse_reference
from .selection import SOURCE_DIGEST_ANNOTATION, PlatformSelection
from .store.layout import CONTAINERD_NAME, LayoutStore, ref_name

_OCTET_STREAM = "application/octet-stream"
CORRUPT_BLOB = "corrupt-blob"
MISSING_BLOB = "missing-blob"
INVALID_MANIFEST = "invalid-manifest"
FaultKind = Literal["corrupt-blob", "missing-blob", "invalid-manifest"]


class Fault(BaseModel):
    """One problem found: a blob whose content does not match its name, a blob an image needs but the store
    lacks, or a manifest or index that cannot be used."""

    kind: FaultKind
    digest: str
    detail: str
    reference: str | None = None

    def __str__(self) -> str:
        where = f" in {self.reference}" if self.reference else ""
        return f"{self.kind} {self.digest}{where}: {self.detail}"


class VerifyReport(BaseModel):
    """The outcome of ``verify_store``; ``ok`` only when no fault was found."""

    blobs_checked: int = 0
    bytes_checked: int = 0
    images_checked: int = 0
    faults: list[Fault] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.faults

    def summary(self) -> str:
        """One line for people: what was checked and how many faults were found."""
        return (
            f"{self.blobs_checked} blobs ({self.bytes_checked} bytes) re-hashed, "
            f"{self.images_checked} images checked, {len(self.faults)} faults"
        )


class ImageSummary(BaseModel):
    """One tagged image, as ``ocimirror ls`` lists it, with the number of referrers stored for it."""

    reference: str
    digest: str
    media_type: str
    platforms: list[str]
    size: int
    referrers: int = 0


def image_name(entry: Descriptor) -> str:
    """The name an entry is known by: its ref name; for a referrer, ``registry/repo@digest`` (where it was
    mirrored from); else its digest."""
    return ref_name(entry) or referrer_name(entry) or (entry.annotations or {}).get(CONTAINERD_NAME) or entry.digest


def rehash_blob(store: LayoutStore, name: str) -> tuple[int, Fault | None]:
    """Stream the blob stored as ``name`` (``<alg>:<hex>``) through its hash; return its size and any fault."""
    try:
        digest = validate_digest(name)
        size = store.info(digest)
    except InvalidDigest:
        return 0, Fault(kind=CORRUPT_BLOB, digest=name, detail="a file under blobs/ is not named by a valid digest")
    except NotFound:
        return 0, None  # removed while verifying
    verifier = Verifier(digest, size)
    with closing(store.fetch(Descriptor(media_type=_OCTET_STREAM, digest=digest, size=size))) as chunks:
        for chunk in chunks:
            verifier.update(chunk)
    try:
        verifier.verify()
    except (DigestMismatch, SizeMismatch) as error:
        return size, Fault(kind=CORRUPT_BLOB, digest=digest, detail=str(error))
    return size, None


def walk_image(
    store: LayoutStore,
    root: Descriptor,
    on_fault: Callable[[Fault], None],
    untrusted: frozenset[str] = frozenset(),
) -> list[Descriptor]:
    """Every distinct descriptor of the tree under ``root``, depth-first, reporting what is missing or
    unusable to ``on_fault``; documents whose digest is in ``untrusted`` (already found corrupt) are not
    descended into. The tree is the one the image was mirrored with: an image mirrored with
    ``all_metadata`` lacks other platforms' layers by design, and that is not a fault."""
    reference = image_name(root)
    selection = PlatformSelection.from_annotations(root.annotations)
    seen: set[str] = set()
    found: list[Descriptor] = []
    pending = [root]
    while pending:
        descriptor = pending.pop()
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        found.append(descriptor)
        if not store.exists(descriptor):
            detail = f"{descriptor.kind} ({descriptor.media_type}, {descriptor.size} bytes) is not in the store"
            on_fault(Fault(kind=MISSING_BLOB, digest=descriptor.digest, detail=detail, reference=reference))
            continue
        media_type = descriptor.media_type
        if descriptor.digest in untrusted or not (
            mediatypes.is_document(media_type) or mediatypes.is_schema1(media_type)
        ):
            continue
        try:
            document = read_document(store, descriptor)
        except (InvalidManifest, DigestMismatch, SizeMismatch) as error:
            on_fault(Fault(kind=INVALID_MANIFEST, digest=descriptor.digest, detail=str(error), reference=reference))
            continue
        pending.extend(reversed(selection.keep(descriptor, document.children())))
    return found


def verify_store(store: LayoutStore) -> VerifyReport:
    """Re-hash every blob (streamed) and check that every tagged image's tree is present and parses."""
    store.check_layout()
    report = VerifyReport()
    corrupt: set[str] = set()
    for name in store.blobs():
        size, fault = rehash_blob(store, name)
        report.blobs_checked += 1
        report.bytes_checked += size
        if fault is not None:
            report.faults.append(fault)
            corrupt.add(fault.digest)
    for entry in store.images():
        walk_image(store, entry, report.faults.append, frozenset(corrupt))
        if is_referrer_entry(entry) and entry.digest not in corrupt:
            report.faults += _referrer_faults(store, entry)
        report.images_checked += 1
    return report


def _referrer_faults(store: LayoutStore, entry: Descriptor) -> list[Fault]:
    """A stored referrer must still say it refers to the subject it is recorded for (cosign's tagged
    artifacts have no ``subject``: their tag was the link)."""
    annotations = entry.annotations or {}
    if TAG_ANNOTATION in annotations or not store.exists(entry):
        return []  # a missing referrer is reported by the walk
    try:
        document = read_document(store, entry)
    except (InvalidManifest, DigestMismatch, SizeMismatch):
        return []  # reported by the walk
    recorded = annotations[SUBJECT_ANNOTATION]
    if document.subject is not None and document.subject.digest == recorded:
        return []
    claimed = document.subject.digest if document.subject else "no subject"
    detail = f"recorded as a referrer of {recorded}, but its subject is {claimed}"
    return [Fault(kind=INVALID_MANIFEST, digest=entry.digest, detail=detail, reference=image_name(entry))]


def _config_platform(store: LayoutStore, manifest: Manifest) -> list[str]:
    try:
        config = decode_json(read_blob(store, manifest.config))
    except (NotFound, DigestMismatch, SizeMismatch, InvalidManifest, ValueError):
        return []
    if not isinstance(config, dict) or not config.get("os") or not config.get("architecture"):
        return []
    parts = [config["os"], config["architecture"]] + ([config["variant"]] if config.get("variant") else [])
    return ["/".join(str(part) for part in parts)]


def _platforms(store: LayoutStore, entry: Descriptor) -> list[str]:
    """Platforms from the index entry, else from the index's manifests, else from the image config."""
    if entry.platform is not None:
        return [str(entry.platform)]
    try:
        document = read_document(store, entry)
    except (NotFound, InvalidManifest, DigestMismatch, SizeMismatch):
        return []
    if isinstance(document, Index):
        listed = (
            str(child.platform)
            for child in document.manifests
            if child.platform is not None and not child.is_attestation_manifest
        )
        return list(dict.fromkeys(listed))
    return _config_platform(store, document)


def list_images(store: LayoutStore) -> list[ImageSummary]:
    """Each tagged image with its digest, media type, platforms, total size (distinct blobs of its tree,
    as declared; what is missing is for ``verify`` to report) and the number of its stored referrers
    (referrers of its manifests, and theirs); referrers are not listed as images."""
    store.check_layout()
    entries = store.images()
    referrers: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        key = entry_key(entry)
        if key is not None:
            referrers.setdefault((key[0], key[1]), []).append(entry.digest)
    summaries = []
    for entry in entries:
        if is_referrer_entry(entry):
            continue
        tree = walk_image(store, entry, lambda fault: None)
        summaries.append(
            ImageSummary(
                reference=image_name(entry),
                digest=entry.digest,
                media_type=entry.media_type,
                platforms=_platforms(store, entry),
                size=sum(descriptor.size for descriptor in tree),
                referrers=_count_referrers(referrers, _repository(entry), _subjects(entry, tree)),
            )
        )
    return summaries


def _repository(entry: Descriptor) -> str:
    try:
        return parse_reference(ref_name(entry) or "").name
    except InvalidReference:
        return ""


def _subjects(entry: Descriptor, tree: list[Descriptor]) -> list[str]:
    """The digests an image's referrers may refer to: its tree's, and the source index a platform-filtered
    image was made from."""
    source = (entry.annotations or {}).get(SOURCE_DIGEST_ANNOTATION)
    return [descriptor.digest for descriptor in tree] + ([source] if source else [])


def _count_referrers(referrers: dict[tuple[str, str], list[str]], repository: str, subjects: list[str]) -> int:
    """The referrers of ``subjects`` in ``repository`` and, transitively, theirs; each counted once."""
    found: set[str] = set()
    pending = list(subjects)
    while pending:
        for digest in referrers.get((repository, pending.pop()), []):
            if digest not in found:
                found.add(digest)
                pending.append(digest)
    return len(found)
