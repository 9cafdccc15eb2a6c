"""The content store: an OCI image layout on any fsspec URL.

``open_store`` picks the backend from the filesystem's protocol: local disk and memory rename finished
ingests into place; S3 and GCS (``objectstore``, imported only when asked for) stream to the final key.
"""

from __future__ import annotations

from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from ..errors import StoreError
from .backend import Backend
from .files import LOCAL_CHUNK_SIZE, REMOTE_CHUNK_SIZE, protocols
from .layout import LayoutStore, redact_url
from .local import LocalBackend
from .memory import MemoryBackend

__all__ = ["Backend", "LayoutStore", "backend_for", "open_store"]

_OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})


def backend_for(fs: AbstractFileSystem, root: str) -> Backend:
    """The backend that keeps the store rules on ``fs`` (chosen by its protocol)."""
    names = protocols(fs)
    if "file" in names:
        return LocalBackend(fs, root)
    if "memory" in names:
        return MemoryBackend(fs, root)
    if names & _OBJECT_STORE_PROTOCOLS:
        from .objectstore import backend_for_object_store

        return backend_for_object_store(fs, root)
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
