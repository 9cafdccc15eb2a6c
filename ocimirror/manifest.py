"""Manifests and indexes: decoding untrusted JSON into typed documents, refusing what must be refused."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import mediatypes
from .descriptor import Descriptor
from .errors import DocumentTooLarge, InvalidManifest, NestingTooDeep, UnsupportedSchema1, validation_problems
from .jsonlimits import decode_json


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


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
    are not JSON objects, bodies nested deeper than ``MAX_JSON_DEPTH``, bodies whose own ``mediaType`` or
    shape contradicts the declared type (containerd's ``validateMediaType``: an index is never accepted as a
    manifest or the reverse), and media types that are not documents at all.
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
    if body.get("schemaVersion") == 1:
        raise UnsupportedSchema1("Docker schema 1 manifests are not supported")
    declared_in_body = body.get("mediaType")
    if declared_in_body is not None and declared_in_body != media_type.split(";", 1)[0].strip():
        raise InvalidManifest(f"body declares mediaType {declared_in_body!r} but the descriptor says {media_type!r}")
    is_index = mediatypes.is_index(media_type)
    if is_index and ("config" in body or "layers" in body):
        raise InvalidManifest(f"{media_type} has config or layers: it is a manifest, not an index")
    if not is_index and "manifests" in body:
        raise InvalidManifest(f"{media_type} has manifests: it is an index, not a manifest")
    model = Index if is_index else Manifest
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(validation_problems(error, 5))
        raise InvalidManifest(f"invalid {media_type}: {problems}") from None


def encode_document(document: Manifest | Index) -> bytes:
    """Canonical bytes for a document ocimirror writes itself (a filtered index): compact, stable order."""
    return json.dumps(
        document.model_dump(by_alias=True, exclude_none=True, mode="json"), separators=(",", ":")
    ).encode()
