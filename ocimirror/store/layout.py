"""An OCI image layout used as a content store: a Provider and Ingester over any Backend.

The layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``) is what skopeo, umoci and containerd read,
so a store is usable by those tools as it is. Reads are plain fsspec calls; everything that writes goes
through the backend, which knows how to make a blob visible only once verified and how to update
``index.json`` without losing a concurrent writer's entry.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fsspec import AbstractFileSystem
from pydantic import ValidationError

from .. import mediatypes
from ..content import Status, Writer
from ..descriptor import Descriptor
from ..digest import ALGORITHMS, blob_path
from ..errors import InvalidManifest, InvalidReference, NotFound, StoreError, validation_problems
from ..jsonlimits import decode_json
from ..manifest import Index, encode_document
from .backend import Backend
from .files import LOCAL_CHUNK_SIZE, file_size, modified_at, protocols, read_range

if TYPE_CHECKING:
    from .lease import Lease

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
#: The annotations naming a tagged image in ``index.json``: the OCI one and the one containerd reads.
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_USERINFO = re.compile(r"//[^/@]*@")
_UNPRINTABLE = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BlobEntry:
    """A file under ``blobs/``: ``<alg>:<name>`` (unvalidated), its size and when it was committed."""

    name: str
    size: int
    committed_at: datetime


def redact_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, fit for logs and reprs."""
    return _USERINFO.sub("//", url, count=1)


def _summarise(error: ValidationError) -> str:
    return "; ".join(validation_problems(error, 3))


def decode_index(content: bytes | None, where: str) -> Index:
    """Parse ``index.json`` (``None`` means absent: an empty index); a corrupt file is a ``StoreError``.

    The file is never reset silently: it may be the only record of what the store holds.
    """
    if content is None:
        return Index(schema_version=2, media_type=mediatypes.OCI_INDEX, manifests=[])
    try:
        body = decode_json(content)
        if not isinstance(body, dict):
            raise StoreError(f"{where} is corrupt: not a JSON object")
        index = Index.model_validate(body)
    except ValidationError as error:
        raise StoreError(f"{where} is corrupt: {_summarise(error)}") from None
    except ValueError as error:
        raise StoreError(f"{where} is corrupt: {error}") from None
    if index.media_type not in (None, mediatypes.OCI_INDEX):
        raise StoreError(f"{where} is corrupt: mediaType {index.media_type!r} is not {mediatypes.OCI_INDEX}")
    return index


def ref_name(descriptor: Descriptor) -> str | None:
    """The reference an ``index.json`` entry is tagged with, if any."""
    return (descriptor.annotations or {}).get(REF_NAME)


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference or _UNPRINTABLE.search(reference):
        raise InvalidReference(f"invalid reference {reference!r}: must be non-empty without spaces or controls")


def _check_layout(content: bytes, where: str) -> None:
    try:
        version = decode_json(content).get("imageLayoutVersion")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str) or not version.startswith("1."):
        raise StoreError(f"{where} does not declare an OCI image layout 1.x: {content[:100]!r}")


def _tagged(index: Index, reference: str, entry: Descriptor) -> Index:
    """``index`` with ``entry`` as the one entry for ``reference``, replacing any in place."""
    manifests: list[Descriptor] = []
    placed = False
    for existing in index.manifests:
        if ref_name(existing) != reference:
            manifests.append(existing)
        elif not placed:
            manifests.append(entry)
            placed = True
    if not placed:
        manifests.append(entry)
    return index.model_copy(update={"manifests": manifests, "media_type": mediatypes.OCI_INDEX})


class ReplacingIngester:
    """An Ingester whose writers replace committed blobs, each only once its new content verifies."""

    def __init__(self, store: LayoutStore) -> None:
        self._store = store

    def writer(self, ref: str, descriptor: Descriptor) -> Writer:
        return self._store.writer(ref, descriptor, replace=True)

    def statuses(self) -> list[Status]:
        return self._store.statuses()


