"""Documents against containerd's handler tests and image-spec's schema tests (``tests/peers/*.yaml``).

containerd's ``validateMediaType`` is ocimirror's ``validate_media_type``; image-spec's schema validation of
a descriptor is ``Descriptor.model_validate`` and of a manifest or index is ``parse_document``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor, ref_key
from ocimirror.errors import InvalidManifest
from ocimirror.manifest import Manifest, parse_document, validate_media_type
from ocimirror.pull import pull
from ocimirror.remotes.reference import parse_reference
from ocimirror.remotes.registry import Registry
from ocimirror.store import open_store
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.peer_tables import rows, undocumented_differences
from tests.test_handlers import DictFetcher

CONTAINERD = "containerd_images"
IMAGE_SPEC = "image_spec_schema"


def test_every_peer_difference_is_in_the_readme() -> None:
    assert undocumented_differences() == []


@pytest.mark.parametrize("row", rows(CONTAINERD, "TestValidateMediaType"))
def test_validate_media_type(row: dict[str, Any]) -> None:
    try:
        validate_media_type(row["declared"], row["body"])
        valid = True
    except InvalidManifest:
        valid = False
    assert valid is row["valid"]


@pytest.mark.parametrize("row", rows(CONTAINERD, "TestContextCustomKeyPrefix"))
def test_ref_key(row: dict[str, Any]) -> None:
    # Built without validation: the peer's unknown type is not even type/subtype, which a document would refuse.
    descriptor = Descriptor.model_construct(media_type=row["media_type"], digest="sha256:" + "0" * 64, size=0)
    assert ref_key(descriptor) == f"{row['prefix']}{descriptor.digest}"


@pytest.mark.parametrize("row", rows(CONTAINERD, "TestSkipNonDistributableBlobs"))
def test_non_distributable_layers(row: dict[str, Any]) -> None:
    assert mt.is_nondistributable(row["media_type"]) is row["skipped"]


def _refused(row: dict[str, Any], kind: str) -> bool:
    document = row.get("document")
    try:
        if kind == "descriptor":
            Descriptor.model_validate(document)
        else:
            declared = document.get("mediaType") if isinstance(document, dict) else None
            if not (isinstance(declared, str) and mt.is_document(declared)):
                declared = mt.OCI_INDEX if kind == "index" else mt.OCI_MANIFEST
            content = row["raw"].encode() if "raw" in row else json.dumps(document).encode()
            parse_document(declared, content)
    except (ValidationError, InvalidManifest):
        return True
    return False


@pytest.mark.parametrize(
    ("row", "kind"),
    [(row, "descriptor") for row in rows(IMAGE_SPEC, "TestDescriptor")]
    + [(row, "manifest") for row in rows(IMAGE_SPEC, "TestManifest")]
    + [(row, "index") for row in rows(IMAGE_SPEC, "TestImageIndex")],
)
def test_schema(row: Any, kind: str) -> None:
    values = row.values[0]
    refused = _refused(values, kind)
    if "difference" in values:
        assert refused is (values["ocimirror"] == "refused")
    else:
        assert refused is values["fail"], values["comment"]


def _image(fetcher: DictFetcher, body_type: str, served_type: str) -> tuple[Descriptor, bytes]:
    config = fetcher.add(mt.OCI_CONFIG if "oci" in body_type else mt.DOCKER_CONFIG, {"architecture": "amd64"})
    layer_type = mt.OCI_LAYER_GZIP if "oci" in body_type else mt.DOCKER_LAYER_GZIP
    layer = fetcher.add(layer_type, {"pretend": "layer"})
    body = {"schemaVersion": 2, "mediaType": body_type, "config": config.to_json(), "layers": [layer.to_json()]}
    root = fetcher.add(served_type, body)
    return root, fetcher.blobs[root.digest]


@pytest.mark.parametrize(
    ("body_type", "served_type"), [(mt.DOCKER_MANIFEST, mt.OCI_MANIFEST), (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST)]
)
def test_cross_labelled_manifests_are_mirrored_as_served(tmp_path: Path, body_type: str, served_type: str) -> None:
    """A Docker manifest served as OCI (or the reverse) is mirrored byte for byte, recorded under the media
    type the registry served, and verifies, as containerd accepts it."""
    fetcher = DictFetcher()
    root, content = _image(fetcher, body_type, served_type)
    assert isinstance(parse_document(served_type, content), Manifest)
    store = open_store(str(tmp_path))
    pull(fetcher, store, root, "registry.example/app:1")
    tagged = store.resolve("registry.example/app:1")
    assert (tagged.media_type, tagged.digest) == (served_type, root.digest)
    assert b"".join(store.fetch(tagged)) == content
    assert verify_store(store).ok


@pytest.mark.registry
def test_registry_serving_an_oci_manifest_as_docker(tmp_path: Path, fault_proxy: FaultProxy) -> None:
    """A real registry behind a proxy that labels manifests as Docker's: the OCI body is accepted, and the
    image is recorded under the media type served."""
    fault_proxy.add(Fault("set_headers", "/manifests/", headers={"Content-Type": mt.DOCKER_MANIFEST}, times=None))
    ref = parse_reference(f"{fault_proxy.host}/test/single:v1")
    store = open_store(str(tmp_path / "store"))
    with Registry(environ={}, docker_config=tmp_path / "none.json") as registry:
        root = registry.resolve(ref)
        pull(registry.fetcher(ref), store, root, str(ref))
    tagged = store.resolve(str(ref))
    assert (tagged.media_type, tagged.digest) == (mt.DOCKER_MANIFEST, root.digest)
    assert json.loads(b"".join(store.fetch(tagged)))["mediaType"] == mt.OCI_MANIFEST
    assert verify_store(store).ok
