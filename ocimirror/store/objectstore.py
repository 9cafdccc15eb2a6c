"""What the object-store backends share (S3 in ``s3.py``, GCS in ``gcs.py``, through s3fs and gcsfs).

Object stores have no rename, so a blob cannot be written aside and moved into place as on local disk.
Instead a blob streams straight to its final key ``blobs/<alg>/<hex>`` as a multipart (S3) or resumable
(GCS) upload while it is hashed; the upload is completed only once size and digest check, and aborted
otherwise. An object appears only when its upload completes, so nothing unverified is ever visible, and an
aborted upload leaves neither an object nor an incomplete multipart upload behind.

Memory stays flat in blob size: at most one part (``PART_SIZE``) is buffered before it is sent. A blob
that fits in one part is sent whole, in one request, at commit.

``index.json`` is shared by every writer of the store, on any machine, so it is replaced with a
conditional write against the version that was read, and the read-modify-write is retried when another
writer got there first. The loop is here; each backend supplies the versioned read and the conditional
write of its service.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.dircache import DirCache

from ..content import Status
from ..descriptor import Descriptor
from ..digest import Verifier, blob_path
from ..errors import AlreadyExists, StoreError, TransientError
from .backend import AbandonedIngest, Mutation

#: Bytes buffered before a part is uploaded. S3 needs at least 5 MiB per part but the last; GCS needs
#: multiples of 256 KiB; 8 MiB satisfies both and keeps ~1250 parts under S3's 10 000 for a 10 GB layer.
PART_SIZE = 8 * 2**20

#: How often ``update`` re-reads and retries after losing a race, and the backoff between tries.
UPDATE_ATTEMPTS = 50
UPDATE_BACKOFF_FIRST = 0.02
UPDATE_BACKOFF_MAX = 1.0


class VersionConflict(Exception):
    """The object changed (or appeared, or vanished) since it was read: read it again and retry."""


class _OpenIngests:
    """The blob writers open in this process, per store (whatever store object opened them).

    Statuses are read from here. A second writer of a ref waits until the first one ends, and then usually
    finds the blob committed, as on local disk; processes do not coordinate, which is safe because two
    verified uploads of one digest leave the same object.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: dict[tuple[Hashable, str], ObjectBlobWriter | None] = {}

    def claim(self, store: Hashable, ref: str) -> None:
        """Wait until no writer of ``ref`` is open in ``store``, then reserve ``ref``."""
        with self._changed:
            self._changed.wait_for(lambda: (store, ref) not in self._open)
            self._open[(store, ref)] = None

    def attach(self, store: Hashable, ref: str, writer: ObjectBlobWriter) -> None:
        with self._changed:
            self._open[(store, ref)] = writer

    def release(self, store: Hashable, ref: str) -> None:
        with self._changed:
            self._open.pop((store, ref), None)
            self._changed.notify_all()

    def writers(self, store: Hashable) -> list[ObjectBlobWriter]:
        with self._changed:
            return [writer for (owner, _), writer in self._open.items() if owner == store and writer is not None]


_INGESTS = _OpenIngests()


class _SinglePut:
    """A blob that fits in one part: kept in memory (at most ``PART_SIZE``) and sent in one request on
    ``complete``. Nothing reaches the service before, so aborting only drops the buffer."""

    def __init__(self, fs: AbstractFileSystem, key: str, exclusive: bool) -> None:
        self._fs = fs
        self._key = key
        self._exclusive = exclusive
        self._buffer = bytearray()

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk

    def complete(self) -> None:
        if self._exclusive:
            self._fs.pipe_file(self._key, bytes(self._buffer), mode="create")
        else:
            self._fs.pipe_file(self._key, bytes(self._buffer))

    def abort(self) -> None:
        self._buffer = bytearray()


