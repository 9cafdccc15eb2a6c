"""The content store: an OCI image layout on any fsspec URL.

``open_store`` picks the backend from the filesystem's protocol, one module each: local disk (``local``)
and memory (``memory``) rename finished ingests into place; S3 (``s3``) and GCS (``gcs``) stream to the
final key (``objectstore``). s3fs and gcsfs themselves are imported by fsspec only for such a URL.
"""

from __future__ import annotations

from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from ..errors import StoreError
from .backend import Backend
from .files import LOCAL_CHUNK_SIZE, REMOTE_CHUNK_SIZE, protocols
from .gcs import GCSBackend
from .layout import LayoutStore, redact_url
from .local import LocalBackend
from .memory import MemoryBackend
from .s3 import S3Backend

__all__ = ["Backend", "LayoutStore", "backend_for", "open_store"]


def backend_for(fs: AbstractFileSystem, root: str) -> Backend:
    """The backend that keeps the store rules on ``fs`` (chosen by its protocol)."""
    names = protocols(fs)
    if "file" in names:
        return LocalBackend(fs, root)
    if "memory" in names:
        return MemoryBackend(fs, root)
    if names & {"s3", "s3a"}:
        return S3Backend(fs, root)
    if names & {"gs", "gcs"}:
        return GCSBackend(fs, root)
    raise StoreError(
        f"unsupported store filesystem {'/'.join(sorted(names))}: use a local path, file://, memory://, s3:// or gs://"
    )


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> LayoutStore:
    """Open the OCI image layout at ``url`` (local path, ``file://``, ``memory://``, ``s3://``, ``gs://``).

    Nothing is written until the first ingest or tag, which creates ``oci-layout`` and ``index.json``.
    ``storage_options`` go to the fsspec filesystem (endpoint, credentials) and are never shown.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError("a store URL is required")
    try:
        fs, root = url_to_fs(url, **(storage_options or {}))
    except (ValueError, ImportError) as error:
        raise StoreError(f"cannot open store {redact_url(url)}: {error}") from None
    names = protocols(fs)
    chunk_size = LOCAL_CHUNK_SIZE if names & {"file", "memory"} else REMOTE_CHUNK_SIZE
    return LayoutStore(backend_for(fs, root), url, chunk_size)
