"""Digests: validation before any path is built from one, and hashing while content streams."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import AfterValidator

from .errors import DigestMismatch, InvalidDigest, SizeMismatch

#: Supported algorithms and the length of their lowercase hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_HEX = re.compile(r"[0-9a-f]+")


def validate_digest(value: str) -> str:
    """Return ``value`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``, else raise ``InvalidDigest``.

    This is the only gate between untrusted input (manifests, registry headers, index.json) and the paths
    ``blobs/<alg>/<hex>``: a digest that passes cannot contain ``/``, ``..`` or anything but lowercase hex.
    """
    if not isinstance(value, str):
        raise InvalidDigest(f"digest must be a string, got {type(value).__name__}")
    algorithm, sep, encoded = value.partition(":")
    if not sep:
        raise InvalidDigest(f"invalid digest {value[:100]!r}: expected algorithm:hex")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidDigest(f"invalid digest {value[:100]!r}: unsupported algorithm {algorithm[:20]!r}")
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        raise InvalidDigest(f"invalid digest {value[:100]!r}: {algorithm} needs {length} lowercase hex characters")
    return value


#: A validated digest string, for pydantic models.
Digest = Annotated[str, AfterValidator(validate_digest)]


def split_digest(digest: str) -> tuple[str, str]:
    """Split a digest into ``(algorithm, hex)`` after validating it."""
    algorithm, _, encoded = validate_digest(digest).partition(":")
    return algorithm, encoded


def blob_path(digest: str) -> str:
    """The path of a blob inside an OCI image layout: ``blobs/<algorithm>/<hex>``."""
    algorithm, encoded = split_digest(digest)
    return f"blobs/{algorithm}/{encoded}"


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data`` in ``algorithm:hex`` form."""
    if algorithm not in ALGORITHMS:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def short(digest: str, length: int = 8) -> str:
    """A digest shortened for people: ``sha256:1a2b3c4d``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:length]}"


class Verifier:
    """Hashes content as it streams and checks it against an expected digest and size.

    Counting bytes here lets every writer refuse a body longer than its descriptor at the first extra byte,
    rather than after it has been stored.
    """

    def __init__(self, expected_digest: str, expected_size: int) -> None:
        self.expected_digest = validate_digest(expected_digest)
        self.expected_size = expected_size
        algorithm = expected_digest.partition(":")[0]
        self._hash = hashlib.new(algorithm)
        self.offset = 0

    def update(self, chunk: bytes) -> None:
        """Account for ``chunk``; raise ``SizeMismatch`` as soon as the content exceeds the declared size."""
        if self.offset + len(chunk) > self.expected_size:
            raise SizeMismatch(f"{self.expected_digest}: content is longer than the declared size {self.expected_size}")
        self._hash.update(chunk)
        self.offset += len(chunk)

    @property
    def digest(self) -> str:
        """The digest of the content seen so far."""
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def verify(self) -> None:
        """Raise ``SizeMismatch`` or ``DigestMismatch`` unless the content is exactly what was declared."""
        if self.offset != self.expected_size:
            raise SizeMismatch(
                f"{self.expected_digest}: got {self.offset} bytes, the descriptor declares {self.expected_size}"
            )
        actual = self.digest
        if actual != self.expected_digest:
            raise DigestMismatch(f"content hashed to {actual}, expected {self.expected_digest}")
