"""Small fsspec helpers shared by the layout and its backends: stat a blob, stream a byte range.

Reads go through ranged ``cat_file`` calls rather than one open file object: that never reads past the
range asked for, and it is safe for concurrent readers on every filesystem (``MemoryFileSystem`` hands all
readers of a path one shared file object with one position, so a long-lived handle there is not).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from datetime import UTC, datetime
from typing import Any

from fsspec import AbstractFileSystem

#: Read size for local disk and memory; object stores get larger ranges (one request each).
LOCAL_CHUNK_SIZE = 1024 * 1024
REMOTE_CHUNK_SIZE = 8 * 1024 * 1024


def protocols(fs: AbstractFileSystem) -> frozenset[str]:
    """Every name ``fs`` answers to (``("s3", "s3a")``): backends are chosen by these."""
    return frozenset([fs.protocol] if isinstance(fs.protocol, str) else fs.protocol)


def modified_at(info: Mapping[str, Any]) -> datetime:
    """When the object an fsspec ``info``/``ls`` entry describes was last written, by the store's clock.

    Local disk: ``mtime``; S3: ``LastModified``; GCS: ``updated``; memory: ``created`` (a memory file is
    never modified in place, only replaced).
    """
    for key in ("mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"no modification time in the listing of {info.get('name')!r}")


def file_size(fs: AbstractFileSystem, path: str) -> int | None:
    """The size of the regular file at ``path``, or ``None`` if there is none (one stat).

    A symbolic link counts as no file: content in a store is a regular file inside it, never whatever a link
    planted by someone else points at (a committed blob replaces such a link rather than following it).
    """
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") != "file" or info.get("islink"):
        return None
    return int(info["size"])


def read_range(
    fs: AbstractFileSystem, path: str, start: int, end: int, chunk_size: int = LOCAL_CHUNK_SIZE
) -> Generator[bytes, None, None]:
    """Yield the bytes of ``path`` from ``start`` up to (not including) ``end``, ``chunk_size`` at a time.

    Stops early if the file is shorter; the caller's verifier turns that into a size mismatch.
    """
    position = start
    while position < end:
        chunk = fs.cat_file(path, start=position, end=min(end, position + chunk_size))
        if not chunk:
            return
        yield chunk
        position += len(chunk)
