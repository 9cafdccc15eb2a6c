"""Resumable, verified ingests for filesystems that can rename: the part of a store that local disk and
memory share (object stores, which cannot rename cheaply, stream to the final key instead).

An ingest for ref ``R`` lives in ``ingest/<sha256(R)>/``: ``data`` (the bytes so far) and ``status.json``
(ref, expected digest, total, timestamps). Hashing the ref keeps arbitrary ref strings out of paths. The
writer holds the lock ``ingest/<sha256(R)>.lock`` from open to commit or close, so two writers of one ref
take turns, and the second finds the blob committed. A blob becomes visible only by ``publish`` (an atomic
rename) after its size and digest are verified, as in containerd's local content store.

Whatever is already under ``ingest/`` is untrusted (anyone who can write to a shared store can plant a file
there): it is read and written only through the backend's ``read_small``, ``open_data``, ``write_small``,
``make_directory`` and ``remove_directory``, which on local disk never follow a symbolic link, so a planted
link can neither redirect a write outside the store nor be committed as a blob.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, ExitStack, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import BinaryIO

from fsspec import AbstractFileSystem
from pydantic import ValidationError

from ..content import Status
from ..descriptor import Descriptor
from ..digest import Verifier, blob_path
from ..errors import AlreadyExists, DigestMismatch, SizeMismatch, StoreError
from .backend import AbandonedIngest, Mutation
from .files import file_size, modified_at, read_range
from .locks import index_lock_timeout

INGEST_DIR = "ingest"
_DATA = "data"
_STATUS = "status.json"
#: Seconds between progress timestamps written while an ingest is being written.
_STATUS_INTERVAL = 1.0
#: A ``status.json`` is ~300 bytes; anything much larger was not written by ocimirror and is not read.
MAX_STATUS_SIZE = 64 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def ingest_name(ref: str) -> str:
    """The directory name of the ingest for ``ref``."""
    return hashlib.sha256(ref.encode()).hexdigest()


class IngestBackend(ABC):
    """A Backend for filesystems with an atomic rename; subclasses say how to lock and how to publish."""

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"

    def path(self, relative: str) -> str:
        """The absolute path of ``relative`` inside the store."""
        return posixpath.join(self.root, relative)

    @abstractmethod
    def lock(self, path: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """An exclusive lock named ``path``, shared by every writer that can reach this store; it may be
        entered in one thread and left in another. Waiting longer than ``timeout`` seconds (``None``: no
        bound) raises ``StoreError`` naming the lock."""

    @abstractmethod
    def publish(self, source: str, target: str) -> None:
        """Move the finished file ``source`` to ``target`` atomically (replacing it) and durably."""

    # Access to the ingest area. These defaults suit filesystems without links (memory); LocalBackend
    # overrides them so that no planted link is ever followed.

    def read_small(self, path: str, limit: int) -> bytes | None:
        """The content of the regular file ``path``, or ``None`` if there is none or it is over ``limit``."""
        if file_size(self.fs, path) is None:
            return None
        try:
            content: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return content if len(content) <= limit else None

    def write_small(self, path: str, content: bytes) -> None:
        """Replace the content of the file ``path`` inside an ingest directory this writer made."""
        self.fs.pipe_file(path, content)

    def open_data(self, path: str, fresh: bool) -> BinaryIO:
        """Open the ingest's data file for appending: ``fresh`` creates it and fails if anything is there;
        otherwise it must exist as a regular file (``StoreError`` if not)."""
        if not fresh and file_size(self.fs, path) is None:
            raise StoreError(f"{path} is not a regular file")
        file: BinaryIO = self.fs.open(path, "xb" if fresh else "ab")
        return file

    def make_directory(self, path: str) -> None:
        """Create the directory ``path`` (and its parents) inside the store."""
        self.fs.makedirs(path, exist_ok=True)

    def remove_directory(self, path: str) -> None:
        """Remove ``path`` and everything under it, if present."""
        with suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def blob_writer(self, ref: str, descriptor: Descriptor, replace: bool = False) -> IngestWriter:
        """Open or resume the ingest of ``ref``, waiting while another writer holds it.

        Raises ``AlreadyExists`` if the blob is committed, also when it was committed while waiting, unless
        ``replace``: then the verified content is renamed over the committed file.
        """
        target = self.path(blob_path(descriptor.digest))
        if not replace:
            self._refuse_committed(target, descriptor)
        directory = self.path(f"{INGEST_DIR}/{ingest_name(ref)}")
        held = ExitStack()
        held.enter_context(self.lock(f"{directory}.lock"))
        try:
            if not replace:
                self._refuse_committed(target, descriptor)  # the writer we waited for may have committed it
            return IngestWriter(self, ref, descriptor, directory, target, held)
        except BaseException:
            held.close()
            raise

    def _refuse_committed(self, target: str, descriptor: Descriptor) -> None:
        # A blob of another size is not the content asked for: it is overwritten, which repairs it.
        if file_size(self.fs, target) == descriptor.size:
            raise AlreadyExists(f"{descriptor.digest} is already committed")

    def statuses(self) -> list[Status]:
        """Every ingest with a readable status; ones finishing while listed are skipped."""
        try:
            entries = self.fs.ls(self.path(INGEST_DIR), detail=True)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            if entry.get("type") != "directory":
                continue
            directory = entry["name"]
            content = self.read_small(f"{directory}/{_STATUS}", MAX_STATUS_SIZE)
            try:
                status = Status.model_validate_json(content or b"")
                offset = file_size(self.fs, f"{directory}/{_DATA}")
            except (FileNotFoundError, ValidationError):
                continue
            if offset is not None:
                found.append(status.model_copy(update={"offset": offset}))
        return sorted(found, key=lambda status: status.ref)

    def abandoned_ingests(self, cutoff: datetime) -> list[AbandonedIngest]:
        """Ingest directories whose newest file is older than ``cutoff``, lock files left by killed writers
        (the kernel released their lock), and ``index.json`` temporaries a crash left in the root."""
        found: list[AbandonedIngest] = []
        with suppress(FileNotFoundError):
            for entry in self.fs.ls(self.path(INGEST_DIR), detail=True):
                if entry.get("type") == "directory":
                    files = self.fs.ls(entry["name"], detail=True)
                    times = [modified_at(item) for item in files] or [modified_at(entry)]
                    size = sum(int(item.get("size") or 0) for item in files if item["name"].endswith(f"/{_DATA}"))
                    found.append(AbandonedIngest(entry["name"], size, max(times)))
                elif entry["name"].endswith(".lock"):
                    found.append(AbandonedIngest(entry["name"], 0, modified_at(entry)))
        for entry in self.fs.ls(self.root, detail=True):
            if entry.get("type") == "file" and entry["name"].endswith(".tmp"):
                found.append(AbandonedIngest(entry["name"], int(entry.get("size") or 0), modified_at(entry)))
        return [ingest for ingest in found if ingest.updated_at < cutoff]

    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        with suppress(FileNotFoundError):
            self.fs.rm(ingest.path, recursive=True)
        return True

    def update(self, path: str, mutate: Mutation) -> bytes:
        """Read-modify-write ``path`` under its lock; ``mutate`` raising leaves the file untouched."""
        target = self.path(path)
        with self.lock(f"{target}.lock", timeout=index_lock_timeout()):
            try:
                current: bytes | None = self.fs.cat_file(target)
            except FileNotFoundError:
                current = None
            content = mutate(current)
            self.write_atomic(target, content)
        return content

    def write_atomic(self, target: str, content: bytes) -> None:
        """Replace ``target`` with ``content`` so readers see the old or the new file, never a mix."""
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        temporary = f"{target}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(temporary, content)
        try:
            self.publish(temporary, target)
        except BaseException:
            with suppress(FileNotFoundError):
                self.fs.rm_file(temporary)
            raise


class IngestWriter:
    """An open ingest: appends, hashes as it goes, and publishes the blob only once verified.

    ``close`` without ``commit`` keeps what was written for the next writer of the same ref. A size or
    digest mismatch discards the ingest: content known to be wrong is never resumed.
    """

    def __init__(
        self,
        backend: IngestBackend,
        ref: str,
        descriptor: Descriptor,
        directory: str,
        target: str,
        held: ExitStack,
    ) -> None:
        self._backend = backend
        self._fs = backend.fs
        self.ref = ref
        self.descriptor = descriptor
        self._directory = directory
        self._data = f"{directory}/{_DATA}"
        self._target = target
        self._held = held
        self._verifier = Verifier(descriptor.digest, descriptor.size)
        self._file: BinaryIO
        self._started_at = self._resume() or self._restart()
        self._status_written = time.monotonic()
        self._closed = False

    @property
    def offset(self) -> int:
        """Bytes written so far, including any resumed from an earlier writer."""
        return self._verifier.offset

    def _resume(self) -> datetime | None:
        """Re-hash an earlier ingest of the same content and open it for appending; ``None`` if there is
        none worth keeping (also when its files are not regular files inside the store)."""
        content = self._backend.read_small(f"{self._directory}/{_STATUS}", MAX_STATUS_SIZE)
        if content is None:
            return None
        try:
            status = Status.model_validate_json(content)
        except ValidationError:
            return None
        if (status.ref, status.expected, status.total) != (self.ref, self.descriptor.digest, self.descriptor.size):
            return None
        existing = file_size(self._fs, self._data)
        if existing is None or existing > self.descriptor.size:
            return None
        for chunk in read_range(self._fs, self._data, 0, existing):
            self._verifier.update(chunk)
        if self._verifier.offset != existing:
            return None
        try:
            self._file = self._backend.open_data(self._data, fresh=False)
        except StoreError:  # replaced by something else since it was hashed
            return None
        return status.started_at

    def _restart(self) -> datetime:
        """Start the ingest afresh, dropping whatever an earlier writer left."""
        self._verifier = Verifier(self.descriptor.digest, self.descriptor.size)
        self._backend.remove_directory(self._directory)
        self._backend.make_directory(self._directory)
        self._file = self._backend.open_data(self._data, fresh=True)
        started_at = _now()
        self._write_status(started_at)
        return started_at

    def _write_status(self, started_at: datetime) -> None:
        status = Status(
            ref=self.ref,
            offset=self._verifier.offset,
            total=self.descriptor.size,
            expected=self.descriptor.digest,
            started_at=started_at,
            updated_at=_now(),
        )
        self._backend.write_small(f"{self._directory}/{_STATUS}", status.model_dump_json().encode())
        self._status_written = time.monotonic()

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; content growing past the declared size raises ``SizeMismatch`` and is discarded."""
        self._ensure_open()
        try:
            self._verifier.update(chunk)
        except SizeMismatch:
            self._discard()
            raise
        try:
            self._file.write(chunk)
            # Flushed per chunk: statuses show real progress and a killed process leaves a resumable file.
            self._file.flush()
        except BaseException:
            # The hash has counted bytes the file may lack; the next writer re-hashes what is really there.
            self.close()
            raise
        if time.monotonic() - self._status_written >= _STATUS_INTERVAL:
            self._write_status(self._started_at)

    def commit(self) -> None:
        """Verify size and digest, then publish the blob; a mismatch discards the ingest and raises."""
        self._ensure_open()
        try:
            self._verifier.verify()
        except (SizeMismatch, DigestMismatch):
            self._discard()
            raise
        try:
            self._file.close()
            self._backend.publish(self._data, self._target)
            self._backend.remove_directory(self._directory)
        finally:
            self._finish()

    def close(self) -> None:
        """Release the ingest without committing, keeping what was written; does nothing once finished."""
        if self._closed:
            return
        try:
            self._file.close()
            self._write_status(self._started_at)
        finally:
            self._finish()

    def _ensure_open(self) -> None:
        if self._closed:
            raise StoreError(f"the ingest of {self.ref} is already committed or closed")

    def _discard(self) -> None:
        try:
            self._file.close()
            self._backend.remove_directory(self._directory)
        finally:
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        self._held.close()

    def __enter__(self) -> IngestWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
