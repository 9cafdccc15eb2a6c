"""Test images built in memory — layers, configs, manifests, indexes — and pushed over the registry API.

Every builder returns an :class:`Image`: the descriptor of its root (a manifest or an index) and the bytes of
every blob under it, so a test can assert exact digests after a pull. Content is deterministic for a given
seed, so digests are stable across runs and machines.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests

from ocimirror import mediatypes
from ocimirror.descriptor import Descriptor, Platform
from ocimirror.digest import digest_bytes

#: Platforms of a typical multi-arch index.
DEFAULT_PLATFORMS = (
    Platform(os="linux", architecture="amd64"),
    Platform(os="linux", architecture="arm64", variant="v8"),
)
ATTESTATION_PLATFORM = Platform(os="unknown", architecture="unknown")
SLSA_PROVENANCE = "https://slsa.dev/provenance/v0.2"


@dataclass(frozen=True)
class Image:
    """A manifest or index and every blob reachable from it, keyed by digest.

    ``children`` are the images directly under an index (manifests, including attestation manifests),
    in index order; a manifest has none.
    """

    descriptor: Descriptor
    blobs: Mapping[str, bytes]
    children: tuple[Image, ...] = ()
    descriptors: tuple[Descriptor, ...] = field(default=())

    @property
    def digest(self) -> str:
        """The root's digest: what a tag resolves to."""
        return self.descriptor.digest

    @property
    def content(self) -> bytes:
        """The root document's bytes."""
        return self.blobs[self.descriptor.digest]

    def all_descriptors(self) -> list[Descriptor]:
        """Every descriptor in the tree, children before parents (the push order), each digest once."""
        seen: dict[str, Descriptor] = {}
        for descriptor in self.descriptors:
            seen.setdefault(descriptor.digest, descriptor)
        return list(seen.values())


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed layer tarball holding ``files`` (path -> content), with fixed metadata."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip ``data`` reproducibly (no timestamp or file name in the header)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def random_layer(size: int, seed: int | str) -> bytes:
    """A gzipped layer holding one file of ``size`` pseudo-random bytes (incompressible, deterministic)."""
    generator = random.Random(str(seed))
    piece = 64 * 1024 * 1024  # randbytes of more than 256 MiB overflows; pieces keep smaller layers as they were
    payload = b"".join(generator.randbytes(min(piece, size - start)) for start in range(0, size, piece))
    return gzip_bytes(layer_tar({f"data/{seed}.bin": payload}))


