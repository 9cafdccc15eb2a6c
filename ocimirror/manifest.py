"""Manifests and indexes: decoding untrusted JSON into typed documents, refusing what must be refused."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import mediatypes
from .descriptor import Descriptor
from .errors import DocumentTooLarge, InvalidManifest, NestingTooDeep, UnsupportedSchema1, validation_problems
from .jsonlimits import decode_json
from .mediatypes import MediaType


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: MediaType | None = Field(default=None, alias="mediaType")
    artifact_type: MediaType | None = Field(default=None, alias="artifactType")
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        # A JSON integer, as Go clients read it: not "2", not 2.0.
        if type(value) is not int:
            raise ValueError("schemaVersion must be the JSON integer 2")
        return value


class Manifest(_Document):
    """An OCI image manifest or Docker schema 2 manifest: one config and ordered layers."""

    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)

    def children(self) -> list[Descriptor]:
        """Config first, then layers in order; ``subject`` is a reference, not a child."""
        return [self.config, *self.layers]


class Index(_Document):
    """An OCI image index or Docker manifest list."""

    manifests: list[Descriptor]

    def children(self) -> list[Descriptor]:
        """The listed manifests in index order; ``subject`` is a reference, not a child."""
        return list(self.manifests)


def parse_document(media_type: str, content: bytes) -> Manifest | Index:
    """Decode a manifest or index body declared as ``media_type``.

    Refuses, each with one message naming the problem: documents over 4 MiB, Docker schema 1, bodies that
    are not JSON objects, bodies nested deeper than ``MAX_JSON_DEPTH``, bodies that are an index declared as
    a manifest or the reverse (see :func:`validate_media_type`), malformed fields (sizes that are not JSON
    integers, media types that are not ``type/subtype``), and media types that are not documents at all.
    """
    if len(content) > mediatypes.MAX_DOCUMENT_SIZE:
        raise DocumentTooLarge(
            f"{media_type} of {len(content)} bytes exceeds the {mediatypes.MAX_DOCUMENT_SIZE} byte limit"
        )
    if mediatypes.is_schema1(media_type):
        raise UnsupportedSchema1(f"Docker schema 1 manifests ({media_type}) are not supported")
    if not mediatypes.is_document(media_type):
        raise InvalidManifest(f"{media_type!r} is not a manifest or index media type")
    try:
        body = decode_json(content)
    except NestingTooDeep as error:
        raise InvalidManifest(f"{media_type}: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidManifest(f"{media_type} is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidManifest(f"{media_type} must be a JSON object")
    validate_media_type(media_type, body)
    model = Index if mediatypes.is_index(media_type) else Manifest
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(validation_problems(error, 5))
        raise InvalidManifest(f"invalid {media_type}: {problems}") from None


def validate_media_type(media_type: str, body: dict[str, object]) -> None:
    """Refuse a decoded body that is not the kind of document ``media_type`` declares (containerd's
    ``validateMediaType``).

    An index is never accepted as a manifest or the reverse: a body with a ``manifests`` field or an index
    ``mediaType`` under a manifest type, or with a ``config`` or ``layers`` field or a manifest ``mediaType``
    under an index type (a field counts when present, even empty, as in containerd). Docker and OCI spellings
    of the same kind are interchangeable: registries serve Docker manifests under OCI descriptors and the
    reverse, and the media type kept is the one the registry served.
    Schema 1 bodies (``fsLayers`` or ``schemaVersion: 1``) are refused whatever they are declared as.
    """
    if "fsLayers" in body or body.get("schemaVersion") == 1:
        raise UnsupportedSchema1("Docker schema 1 manifests are not supported")
    in_body = body.get("mediaType")
    in_body = in_body if isinstance(in_body, str) else ""
    if mediatypes.is_manifest(media_type):
        if "manifests" in body:
            raise InvalidManifest(f"{media_type} has manifests: it is an index, not a manifest")
        if mediatypes.is_index(in_body):
            raise InvalidManifest(
                f"body declares mediaType {in_body!r}, an index, but the descriptor says {media_type!r}"
            )
    elif mediatypes.is_index(media_type):
        if "config" in body or "layers" in body:
            raise InvalidManifest(f"{media_type} has config or layers: it is a manifest, not an index")
        if mediatypes.is_manifest(in_body):
            raise InvalidManifest(
                f"body declares mediaType {in_body!r}, a manifest, but the descriptor says {media_type!r}"
            )


def encode_document(document: Manifest | Index) -> bytes:
    """Canonical bytes for a document ocimirror writes itself (a filtered index): compact, stable order."""
    return json.dumps(
        document.model_dump(by_alias=True, exclude_none=True, mode="json"), separators=(",", ":")
    ).encode()
