"""The content interfaces, after containerd's ``core/content``: who reads content and who stores it.

A ``Fetcher`` streams the bytes of a descriptor from somewhere (a registry, another store). A ``Provider``
is a Fetcher over committed content that can also say what it holds. An ``Ingester`` accepts new content
through a ``Writer`` that verifies size and digest before anything becomes visible. ``copy_content`` joins
the two, and is all a fetch handler needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from . import mediatypes
from .descriptor import Descriptor, ref_key
from .digest import Verifier
from .errors import AlreadyExists, DamagedContent, DigestMismatch, DocumentTooLarge, SizeMismatch
from .manifest import Index, Manifest, parse_document


class Status(BaseModel):
    """Progress of one ingest: how far ``ref`` has got towards ``total`` bytes."""

    ref: str
    offset: int
    total: int
    expected: str
    started_at: datetime
    updated_at: datetime


@runtime_checkable
class Fetcher(Protocol):
    """Streams the content of descriptors."""

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Iterator[bytes]:
        """Yield the content of ``descriptor`` from byte ``offset`` to its end.

        Never yields more than ``descriptor.size - offset`` bytes in total. The caller closes the iterator
        (``contextlib.closing``) to release the connection or file early.
        """
        ...


@runtime_checkable
class Provider(Fetcher, Protocol):
    """A Fetcher over committed content that can also answer what it holds, cheaply."""

    def exists(self, descriptor: Descriptor) -> bool:
        """Whether the content of ``descriptor`` is committed (by digest; size checked where cheap)."""
        ...

    def info(self, digest: str) -> int:
        """The size of committed content, raising ``NotFound`` if absent."""
        ...


class Writer(Protocol):
    """An open ingest. ``offset`` is where writing continues (non-zero when resuming)."""

    @property
    def offset(self) -> int: ...

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; raises ``SizeMismatch`` at once if the content grows past the declared size."""
        ...

    def commit(self) -> None:
        """Verify size and digest and make the content visible; on a mismatch discard it and raise."""
        ...

    def close(self) -> None:
        """Release the writer without committing; a resumable store keeps what was written."""
        ...


class Ingester(Protocol):
    """Accepts content under a ref key, verifying it before it becomes visible."""

    def writer(self, ref: str, descriptor: Descriptor) -> Writer:
        """Open (or resume) the ingest ``ref`` for ``descriptor``; raise ``AlreadyExists`` if committed."""
        ...

    def statuses(self) -> list[Status]:
        """Every ingest in progress, for progress reporting."""
        ...


def copy_content(fetcher: Fetcher, ingester: Ingester, descriptor: Descriptor) -> int:
    """Bring ``descriptor``'s content into ``ingester``; return the number of bytes transferred.

    Already committed content costs nothing and returns 0. Inline ``data`` that checks out is used instead
    of a fetch. A resumed ingest fetches only from its offset.
    """
    try:
        writer = ingester.writer(ref_key(descriptor), descriptor)
    except AlreadyExists:
        return 0
    try:
        start = writer.offset
        inline = descriptor.inline_data()
        if inline is not None:
            writer.write(inline[start:])
        elif start < descriptor.size:
            with closing(fetcher.fetch(descriptor, start)) as chunks:
                for chunk in chunks:
                    writer.write(chunk)
        writer.commit()
    except AlreadyExists:
        return 0
    finally:
        writer.close()
    return descriptor.size - start


def read_blob(fetcher: Fetcher, descriptor: Descriptor, limit: int = mediatypes.MAX_DOCUMENT_SIZE) -> bytes:
    """Read a small blob whole, verified against its descriptor; refuse anything declared over ``limit``."""
    if descriptor.size > limit:
        raise DocumentTooLarge(f"{descriptor.digest} declares {descriptor.size} bytes, over the {limit} byte limit")
    inline = descriptor.inline_data()
    if inline is not None:
        return inline
    verifier = Verifier(descriptor.digest, descriptor.size)
    parts: list[bytes] = []
    try:
        with closing(fetcher.fetch(descriptor)) as chunks:
            for chunk in chunks:
                verifier.update(chunk)
                parts.append(chunk)
        verifier.verify()
    except (DigestMismatch, SizeMismatch) as error:
        if isinstance(fetcher, Provider):  # committed content: the damage is in the store, not upstream
            raise DamagedContent(
                f"the stored copy of {descriptor.digest} in {fetcher} is damaged ({error}); "
                f"`ocimirror verify --repair {fetcher}` fetches it again from its source"
            ) from None
        raise
    return b"".join(parts)


def read_document(fetcher: Fetcher, descriptor: Descriptor) -> Manifest | Index:
    """Read and decode the manifest or index ``descriptor`` points at, verified and validated."""
    return parse_document(descriptor.media_type, read_blob(fetcher, descriptor))
