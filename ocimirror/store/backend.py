"""What differs between filesystems under one store: how a blob becomes visible, and how a small shared
file (``index.json``) is updated without losing a concurrent writer's change.

Everything else in the store is one code path over fsspec. Each backend keeps the store rules (README,
"The store"): local disk writes under ``ingest/`` and renames atomically; object stores stream to the final
key and discard the upload on a mismatch; ``update`` is a read-modify-write that never loses an update
(a lock file locally, conditional writes on S3 and GCS, a lock in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fsspec import AbstractFileSystem

from ..content import Status, Writer
from ..descriptor import Descriptor

#: ``mutate(current)`` receives the file's bytes (``None`` if absent) and returns the new bytes.
Mutation = Callable[[bytes | None], bytes]


@dataclass(frozen=True)
class AbandonedIngest:
    """What a crashed writer left behind: an ingest directory or stray temporary file (``path``), or an
    S3 multipart upload never completed nor aborted (``path`` is its key, ``upload_id`` set)."""

    path: str
    size: int
    updated_at: datetime
    upload_id: str | None = None


class Backend(Protocol):
    """The filesystem-specific half of a store rooted at ``root`` on ``fs``."""

    fs: AbstractFileSystem
    root: str

    def blob_writer(self, ref: str, descriptor: Descriptor, replace: bool = False) -> Writer:
        """A writer whose ``commit`` makes ``blobs/<alg>/<hex>`` visible only once verified; ``replace``
        writes even over a committed blob of the right size (repairing damaged bytes)."""
        ...

    def statuses(self) -> list[Status]:
        """The ingests in progress under this store."""
        ...

    def update(self, path: str, mutate: Mutation) -> bytes:
        """Atomically replace ``root/path`` with ``mutate(current)``, retrying on a concurrent change;
        return what was written."""
        ...

    def abandoned_ingests(self, cutoff: datetime) -> list[AbandonedIngest]:
        """Ingests and temporary files not written to since ``cutoff`` (store clock)."""
        ...

    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        """Delete (or abort) an abandoned ingest; ``False`` if it turned out to be in use. One already gone
        is not an error."""
        ...
