"""Reading stored blobs for clients: only regular files inside the store, in bounded chunks, by byte range.

On local disk every component under the store root is opened with ``O_NOFOLLOW`` relative to the directory
before it, so a ``blobs/sha256/<hex>`` that is a symlink (to ``/etc/passwd``, say), or a ``blobs`` directory
that is one, is never followed, and anything but a regular file (a FIFO, a device) is refused: the store
serves what it holds, nothing else on the machine. Object stores and memory have no links; their blobs are
read in ranged requests through the store's fsspec filesystem.

Memory per response is one chunk: the next chunk is read only once the previous one was handed to the
connection (which applies back-pressure from slow clients).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from typing import Protocol

from ..digest import Verifier, blob_path
from ..errors import NotFound
from ..store import LayoutStore
from ..store.files import file_size, protocols

#: Bytes per read: local reads are cheap, object store reads are requests (fewer, larger ones).
LOCAL_CHUNK_SIZE = 512 * 1024
REMOTE_CHUNK_SIZE = 2 * 1024 * 1024

#: At most 20 digits each: beyond any size, and below Python's limit on converting digit strings to int.
_RANGE = re.compile(r"bytes=(\d{0,20})-(\d{0,20})", re.ASCII)


class BlobReader(Protocol):
    """An open blob: its size and positioned reads. Close it when done."""

    size: int
    chunk_size: int

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at the end of the file."""
        ...

    def close(self) -> None: ...


class _LocalBlob:
    def __init__(self, descriptor: int, size: int) -> None:
        self._descriptor = descriptor
        self.size = size
        self.chunk_size = LOCAL_CHUNK_SIZE

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._descriptor, length, offset)

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


class _FsspecBlob:
    def __init__(self, store: LayoutStore, path: str, size: int) -> None:
        self._fs = store.fs
        self._path = path
        self.size = size
        self.chunk_size = REMOTE_CHUNK_SIZE if not protocols(store.fs) & {"memory"} else LOCAL_CHUNK_SIZE

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._fs.cat_file(self._path, start=offset, end=min(self.size, offset + length)))

    def close(self) -> None:
        pass


def open_blob(store: LayoutStore, digest: str) -> BlobReader:
    """Open the committed blob ``digest`` (validated by ``blob_path``); ``NotFound`` if the store has no
    regular file for it. Blocking: call from a worker thread."""
    relative = blob_path(digest)
    if "file" in protocols(store.fs):
        return _open_local(store.backend.root, relative, digest)
    path = f"{store.backend.root.rstrip('/')}/{relative}"
    size = file_size(store.fs, path)
    if size is None:
        raise NotFound(f"{digest} is not stored")
    return _FsspecBlob(store, path, size)


def _open_local(root: str, relative: str, digest: str) -> BlobReader:
    *directories, name = relative.split("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    parent = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for directory in directories:
            child = os.open(directory, flags | os.O_DIRECTORY, dir_fd=parent)
            os.close(parent)
            parent = child
        # O_NONBLOCK: opening a FIFO planted in the store must not wait for a writer.
        descriptor = os.open(name, flags | os.O_NONBLOCK, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise NotFound(f"{digest} is not stored as a regular file") from None
        raise
    finally:
        os.close(parent)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise NotFound(f"{digest} is not stored as a regular file")
    return _LocalBlob(descriptor, info.st_size)


def read_verified(store: LayoutStore, digest: str, size: int) -> bytes:
    """The whole content of a small blob (a manifest), read as :func:`open_blob` reads and checked against
    ``digest`` and ``size``: ``DigestMismatch``/``SizeMismatch`` for damaged content. Blocking."""
    reader = open_blob(store, digest)
    try:
        verifier = Verifier(digest, size)
        parts = []
        while verifier.offset < size and (chunk := reader.read(verifier.offset, reader.chunk_size)):
            verifier.update(chunk)
            parts.append(chunk)
        verifier.verify()
        return b"".join(parts)
    finally:
        reader.close()


@dataclass(frozen=True)
class ByteRange:
    """``start`` to ``end`` (exclusive) of a blob of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


class RangeNotSatisfiable(Exception):
    """The ``Range`` asks only for bytes past the end of the blob (answered with 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks for, or ``None`` to send the whole blob.

    As RFC 9110 allows, a header that is malformed, or asks for several ranges, is ignored (the whole blob
    is sent); a range starting at or past the end raises ``RangeNotSatisfiable``.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None
    elif last:
        start, end = max(size - int(last), 0), size
        if int(last) == 0:
            raise RangeNotSatisfiable(header)
    else:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, end, size)
