"""Descriptors and platforms: the nodes of an image's tree, as the OCI image spec defines them."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from . import mediatypes
from .digest import Digest, digest_bytes
from .mediatypes import MediaType

#: A descriptor's ``size``: a JSON integer (not a string, not ``1.0``: Go clients refuse those) in int64 range.
Size = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]


def _check_base64(value: str) -> str:
    """``data`` must be standard base64 with padding: Go clients decode it into bytes and refuse the document
    otherwise, so a mirror must not store it."""
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not valid base64 (standard alphabet, padded)") from None
    return value


class Platform(BaseModel):
    """The platform an image runs on (``linux/arm64/v8``); ``os.version`` matters for Windows images."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")
    variant: str | None = None
    features: list[str] | None = None

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)


class Descriptor(BaseModel):
    """A typed, sized, content-addressed pointer to a blob, manifest or index.

    Field names follow Python; the JSON form (``model_dump(by_alias=True)``) is the spec's camelCase, and
    unknown fields are kept so documents round-trip.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    media_type: MediaType = Field(alias="mediaType")
    digest: Digest
    size: Size
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: MediaType | None = Field(default=None, alias="artifactType")
    data: Annotated[str, AfterValidator(_check_base64)] | None = None

    @classmethod
    def from_bytes(cls, media_type: str, content: bytes, **fields: object) -> Descriptor:
        """The descriptor of ``content``: its sha256 digest and length."""
        return cls(media_type=media_type, digest=digest_bytes(content), size=len(content), **fields)

    def to_json(self) -> dict[str, object]:
        """The spec's JSON object for this descriptor, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def inline_data(self) -> bytes | None:
        """The embedded ``data`` if present and consistent with ``digest`` and ``size``, else ``None``.

        Inline data is an optimisation a registry or tool may offer; content that does not check out is
        ignored so the blob is fetched normally.
        """
        if self.data is None:
            return None
        try:
            content = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            return None
        algorithm = self.digest.partition(":")[0]
        if len(content) != self.size or digest_bytes(content, algorithm) != self.digest:
            return None
        return content

    @property
    def kind(self) -> str:
        """``index``, ``manifest``, ``config``, ``layer``, ``attestation`` or ``unknown``: a word for people
        and the prefix of ingest ref keys."""
        media_type = self.media_type
        if mediatypes.is_manifest(media_type):
            return "manifest"
        if mediatypes.is_index(media_type):
            return "index"
        if mediatypes.is_layer(media_type):
            return "layer"
        if mediatypes.is_config(media_type):
            return "config"
        if mediatypes.is_attestation(media_type):
            return "attestation"
        return "unknown"

    @property
    def is_attestation_manifest(self) -> bool:
        """A BuildKit attestation manifest listed in an index (platform ``unknown/unknown``)."""
        annotations = self.annotations or {}
        return annotations.get(mediatypes.ATTESTATION_REFERENCE_TYPE) == mediatypes.ATTESTATION_MANIFEST


def ref_key(descriptor: Descriptor) -> str:
    """The stable ingest key of a descriptor, ``<kind>-<digest>``, as containerd's ``MakeRefKey``.

    One key per content means an interrupted ingest is found again by the next attempt (resume) and two
    writers of the same content meet at the same lock.
    """
    return f"{descriptor.kind}-{descriptor.digest}"
