"""The content interfaces, after containerd's ``core/content``: who reads content and who stores it.

A ``Fetcher`` streams the bytes of a descriptor from somewhere (a registry, another store). A ``Provider``
is a Fetcher over committed content that can also say what it holds. An ``Ingester`` accepts new content
through a ``Writer`` that verifies size and digest before anything becomes visible. ``copy_content`` joins
the two, and is all a fetch handler needs.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from contextlib import closing
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from . import mediatypes
from .descriptor import Descriptor, ref_key
from .digest import Verifier
from .errors import AlreadyExists, DamagedContent, DigestMismatch, DocumentTooLarge, SizeMismatch
from .manifest import Index, Manifest, parse_document

log = logging.getLogger(__name__)


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

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Generator[bytes, None, None]:
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


#: Times content is fetched from byte 0 when it does not verify. Two: a byte flipped in transit (a bad proxy,
#: link or disk under a cache) is rare and does not repeat, so one fresh fetch rescues it; wrong content twice
#: is the source's, and fetching it again would only move the same wrong bytes once more.
FETCH_ATTEMPTS = 2


def copy_content(fetcher: Fetcher, ingester: Ingester, descriptor: Descriptor) -> int:
    """Bring ``descriptor``'s content into ``ingester``; return the bytes fetched for it.

    The count is what actually came from ``fetcher``: 0 when the content is already committed (or is
    ``data`` inline in the descriptor), only the rest of the blob when an earlier ingest is resumed, and the
    bytes of a discarded attempt too, since they crossed the network. Callers reporting transfer volume
    sum this; the descriptor's ``size`` is the size of the content, not what moved.

    A manifest or index declared over the 4 MiB cap is refused before any byte is requested. Content that
    does not verify (wrong digest or size) is discarded and fetched once more from byte 0, also when the
    first attempt resumed an earlier ingest; a second failure is permanent, and its error says the source
    served wrong content twice.
    """
    if mediatypes.is_document(descriptor.media_type):
        _refuse_over(descriptor, mediatypes.MAX_DOCUMENT_SIZE)
    fetched = 0
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        try:
            writer = ingester.writer(ref_key(descriptor), descriptor)
        except AlreadyExists:
            return fetched
        try:
            start = writer.offset
            inline = descriptor.inline_data()
            if inline is not None:
                writer.write(inline[start:])
            elif start < descriptor.size:
                with closing(fetcher.fetch(descriptor, start)) as chunks:
                    for chunk in chunks:
                        fetched += len(chunk)
                        writer.write(chunk)
            writer.commit()
            return fetched
        except AlreadyExists:
            return fetched
        except (DigestMismatch, SizeMismatch) as error:
            # The writer discarded the ingest, so the next attempt starts from byte 0.
            if attempt == FETCH_ATTEMPTS:
                raise type(error)(
                    f"{descriptor.digest}: {fetcher} served wrong content twice, the second time fetched "
                    f"from byte 0 ({error})"
                ) from None
            log.warning("%s from %s: %s; discarded, fetching it again from byte 0", descriptor.digest, fetcher, error)
        finally:
            writer.close()
    raise AssertionError("unreachable: the last attempt returns or raises")


def _refuse_over(descriptor: Descriptor, limit: int) -> None:
    if descriptor.size > limit:
        raise DocumentTooLarge(f"{descriptor.digest} declares {descriptor.size} bytes, over the {limit} byte limit")


def read_blob(fetcher: Fetcher, descriptor: Descriptor, limit: int = mediatypes.MAX_DOCUMENT_SIZE) -> bytes:
    """Read a small blob whole, verified against its descriptor; refuse anything declared over ``limit``."""
    _refuse_over(descriptor, limit)
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
