"""Media types of OCI and Docker images, and the predicates the handlers dispatch on."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# OCI image spec
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2 schema 2
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"

# Docker schema 1: recognised only to be refused.
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Attestations (BuildKit provenance and SBOMs): in-toto statements in manifests marked by an annotation.
IN_TOTO = "application/vnd.in-toto+json"
ATTESTATION_REFERENCE_TYPE = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"
ATTESTATION_REFERENCE_DIGEST = "vnd.docker.reference.digest"

INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG, DOCKER_PLUGIN_CONFIG})
SCHEMA1 = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED})
NONDISTRIBUTABLE = frozenset(
    {
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        DOCKER_LAYER_FOREIGN,
        DOCKER_LAYER_FOREIGN_GZIP,
    }
)

#: What registries are asked for when resolving a reference, most preferred first.
MANIFEST_ACCEPT: tuple[str, ...] = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

#: Manifests and indexes are refused beyond this size, as distribution does.
MAX_DOCUMENT_SIZE = 4 * 1024 * 1024


#: RFC 6838 ``type/subtype`` names, as the image-spec schema checks them: no parameters, each name starting
#: with a letter or digit and at most 127 characters long.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


def validate_media_type(value: str) -> str:
    """Return ``value`` if it is a syntactically valid media type (RFC 6838 names), else raise ``ValueError``.

    Registries and Go clients refuse documents whose media types are malformed; checking here means such a
    document is refused with one message instead of being stored and failing elsewhere.
    """
    if not _MEDIA_TYPE.fullmatch(value):
        raise ValueError(f"{value[:300]!r} is not a media type (type/subtype, RFC 6838)")
    return value


#: A media type checked for syntax, for pydantic models.
MediaType = Annotated[str, AfterValidator(validate_media_type)]


def _base(media_type: str) -> str:
    """The media type without parameters (``; charset=utf-8``)."""
    return media_type.split(";", 1)[0].strip()


def is_index(media_type: str) -> bool:
    """An OCI image index or a Docker manifest list."""
    return _base(media_type) in INDEXES


def is_manifest(media_type: str) -> bool:
    """An OCI image manifest or a Docker schema 2 manifest."""
    return _base(media_type) in MANIFESTS


def is_document(media_type: str) -> bool:
    """A manifest or an index: JSON documents whose children the handlers read."""
    return is_index(media_type) or is_manifest(media_type)


def is_schema1(media_type: str) -> bool:
    """Docker schema 1, which ocimirror refuses."""
    return _base(media_type) in SCHEMA1


def is_config(media_type: str) -> bool:
    """An image configuration blob (OCI, Docker, Docker plugin)."""
    return _base(media_type) in CONFIGS


def is_layer(media_type: str) -> bool:
    """A filesystem layer in any compression, including zstd and non-distributable ones.

    Parameters and unknown suffixes of the OCI and Docker layer prefixes count too, as in containerd's
    ``IsLayerType``.
    """
    base = _base(media_type)
    return base.startswith(
        (
            "application/vnd.oci.image.layer.",
            "application/vnd.docker.image.rootfs.",
        )
    )


def is_nondistributable(media_type: str) -> bool:
    """A layer that registries may serve only from its ``urls`` (Windows base layers)."""
    return _base(media_type) in NONDISTRIBUTABLE


def is_attestation(media_type: str) -> bool:
    """An in-toto attestation blob."""
    return _base(media_type) == IN_TOTO