class LayoutStore:
    """A content store in an OCI image layout; implements ``Provider`` and ``Ingester``.

    One store holds many repositories: blobs are shared by digest, images are ``index.json`` entries named
    by their full reference. The repr shows the URL only, never storage options (they may hold secrets).
    """

    def __init__(self, backend: Backend, url: str, chunk_size: int = LOCAL_CHUNK_SIZE) -> None:
        self.backend = backend
        self.url = redact_url(url)
        self.chunk_size = chunk_size
        self._layout_ready = False
        self._on_local_disk = "file" in protocols(backend.fs)

    def __repr__(self) -> str:
        return f"LayoutStore({self.url!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def fs(self) -> AbstractFileSystem:
        return self.backend.fs

    def _path(self, relative: str) -> str:
        return posixpath.join(self.backend.root, relative)

    def _where(self, relative: str) -> str:
        return f"{self.url.rstrip('/')}/{relative}"

    def _read(self, relative: str) -> bytes | None:
        """The small file ``relative`` (``index.json``, ``oci-layout``); ``None`` if absent.

        On local disk a shared store may hold a planted link to ``/dev/zero`` or a FIFO there, which would
        never finish reading: only a regular file is read, anything else is a ``StoreError``.
        """
        path = self._path(relative)
        if self._on_local_disk and file_size(self.fs, path) is None:
            try:
                mode = os.lstat(path).st_mode  # again: another writer may have created it since
            except FileNotFoundError:
                return None
            if not stat.S_ISREG(mode):
                raise StoreError(f"{self._where(relative)} is not a regular file (a link, FIFO or device)")
        try:
            content: bytes = self.fs.cat_file(path)
            return content
        except FileNotFoundError:
            return None

    # Provider

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Generator[bytes, None, None]:
        """Stream the committed content of ``descriptor`` from ``offset``, never past its declared size."""
        path = self._path(blob_path(descriptor.digest))
        if not 0 <= offset <= descriptor.size:
            raise ValueError(f"offset {offset} is outside {descriptor.digest} of {descriptor.size} bytes")
        if file_size(self.fs, path) is None:
            raise NotFound(f"{descriptor.digest} is not in {self}")
        return read_range(self.fs, path, offset, descriptor.size, self.chunk_size)

    def exists(self, descriptor: Descriptor) -> bool:
        """Whether the blob is committed with the declared size (one stat); a blob of the wrong size counts
        as absent, so writing it again repairs it."""
        return file_size(self.fs, self._path(blob_path(descriptor.digest))) == descriptor.size

    def info(self, digest: str) -> int:
        """The size of a committed blob; ``NotFound`` if absent."""
        size = file_size(self.fs, self._path(blob_path(digest)))
        if size is None:
            raise NotFound(f"{digest} is not in {self}")
        return size

    def blobs(self) -> Iterator[str]:
        """``<alg>:<name>`` for every file under ``blobs/<alg>/``, unvalidated, so ``verify`` can flag strays."""
        for entry in self.blob_entries():
            yield entry.name

    def blob_entries(self) -> Iterator[BlobEntry]:
        """Every file under ``blobs/<alg>/`` with its size and commit time, from one listing per algorithm
        (paginated by the filesystem: linear in the number of blobs)."""
        for algorithm in sorted(ALGORITHMS):
            try:
                entries: list[dict[str, Any]] = self._list_fresh(self._path(f"blobs/{algorithm}"))
            except FileNotFoundError:
                continue
            files = sorted((entry for entry in entries if entry.get("type") == "file"), key=lambda e: e["name"])
            for entry in files:
                yield BlobEntry(
                    name=f"{algorithm}:{posixpath.basename(entry['name'])}",
                    size=int(entry.get("size") or 0),
                    committed_at=modified_at(entry),
                )

    def delete_blobs(self, names: Sequence[str]) -> None:
        """Delete the blobs listed as ``names`` (``<alg>:<name>`` from ``blob_entries``), in batches where the
        filesystem has them (S3: 1000 keys per request, GCS: 100); blobs already gone are skipped."""
        paths = []
        for name in names:
            algorithm, _, base = name.partition(":")
            if algorithm not in ALGORITHMS or not base or "/" in base or base in {".", ".."}:
                raise StoreError(f"refusing to delete {name!r}: not a blob name listed from {self}")
            paths.append(self._path(f"blobs/{algorithm}/{base}"))
        if not paths:
            return
        try:
            self.fs.rm(paths)
        except FileNotFoundError:  # some were gone (another gc): local and memory stop at the first one
            for path in paths:
                with suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def lease(self) -> AbstractContextManager[Lease]:
        """Hold a write lease (see ``ocimirror.store.lease``) around anything that commits blobs and tags
        them: ``gc`` then never deletes what this writer committed or found present but has not tagged.
        Call ``ensure_held(lease, store)`` right before tagging."""
        from .lease import write_lease

        return write_lease(self)

    def _list_fresh(self, path: str) -> list[dict[str, object]]:
        """List ``path`` without trusting or keeping a cached listing (s3fs and gcsfs cache them): a kept
        listing would make later stats miss blobs that other writers commit."""
        self.fs.invalidate_cache(path)
        try:
            entries: list[dict[str, object]] = self.fs.ls(path, detail=True)
            return entries
        finally:
            self.fs.invalidate_cache(path)

    # Ingester

    def writer(self, ref: str, descriptor: Descriptor, replace: bool = False) -> Writer:
        """Open or resume the ingest ``ref``; ``AlreadyExists`` if the content is committed, unless
        ``replace`` (repair): then the verified content replaces the committed blob atomically."""
        blob_path(descriptor.digest)
        self._ensure_layout()
        return self.backend.blob_writer(ref, descriptor, replace)

    def statuses(self) -> list[Status]:
        """Every ingest in progress."""
        return self.backend.statuses()

    def replacing(self) -> ReplacingIngester:
        """This store as an Ingester that overwrites committed content: the repair path for a blob whose
        bytes are damaged (it has the right size, so the ordinary writer calls it present)."""
        return ReplacingIngester(self)

    # index.json

    def images(self) -> list[Descriptor]:
        """The entries of ``index.json``, in file order."""
        return list(decode_index(self._read(INDEX_FILE), self._where(INDEX_FILE)).manifests)

    def resolve(self, reference: str) -> Descriptor:
        """The entry tagged ``reference``; ``NotFound`` if there is none."""
        for entry in self.images():
            if ref_name(entry) == reference:
                return entry
        raise NotFound(f"{reference} is not tagged in {self}")

    def tag(self, reference: str, descriptor: Descriptor, annotations: dict[str, str] | None = None) -> None:
        """Name ``descriptor`` ``reference`` in ``index.json``, replacing the entry of that name if any.

        The content must already be committed (the caller commits the children first), so a tag never
        points at an incomplete image.
        """
        _check_reference(reference)
        if not mediatypes.is_document(descriptor.media_type):
            raise InvalidManifest(f"cannot tag {reference}: {descriptor.media_type} is not a manifest or index")
        if not self.exists(descriptor):
            raise NotFound(f"cannot tag {reference}: {descriptor.digest} is not in {self}")
        entry = descriptor.model_copy(
            update={
                "annotations": {
                    **(descriptor.annotations or {}),
                    **(annotations or {}),
                    REF_NAME: reference,
                    CONTAINERD_NAME: reference,
                }
            }
        )
        self._update_index(lambda index: _tagged(index, reference, entry))

    def record(self, entries: Sequence[Descriptor], key: Callable[[Descriptor], object]) -> None:
        """Add ``entries`` (without ref names: referrers) to ``index.json`` in one update, each replacing the
        entries with the same ``key`` (a ``key`` of ``None`` matches nothing). Like :meth:`tag`, only for
        content already committed."""
        for entry in entries:
            if not mediatypes.is_document(entry.media_type) or not self.exists(entry):
                raise NotFound(f"cannot record {entry.digest}: not a manifest or index committed in {self}")
        keys = {key(entry) for entry in entries} - {None}

        def added(index: Index) -> Index:
            kept = [existing for existing in index.manifests if key(existing) is None or key(existing) not in keys]
            return index.model_copy(update={"manifests": kept + list(entries), "media_type": mediatypes.OCI_INDEX})

        self._update_index(added)

    def untag(self, *references: str, missing_ok: bool = False) -> list[str]:
        """Remove the entries tagged ``references`` in one ``index.json`` update (their blobs stay until
        ``gc``); return the names removed.

        Unless ``missing_ok``, a name that is not tagged raises ``NotFound`` naming every such name, and
        nothing is removed: a typo never leaves half of a command done.
        """
        wanted = set(references)
        removed: list[str] = []

        def without(index: Index) -> Index:
            present = {ref_name(entry) for entry in index.manifests}
            missing = [name for name in dict.fromkeys(references) if name not in present]
            if missing and not missing_ok:
                raise NotFound(f"not tagged in {self}: {', '.join(missing)}")
            kept = [entry for entry in index.manifests if ref_name(entry) not in wanted]
            removed[:] = [name for name in dict.fromkeys(references) if name in present]
            return index.model_copy(update={"manifests": kept})

        if wanted:
            self._update_index(without)
        return removed

    def _update_index(self, change: Callable[[Index], Index]) -> None:
        self._ensure_layout()
        where = self._where(INDEX_FILE)
        self.backend.update(INDEX_FILE, lambda current: encode_document(change(decode_index(current, where))))

    def check_layout(self) -> None:
        """Raise ``NotFound`` unless the store has an ``oci-layout`` of version 1.x.

        Readers call this first: a mistyped path reads like an empty store otherwise, and "nothing is
        wrong" must not be the answer for a store that is not there.
        """
        layout = self._read(OCI_LAYOUT_FILE)
        if layout is None:
            raise NotFound(f"{self} is not an OCI image layout: it has no {OCI_LAYOUT_FILE} file")
        _check_layout(layout, self._where(OCI_LAYOUT_FILE))

    def _ensure_layout(self) -> None:
        """Create ``oci-layout`` and an empty ``index.json`` if missing; refuse a layout of another version."""
        if self._layout_ready:
            return
        layout = self._read(OCI_LAYOUT_FILE)
        if layout is None:
            default = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
            layout = self.backend.update(OCI_LAYOUT_FILE, lambda current: current or default)
        _check_layout(layout, self._where(OCI_LAYOUT_FILE))
        if file_size(self.fs, self._path(INDEX_FILE)) is None:
            empty = encode_document(decode_index(None, ""))
            self.backend.update(INDEX_FILE, lambda current: empty if current is None else current)
        self._layout_ready = True
