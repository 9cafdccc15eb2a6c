"""What differs between filesystems under one store: how a blob becomes visible, and how a small shared
file (``index.json``) is updated without losing a concurrent writer's change.

Everything else in the store is one code path over fsspec. Each backend keeps the store rules (README,
"The store"): local disk writes under ``ingest/`` and renames atomically; object stores stream to the final
key and discard the upload on a mismatch; ``update`` is a read-modify-write that never loses an update
(a lock file locally, conditional writes on S3 and GCS, a lock in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fsspec import AbstractFileSystem

from ..content import Status, Writer
from ..descriptor import Descriptor

#: ``mutate(current)`` receives the file's bytes (``None`` if absent) and returns the new bytes.
Mutation = Callable[[bytes | None], bytes]


class Backend(Protocol):
    """The filesystem-specific half of a store rooted at ``root`` on ``fs``."""

    fs: AbstractFileSystem
    root: str

    def blob_writer(self, ref: str, descriptor: Descriptor) -> Writer:
        """A writer whose ``commit`` makes ``blobs/<alg>/<hex>`` visible only once verified."""
        ...

    def statuses(self) -> list[Status]:
        """The ingests in progress under this store."""
        ...

    def update(self, path: str, mutate: Mutation) -> bytes:
        """Atomically replace ``root/path`` with ``mutate(current)``, retrying on a concurrent change;
        return what was written."""
        ...