class _PartUpload:
    """A larger blob: an S3 multipart or GCS resumable upload through the fsspec file, one part buffered."""

    def __init__(self, fs: AbstractFileSystem, key: str, exclusive: bool) -> None:
        # autocommit=False: the fsspec file never completes the upload on its own (not on close, not when
        # garbage collected); only ``complete`` does, after verification.
        self._file = fs.open(key, "xb" if exclusive else "wb", block_size=PART_SIZE, autocommit=False)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def complete(self) -> None:
        self._file.flush(force=True)
        self._file.commit()
        self._file.close()

    def abort(self) -> None:
        """Abort the multipart upload (S3) or cancel the resumable session (GCS)."""
        try:
            self._file.discard()
        finally:
            # Closed by hand: fsspec's close() would flush the buffer, starting an upload that nobody ends.
            self._file.closed = True


class ObjectBlobWriter:
    """Streams one blob to its final key, hashing as it goes; completes the upload only if it verifies.

    Always end with ``commit`` or ``close``: ``close`` without a successful ``commit`` aborts the upload.
    """

    def __init__(self, backend: ObjectStoreBackend, ref: str, descriptor: Descriptor, replace: bool = False) -> None:
        self.ref = ref
        self.descriptor = descriptor
        self._backend = backend
        self._verifier = Verifier(descriptor.digest, descriptor.size)
        key = backend.key(blob_path(descriptor.digest))
        # Most blobs of an image (manifests, configs, small layers) fit in one part: one request instead
        # of the three (S3) or two (GCS) requests of an upload session.
        upload = _SinglePut if descriptor.size <= PART_SIZE else _PartUpload
        self._upload = upload(backend.fs, key, backend.exclusive_create and not replace)
        self._finished = False
        self.started_at = self.updated_at = datetime.now(UTC)

    @property
    def offset(self) -> int:
        """Bytes written so far; an object store upload cannot be resumed by another writer, so it starts at 0."""
        return self._verifier.offset

    def write(self, chunk: bytes) -> None:
        """Hash and buffer ``chunk``; a full part is uploaded as it fills."""
        if self._finished:
            raise StoreError(f"ingest {self.ref} is already committed or closed")
        self._verifier.update(chunk)
        self._upload.write(chunk)
        self.updated_at = datetime.now(UTC)

    def commit(self) -> None:
        """Complete the upload if size and digest match; otherwise abort it and raise."""
        if self._finished:
            raise StoreError(f"ingest {self.ref} is already committed or closed")
        try:
            self._verifier.verify()
            self._upload.complete()
        except FileExistsError:
            # Another writer (another process or machine) completed the same digest first: its object is
            # the very same verified content, and it stays the one commit of it.
            self._upload.abort()
            raise AlreadyExists(f"{self.descriptor.digest} was committed by another writer meanwhile") from None
        except BaseException:
            self._upload.abort()
            raise
        finally:
            self._finish()

    def close(self) -> None:
        """Abort the upload unless it was committed: nothing of it stays visible or billed."""
        if not self._finished:
            try:
                self._upload.abort()
            finally:
                self._finish()

    def status(self) -> Status:
        """Where this ingest stands."""
        return Status(
            ref=self.ref,
            offset=self.offset,
            total=self.descriptor.size,
            expected=self.descriptor.digest,
            started_at=self.started_at,
            updated_at=self.updated_at,
        )

    def _finish(self) -> None:
        self._finished = True
        self._backend.forget(self)


