"""Results of fetches and syncs, for Python callers, the CLI's ``--json`` and Prefect artifacts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .descriptor import Descriptor
from .digest import short
from .errors import OcimirrorError, is_transient
from .platforms import format_platform
from .referrers import Referrer


def human_size(size: int) -> str:
    """Decimal units as registries and Docker print them: ``30.0 MB``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def describe(descriptor: Descriptor) -> str:
    """A descriptor in a few words for people: ``manifest linux/arm64/v8 sha256:1a2b3c4d 1.2 kB``."""
    words = [descriptor.kind]
    if descriptor.platform is not None:
        words.append(format_platform(descriptor.platform))
    words += [short(descriptor.digest), human_size(descriptor.size)]
    return " ".join(words)


class TreeRow(BaseModel):
    """One descriptor of a fetched image and what happened to it."""

    kind: str
    platform: str | None = None
    digest: str
    size: int
    status: Literal["fetched", "present"]
    transferred: int = Field(default=0, description="Bytes actually moved (less than size after a resume).")

    @classmethod
    def of(cls, descriptor: Descriptor, status: Literal["fetched", "present"], transferred: int = 0) -> TreeRow:
        platform = format_platform(descriptor.platform) if descriptor.platform else None
        return cls(
            kind=descriptor.kind,
            platform=platform,
            digest=descriptor.digest,
            size=descriptor.size,
            status=status,
            transferred=transferred,
        )


class FetchResult(BaseModel):
    """What ``fetch_image`` did for one reference."""

    reference: str
    source_digest: str = Field(description="The digest the reference resolved to at the source.")
    digest: str = Field(description="The digest tagged in the store (differs for a platform-filtered index).")
    media_type: str
    platforms: list[str] = Field(default_factory=list, description="Requested platforms; empty means all.")
    blobs_fetched: int = 0
    blobs_present: int = 0
    bytes_fetched: int = 0
    bytes_present: int = 0
    duration_seconds: float = 0.0
    tree: list[TreeRow] = Field(default_factory=list)


class ErrorDetail(BaseModel):
    """What went wrong, as data, so callers never parse messages: the error's type, whether retrying
    could help, the registry's HTTP status and error codes where there were any, and the descriptor it
    happened to."""

    type: str
    message: str
    transient: bool = False
    status: int | None = None
    codes: list[str] = Field(default_factory=list)
    retry_after: float | None = None
    digest: str | None = None

    @classmethod
    def of(cls, error: BaseException, digest: str | None = None) -> ErrorDetail:
        data: dict[str, object] = {"type": type(error).__name__}
        if isinstance(error, OcimirrorError):
            data |= error.to_dict()
        data |= {"message": str(error), "transient": is_transient(error), "digest": digest}
        return cls.model_validate(data)


def describe_error(error: BaseException) -> str:
    """``NotFound: registry ... HTTP 404``: an error in one line, its type first."""
    return f"{type(error).__name__}: {error}"


class ImageOutcome(BaseModel):
    """One image of a sync: planned, fetched, already up to date, or failed (with the reason in words, and
    as data in ``failure``)."""

    reference: str
    status: Literal["planned", "fetched", "up-to-date", "failed"]
    source_digest: str | None = None
    error: str | None = None
    failure: ErrorDetail | None = None
    result: FetchResult | None = None
    referrers: list[Referrer] = Field(
        default_factory=list, description="Referrers found for the image (planned, or mirrored with it)."
    )


class SyncResult(BaseModel):
    """What ``mirror_sync`` did, image by image."""

    dry_run: bool = False
    images: list[ImageOutcome] = Field(default_factory=list)
    pruned: list[str] = Field(
        default_factory=list, description="Names untagged by retention (with dry_run: that would be)."
    )

    @property
    def failed(self) -> list[ImageOutcome]:
        return [image for image in self.images if image.status == "failed"]

    def summary(self) -> str:
        """``12 image(s): 6 fetched, 5 up to date, 1 failed`` (a dry run counts what it would fetch)."""
        counts = {status: sum(1 for image in self.images if image.status == status) for status in _STATUS_WORDS}
        words = [f"{count} {_STATUS_WORDS[status]}" for status, count in counts.items() if count]
        if self.pruned:
            words.append(f"{len(self.pruned)} {'to prune' if self.dry_run else 'pruned'}")
        return f"{len(self.images)} image(s): " + (", ".join(words) or "nothing to do")


_STATUS_WORDS = {"planned": "planned", "fetched": "fetched", "up-to-date": "up to date", "failed": "failed"}


class SyncFailed(OcimirrorError):
    """Some images of a sync failed; the others are committed and tagged. Carries the whole result.

    Prefect wants a failed run's data to be an exception; this is it, so Python callers of the flows get
    an error that names the failed images *and* the result of the ones that worked.
    """

    def __init__(self, result: SyncResult) -> None:
        failed = result.failed
        lines = "\n".join(f"  {image.reference}: {image.error}" for image in failed)
        super().__init__(f"{len(failed)} of {len(result.images)} image(s) failed:\n{lines}")
        self.result = result

    def __reduce__(self) -> tuple[type[SyncFailed], tuple[SyncResult]]:
        """Pickled with its result (Prefect persists a failed run's exception so a parent run can read it)."""
        return (SyncFailed, (self.result,))
