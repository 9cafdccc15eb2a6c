"""The error vocabulary of ocimirror.

Every failure is either *permanent* (retrying cannot help: a missing tag, a bad digest, refused credentials)
or *transient* (the same request may succeed later: 5xx, 429, resets, timeouts). Prefect retries and the
registry client both decide on that split alone, so every error raised by the core derives from one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


class OcimirrorError(Exception):
    """Base of every error ocimirror raises on purpose.

    An error that comes from a registry's answer also carries, as go-containerregistry's ``transport.Error``
    does, the HTTP ``status`` and the registry's error ``codes`` (distribution's ``errors[].code``, such as
    ``MANIFEST_UNKNOWN``, ``NAME_UNKNOWN``, ``DENIED``, ``TOOMANYREQUESTS``), so callers decide on those
    rather than on the words of the message. The attributes live in the instance's ``__dict__``, which
    pickling keeps (errors cross process boundaries in Prefect).
    """

    def __init__(self, message: str, *, status: int | None = None, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)

    def to_dict(self) -> dict[str, object]:
        """The error as plain data, for ``--json`` output and reports: ``type`` (the class name),
        ``message``, ``transient``, and ``status``, ``codes`` and ``retry_after`` where known.

        Nothing secret is in it: messages never contain credentials (they name a user at most), and codes
        are only the identifiers a registry sent.
        """
        data: dict[str, object] = {"type": type(self).__name__, "message": str(self), "transient": is_transient(self)}
        if self.status is not None:
            data["status"] = self.status
        if self.codes:
            data["codes"] = list(self.codes)
        retry_after = getattr(self, "retry_after", None)
        if retry_after is not None:
            data["retry_after"] = retry_after
        return data


class PermanentError(OcimirrorError):
    """Retrying the same operation cannot succeed."""


class TransientError(OcimirrorError):
    """The operation may succeed if tried again; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        status: int | None = None,
        codes: Sequence[str] = (),
    ) -> None:
        super().__init__(message, status=status, codes=codes)
        self.retry_after = retry_after


class InvalidDigest(PermanentError, ValueError):
    """A digest string is not ``algorithm:hex`` with a supported algorithm and the right length."""


class InvalidReference(PermanentError, ValueError):
    """An image reference cannot be parsed; the message names the bad part."""


class InvalidPlatform(PermanentError, ValueError):
    """A platform specifier such as ``linux/arm/v7`` cannot be parsed."""


class InvalidManifest(PermanentError):
    """A manifest or index body does not match its declared media type or cannot be decoded."""


class UnsupportedSchema1(InvalidManifest):
    """Docker image manifest schema 1 is deprecated and refused, as containerd and distribution do."""


class DocumentTooLarge(InvalidManifest):
    """A manifest or index is larger than the 4 MiB cap that registries also enforce."""


class NestingTooDeep(PermanentError, ValueError):
    """A JSON document nests deeper than any real one does (``jsonlimits.MAX_JSON_DEPTH``); a ``ValueError``
    so that every caller handling undecodable JSON handles it too."""


class DigestMismatch(PermanentError):
    """Content hashed to a different digest than its descriptor declares."""


class SizeMismatch(PermanentError):
    """Content is shorter or longer than its descriptor declares."""


class DamagedContent(DigestMismatch):
    """Content already committed in a store does not match its name (bit rot, an outside writer): the bad
    copy is in the store, not at the source; ``ocimirror verify --repair`` re-fetches it."""


class NotFound(PermanentError):
    """The requested content, manifest, tag or repository does not exist."""


class AlreadyExists(OcimirrorError):
    """The content is already committed; callers that only want it present treat this as success."""


class Unauthorized(PermanentError):
    """Credentials were missing, refused, or do not grant access (HTTP 401/403 after authenticating)."""


class ConfigError(PermanentError, ValueError):
    """A configuration file or option is invalid; the message says where."""


class StoreError(PermanentError):
    """The store is unusable or inconsistent (for example a corrupt ``index.json``)."""


#: ``OSError``s that describe the world rather than a failed exchange with it.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException) -> bool:
    """Whether retrying the operation that raised ``error`` could help.

    Errors from outside ocimirror (for example an ``OSError`` from a filesystem backend) count as transient:
    the cautious choice for I/O, while everything ocimirror knows to be final is a ``PermanentError``. The
    exceptions are the ``OSError``s that name a state of the world rather than a failed exchange: a missing
    bucket or directory, refused access (fsspec maps S3 and GCS 404 and 403 to these) do not change by
    trying again.
    """
    if isinstance(error, PermanentError):
        return False
    if isinstance(error, TransientError):
        return True
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    return isinstance(error, (OSError, TimeoutError, ConnectionError))


def validation_problems(error: ValidationError, limit: int | None = None) -> list[str]:
    """``location: message`` for each problem pydantic found, so every caller reports untrusted documents
    and configs in the same words (``layers.0.digest: invalid digest ...``)."""
    return [
        f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()[:limit]
    ]