class ObjectStoreBackend(ABC):
    """What S3 and GCS share: keys under the root, blob writers and their statuses, and a read-modify-write
    loop over a conditional write that each service provides."""

    #: Whether a blob upload completes only if its key is still absent (S3's ``If-None-Match: *``), so that
    #: of two machines uploading the same blob at once exactly one commits it and the other finds it there.
    exclusive_create = False

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        # Other processes and machines write the same bucket, so a cached listing goes stale unseen: fsspec
        # would then report a blob committed elsewhere as absent (or a removed one as present). Listings are
        # rare in a store (verify, ls), so they are not cached at all, for every user of this fs instance.
        fs.dircache = DirCache(use_listings_cache=False)
        self.fs = fs
        self.root = fs._strip_protocol(root).rstrip("/")
        # fsspec filesystems compare and hash by their options, so every store object opened on the same
        # URL and options in this process meets the same open writers.
        self._store_id: Hashable = (fs, self.root)

    def key(self, path: str) -> str:
        """The object key (``bucket/prefix/path``) of a path inside the store."""
        return f"{self.root}/{path}"

    def blob_writer(self, ref: str, descriptor: Descriptor, replace: bool = False) -> ObjectBlobWriter:
        """A writer streaming ``descriptor``'s blob to its final key, visible only after a verified commit.

        Waits while another writer of ``ref`` is open in this process. Raises ``AlreadyExists`` if the blob
        is committed (one HEAD or metadata GET); a blob of the wrong size counts as absent and is rewritten.
        With ``replace`` a committed blob is overwritten too: the completed upload replaces the object whole.
        Otherwise, where the service can (``exclusive_create``), the upload completes only if the key is still
        absent; if another process or machine committed the digest meanwhile, ``commit`` raises
        ``AlreadyExists`` (as containerd's ``Commit`` does) and that first object stays the one commit.
        """
        key = self.key(blob_path(descriptor.digest))
        _INGESTS.claim(self._store_id, ref)
        try:
            size = self.committed_size(key)
            if not replace and size == descriptor.size:
                raise AlreadyExists(f"{descriptor.digest} is already committed")
            # An object of the wrong size is damage to overwrite; only an absent key is created exclusively.
            writer = ObjectBlobWriter(self, ref, descriptor, replace=replace or size is not None)
        except BaseException:
            _INGESTS.release(self._store_id, ref)
            raise
        _INGESTS.attach(self._store_id, ref, writer)
        return writer

    def forget(self, writer: ObjectBlobWriter) -> None:
        """Drop a finished writer from the statuses and let the next writer of its ref go on."""
        _INGESTS.release(self._store_id, writer.ref)

    def statuses(self) -> list[Status]:
        """The uploads open in this process under the store.

        An upload in flight cannot be resumed by another process, so other processes' uploads are not listed.
        """
        return [writer.status() for writer in _INGESTS.writers(self._store_id)]

    def update(self, path: str, mutate: Mutation) -> bytes:
        """Replace ``path`` with ``mutate(current)`` only if nobody changed it in between; else re-read and retry.

        ``mutate`` may run several times and must depend only on its argument.
        """
        key = self.key(path)
        for attempt in range(UPDATE_ATTEMPTS):
            try:
                return self._update_once(key, mutate)
            except VersionConflict:
                delay = min(UPDATE_BACKOFF_MAX, UPDATE_BACKOFF_FIRST * 2**attempt)
                time.sleep(delay * random.uniform(0.5, 1.5))
        raise TransientError(f"{key}: still changing under concurrent writers after {UPDATE_ATTEMPTS} attempts")

    def _update_once(self, key: str, mutate: Mutation) -> bytes:
        current, version = self.read_versioned(key)
        content = mutate(current)
        if content != current:
            self.write_if_version(key, content, version)
        return content

    @abstractmethod
    def abandoned_ingests(self, cutoff: datetime) -> list[AbandonedIngest]:
        """Uploads begun under the store before ``cutoff`` and neither completed nor aborted. Writers in
        this process abort theirs; only a killed process leaves one behind."""

    @abstractmethod
    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        """Abort an abandoned upload."""

    @abstractmethod
    def committed_size(self, key: str) -> int | None:
        """The size of the object at ``key`` asked of the service itself, ``None`` if there is none."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, Any]:
        """The object's content and a version token for ``write_if_version``; ``(None, None)`` if absent."""

    @abstractmethod
    def write_if_version(self, key: str, content: bytes, version: Any) -> None:
        """Write ``content`` only if the object is still at ``version`` (absent if ``None``), else raise
        ``VersionConflict``."""