def build_manifest(
    layers: Iterable[bytes],
    platform: Platform = DEFAULT_PLATFORMS[0],
    *,
    docker: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An image manifest (OCI, or Docker schema 2 with ``docker=True``) over gzipped ``layers``."""
    layers = list(layers)
    layer_type = mediatypes.DOCKER_LAYER_GZIP if docker else mediatypes.OCI_LAYER_GZIP
    layer_descriptors = [Descriptor.from_bytes(layer_type, layer) for layer in layers]
    config = _encode(
        {
            "architecture": platform.architecture,
            "os": platform.os,
            **({"variant": platform.variant} if platform.variant else {}),
            "config": {},
            "rootfs": {
                "type": "layers",
                "diff_ids": [digest_bytes(gzip.decompress(layer)) for layer in layers],
            },
        }
    )
    config_type = mediatypes.DOCKER_CONFIG if docker else mediatypes.OCI_CONFIG
    config_descriptor = Descriptor.from_bytes(config_type, config)
    media_type = mediatypes.DOCKER_MANIFEST if docker else mediatypes.OCI_MANIFEST
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_descriptor.to_json(),
        "layers": [descriptor.to_json() for descriptor in layer_descriptors],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = _encode(document)
    descriptor = Descriptor.from_bytes(media_type, manifest, platform=platform)
    blobs = {config_descriptor.digest: config, descriptor.digest: manifest}
    blobs |= {d.digest: layer for d, layer in zip(layer_descriptors, layers, strict=True)}
    return Image(descriptor, blobs, descriptors=(config_descriptor, *layer_descriptors, descriptor))


def build_attestation(subject: Image) -> Image:
    """A BuildKit-style attestation manifest for ``subject``: an in-toto provenance statement as its only
    layer, listed in an index with platform ``unknown/unknown`` and the ``vnd.docker.reference.*``
    annotations pointing at the subject manifest."""
    statement = _encode(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": SLSA_PROVENANCE,
            "subject": [{"name": "ocimirror-test", "digest": {"sha256": subject.digest.partition(":")[2]}}],
            "predicate": {"builder": {"id": "ocimirror_demo"}},
        }
    )
    layer = Descriptor.from_bytes(
        mediatypes.IN_TOTO, statement, annotations={"in-toto.io/predicate-type": SLSA_PROVENANCE}
    )
    config = _encode(
        {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }
    )
    config_descriptor = Descriptor.from_bytes(mediatypes.OCI_CONFIG, config)
    manifest = _single_layer_manifest(config_descriptor, layer)
    descriptor = Descriptor.from_bytes(
        mediatypes.OCI_MANIFEST,
        manifest,
        platform=ATTESTATION_PLATFORM,
        annotations={
            mediatypes.ATTESTATION_REFERENCE_TYPE: mediatypes.ATTESTATION_MANIFEST,
            mediatypes.ATTESTATION_REFERENCE_DIGEST: subject.digest,
        },
    )
    blobs = {layer.digest: statement, config_descriptor.digest: config, descriptor.digest: manifest}
    return Image(descriptor, blobs, descriptors=(config_descriptor, layer, descriptor))


def build_index(manifests: Iterable[Image], *, docker: bool = False, attestations: bool = False) -> Image:
    """An OCI index (or Docker manifest list with ``docker=True``) over ``manifests``, optionally followed by
    one attestation manifest per platform manifest, as BuildKit pushes them."""
    children = list(manifests)
    if attestations:
        children += [build_attestation(child) for child in list(children)]
    media_type = mediatypes.DOCKER_MANIFEST_LIST if docker else mediatypes.OCI_INDEX
    index = _encode(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [child.descriptor.to_json() for child in children],
        }
    )
    descriptor = Descriptor.from_bytes(media_type, index)
    blobs: dict[str, bytes] = {descriptor.digest: index}
    descriptors: list[Descriptor] = []
    for child in children:
        blobs |= child.blobs
        descriptors += child.descriptors
    return Image(descriptor, blobs, children=tuple(children), descriptors=(*descriptors, descriptor))


def build_multiarch(
    seed: str,
    platforms: Iterable[Platform] = DEFAULT_PLATFORMS,
    *,
    docker: bool = False,
    attestations: bool = True,
    layer_size: int = 4096,
) -> Image:
    """An index with one single-layer image per platform (and attestations unless ``docker``)."""
    manifests = [
        build_manifest([random_layer(layer_size, f"{seed}-{platform}")], platform, docker=docker)
        for platform in platforms
    ]
    return build_index(manifests, docker=docker, attestations=attestations and not docker)


def build_artifact(
    subject: Descriptor | None,
    artifact_type: str,
    payload: bytes,
    payload_type: str,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An OCI 1.1 artifact manifest (a signature, an SBOM...) referring to ``subject``: ``artifactType``, the
    empty config, ``payload`` as its one layer, and ``subject`` (the digest, media type and size only)."""
    empty = b"{}"
    config = Descriptor.from_bytes(mediatypes.OCI_EMPTY, empty)
    layer = Descriptor.from_bytes(payload_type, payload)
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    if subject is not None:
        document["subject"] = Descriptor(
            media_type=subject.media_type, digest=subject.digest, size=subject.size
        ).to_json()
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = _encode(document)
    descriptor = Descriptor.from_bytes(
        mediatypes.OCI_MANIFEST, manifest, artifact_type=artifact_type, annotations=dict(annotations or {}) or None
    )
    blobs = {config.digest: empty, layer.digest: payload, descriptor.digest: manifest}
    return Image(descriptor, blobs, descriptors=(config, layer, descriptor))


def build_cosign_signature(subject: Descriptor, seed: str) -> Image:
    """A cosign-style legacy signature (pushed under the tag ``sha256-<hex>.sig``): a manifest without
    ``subject`` whose one layer is a simple-signing payload naming ``subject``, with a signature annotation."""
    payload = _encode({"critical": {"image": {"docker-manifest-digest": subject.digest}, "type": "cosign"}})
    layer = Descriptor.from_bytes(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        payload,
        annotations={"dev.cosignproject.cosign/signature": f"MEUCIQ-{seed}"},
    )
    config_bytes = _encode({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}})
    config = Descriptor.from_bytes(mediatypes.OCI_CONFIG, config_bytes)
    manifest = _single_layer_manifest(config, layer)
    descriptor = Descriptor.from_bytes(mediatypes.OCI_MANIFEST, manifest)
    blobs = {config.digest: config_bytes, layer.digest: payload, descriptor.digest: manifest}
    return Image(descriptor, blobs, descriptors=(config, layer, descriptor))


def push_image(
    base_url: str, repository: str, tag: str | None, image: Image, session: requests.Session | None = None
) -> None:
    """Push ``image`` to ``base_url`` (``http://127.0.0.1:5000``) as ``repository:tag`` over the API.

    Blobs go first (monolithic POST + PUT, skipped when HEAD says the registry has them), then manifests
    children-first by digest, then the root under ``tag``. ``session`` carries any authentication.
    """
    http = session or requests.Session()
    base = base_url.rstrip("/")
    for descriptor in image.all_descriptors():
        content = image.blobs[descriptor.digest]
        if mediatypes.is_document(descriptor.media_type):
            reference = tag if descriptor.digest == image.digest and tag else descriptor.digest
            _put_manifest(http, base, repository, reference, descriptor.media_type, content)
        else:
            _push_blob(http, base, repository, descriptor.digest, content)


def _push_blob(http: requests.Session, base: str, repository: str, digest: str, content: bytes) -> None:
    if http.head(f"{base}/v2/{repository}/blobs/{digest}", timeout=30).status_code == 200:
        return
    started = http.post(f"{base}/v2/{repository}/blobs/uploads/", timeout=30)
    _expect(started, 202, f"start upload of {digest} to {repository}")
    location = urljoin(f"{base}/", started.headers["Location"])
    separator = "&" if "?" in location else "?"
    finished = http.put(
        f"{location}{separator}digest={digest}",
        data=content,
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    )
    _expect(finished, 201, f"upload {digest} to {repository}")


def _put_manifest(
    http: requests.Session, base: str, repository: str, reference: str, media_type: str, content: bytes
) -> None:
    response = http.put(
        f"{base}/v2/{repository}/manifests/{reference}",
        data=content,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    _expect(response, 201, f"put manifest {repository}:{reference}")


def _expect(response: requests.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")


def _single_layer_manifest(config: Descriptor, layer: Descriptor) -> bytes:
    return _encode(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        }
    )


def _encode(document: Mapping[str, object]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=False).encode()
