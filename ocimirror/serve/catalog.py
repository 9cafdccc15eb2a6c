"""What each stored repository holds: its tags, and every manifest and blob its images reach.

Serving a digest under a name is scoped as distribution scopes it: ``/v2/<name>/blobs/<digest>`` answers only
for content of an image stored under that name. The answer comes from a :class:`Catalog`, built by walking
every tagged image from ``index.json`` down to its layers (manifests read as the API serves them: regular
files inside the store only, verified). Building reads manifests, so it happens once per
change of ``index.json`` (a stat per request notices the change; object stores are asked at most once per
``refresh_interval``), not per request. Manifests are content-addressed and verified when read, so their
children are remembered across rebuilds: after a sync only the new manifests are read.

A corrupt ``index.json`` (or one nested too deep to parse) makes the catalog unavailable: requests get a
500 and the reason is logged once per version of the file. A manifest that is missing or does not parse is a
leaf (its own digest is served, so clients see the same failure they would see from the source).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import mediatypes
from ..descriptor import Descriptor
from ..errors import DocumentTooLarge, OcimirrorError
from ..manifest import Index, encode_document, parse_document
from ..referrers import SUBJECT_ANNOTATION, TAG_ANNOTATION, entry_key, is_referrer_entry, schema_tag, served_descriptor
from ..remotes.reference import is_tag
from ..store import LayoutStore
from ..store.files import protocols
from ..store.layout import INDEX_FILE, ref_name
from .blobs import read_verified

log = logging.getLogger(__name__)

#: How often an object store is asked whether ``index.json`` changed (each ask is a request).
OBJECT_STORE_REFRESH_SECONDS = 1.0


class Node(NamedTuple):
    """What serving needs of a descriptor in an image tree: its digest, media type and size."""

    digest: str
    media_type: str
    size: int

    @classmethod
    def of(cls, descriptor: Descriptor) -> Node:
        return cls(descriptor.digest, sys.intern(descriptor.media_type), descriptor.size)


@dataclass(frozen=True)
class Repository:
    """One stored repository: tag -> root, and what its images reach.

    ``documents`` are the manifests and indexes (served from ``/manifests/``); ``blobs`` is every digest
    reached, documents included (distribution serves manifests from ``/blobs/`` too). ``referrers`` lists,
    by subject digest, the stored referrers that carry a ``subject`` (what the referrers API answers);
    ``generated`` holds the tag schema's indexes of those (served under ``sha256-<hex>`` tags, made here,
    not stored), by digest. Referrers found under cosign's tags are served under those tags.
    """

    tags: Mapping[str, Node]
    documents: Mapping[str, Node]
    blobs: frozenset[str]
    referrers: Mapping[str, tuple[Descriptor, ...]] = field(default_factory=dict)
    generated: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    """Every stored repository by its stored name (``docker.io/library/alpine``)."""

    repositories: Mapping[str, Repository] = field(default_factory=dict)


class CatalogUnavailable(OcimirrorError):
    """The store's ``index.json`` cannot be read or parsed; the message is for the server's log only."""


def split_ref_name(name: str) -> tuple[str, str | None] | None:
    """``registry/repo:tag`` -> ``(registry/repo, tag)``; ``registry/repo@digest`` -> ``(registry/repo, None)``."""
    if "@" in name:
        repository = name.partition("@")[0]
        return (repository, None) if repository else None
    repository, sep, tag = name.rpartition(":")
    if not sep or not repository or "/" in tag:
        return None
    return repository, tag


class CatalogSource:
    """The current :class:`Catalog` of a store, rebuilt when ``index.json`` changes. Thread-safe; blocking
    (call it from a worker thread)."""

    def __init__(self, store: LayoutStore, refresh_interval: float | None = None) -> None:
        self._store = store
        self._index_path = store.backend.root.rstrip("/") + "/" + INDEX_FILE
        if refresh_interval is None:
            local = protocols(store.fs) & {"file", "memory"}
            refresh_interval = 0.0 if local else OBJECT_STORE_REFRESH_SECONDS
        self._refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._version: object = None
        self._checked_at = float("-inf")
        self._catalog: Catalog | None = None
        self._failure: str | None = None
        #: digest -> children of verified documents; content-addressed, so valid forever.
        self._children: dict[str, tuple[Node, ...]] = {}

    def current(self) -> Catalog:
        """The catalog for the store as it is now; ``CatalogUnavailable`` if ``index.json`` is unusable."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= self._refresh_interval:
                version = self._index_version()
                if version != self._version or (self._catalog is None and self._failure is None):
                    self._rebuild(version)
                self._checked_at = now  # not before: a store error retries at the next request
            if self._catalog is None:
                raise CatalogUnavailable(self._failure or "index.json is unusable")
            return self._catalog

    def _index_version(self) -> object:
        """What identifies this version of ``index.json`` (inode, mtime, size; ETag or generation)."""
        self._store.fs.invalidate_cache(self._index_path)
        try:
            info = self._store.fs.info(self._index_path)
        except FileNotFoundError:
            return None
        return tuple(sorted((key, repr(value)) for key, value in info.items() if key != "name"))

    def _rebuild(self, version: object) -> None:
        try:
            entries = self._store.images()
        except (OcimirrorError, RecursionError) as error:
            # Logged once per version of the file; OSError (a store that does not answer) propagates, and
            # the next request tries again.
            self._version, self._catalog = version, None
            self._failure = f"{INDEX_FILE} of {self._store} is unusable: {_reason(error)}"
            log.error("%s", self._failure)
            return
        self._catalog = self._build(entries)
        self._version, self._failure = version, None

    def _build(self, entries: list[Descriptor]) -> Catalog:
        roots: dict[str, list[tuple[str | None, Descriptor]]] = {}
        for entry in entries:
            key = entry_key(entry)
            if key is not None:  # a referrer: its tree belongs to the repository it was mirrored from
                if key[0]:
                    tag = (entry.annotations or {}).get(TAG_ANNOTATION)
                    roots.setdefault(key[0], []).append((tag if tag and is_tag(tag) else None, entry))
                continue
            split = split_ref_name(ref_name(entry) or "")
            if split is None:
                continue
            repository, tag = split
            roots.setdefault(repository, []).append((tag, entry))
        catalog = Catalog({name: self._repository(tagged) for name, tagged in roots.items()})
        # Forget documents no image reaches any more (untagged, collected): the cache follows the store.
        reached = {digest for repository in catalog.repositories.values() for digest in repository.documents}
        self._children = {digest: nodes for digest, nodes in self._children.items() if digest in reached}
        return catalog

    def _repository(self, tagged: list[tuple[str | None, Descriptor]]) -> Repository:
        tags: dict[str, Node] = {}
        documents: dict[str, Node] = {}
        blobs: set[str] = set()
        pending: list[Node] = []
        referrers: dict[str, dict[str, Descriptor]] = {}
        for tag, entry in tagged:
            node = Node.of(entry)
            if not mediatypes.is_document(node.media_type):
                continue  # tag() refuses these; a hand-edited index.json may still hold one
            if tag is not None and is_referrer_entry(entry):
                tags.setdefault(tag, node)  # a cosign tag; an image tagged with the same name wins
            elif tag is not None:
                tags[tag] = node
            elif is_referrer_entry(entry):
                subject = (entry.annotations or {})[SUBJECT_ANNOTATION]
                referrers.setdefault(subject, {})[entry.digest] = served_descriptor(entry)
            pending.append(node)
        while pending:
            node = pending.pop()
            if node.digest in blobs:
                continue
            blobs.add(node.digest)
            if mediatypes.is_document(node.media_type):
                documents[node.digest] = node
                pending.extend(self._children_of(node))
        listed = {subject: tuple(sorted(found.values(), key=_digest)) for subject, found in referrers.items()}
        generated: dict[str, bytes] = {}
        for subject, descriptors in listed.items():
            tag = schema_tag(subject)
            if tag in tags:
                continue  # a real tag of that name wins
            content = referrers_index(descriptors)
            node = Node.of(Descriptor.from_bytes(mediatypes.OCI_INDEX, content))
            tags[tag] = documents[node.digest] = node
            generated[node.digest] = content
        return Repository(tags, documents, frozenset(blobs), listed, generated)

    def _children_of(self, node: Node) -> tuple[Node, ...]:
        children = self._children.get(node.digest)
        if children is not None:
            return children
        try:
            if node.size > mediatypes.MAX_DOCUMENT_SIZE:
                raise DocumentTooLarge(f"{node.size} bytes, over the {mediatypes.MAX_DOCUMENT_SIZE} byte limit")
            document = parse_document(node.media_type, read_verified(self._store, node.digest, node.size))
        except (OcimirrorError, RecursionError) as error:
            log.warning("%s in %s is served as a leaf: %s", node.digest, self._store, _reason(error))
            return ()
        children = tuple(Node.of(child) for child in document.children())
        self._children[node.digest] = children
        return children


def _digest(descriptor: Descriptor) -> str:
    return descriptor.digest


def referrers_index(descriptors: Sequence[Descriptor]) -> bytes:
    """The OCI index listing ``descriptors``: the referrers API's answer and the tag schema's document."""
    return encode_document(Index(schema_version=2, media_type=mediatypes.OCI_INDEX, manifests=list(descriptors)))


def _reason(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply to parse"
    return str(error)
