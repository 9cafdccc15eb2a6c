"""A registry that serves bad content: one clear error, and the store stays consistent.

The source is ``ocimirror serve`` over a store the test tampers with, so every byte the client sees is
chosen by the test; the fetch goes through the real registry client and the Prefect flow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ocimirror import mediatypes as mt
from ocimirror.content import copy_content
from ocimirror.descriptor import Descriptor
from ocimirror.digest import blob_path
from ocimirror.serve import RegistryServer
from ocimirror.store import LayoutStore, open_store
from ocimirror_demo.images import build_manifest, random_layer

pytestmark = pytest.mark.usefixtures("prefect_server")


class _Bytes:
    """A Fetcher over in-memory blobs, to put exactly the test's bytes into the source store."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Iterator[bytes]:
        yield self.blobs[descriptor.digest][offset:]


def _put(store: LayoutStore, descriptor: Descriptor, content: bytes) -> None:
    copy_content(_Bytes({descriptor.digest: content}), store, descriptor)


@pytest.fixture
def source(tmp_path, serve) -> tuple[RegistryServer, LayoutStore]:
    store = open_store(str(tmp_path / "source"))
    return serve(store), store


def _leftovers(root) -> list[str]:
    return (
        [str(p.relative_to(root)) for p in (root / "ingest").rglob("*") if p.is_file()]
        if (root / "ingest").exists()
        else []
    )


def test_a_corrupted_layer_fails_clearly_and_is_never_committed(source, tmp_path) -> None:
    from flows.fetch import fetch_image

    server, store = source
    image = build_manifest([random_layer(64 * 1024, "corrupt-me")])
    for descriptor in image.all_descriptors():
        _put(store, descriptor, image.blobs[descriptor.digest])
    store.tag("docker.io/test/corrupt:v1", image.descriptor)
    (layer,) = [d for d in image.descriptors if d.kind == "layer"]
    path = tmp_path / "source" / blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))

    mirror = tmp_path / "mirror"
    state = fetch_image(reference=f"{server.url[7:]}/test/corrupt:v1", store=str(mirror), return_state=True)

    assert state.is_failed()
    # Fetched a second time from byte 0 before giving up: a flipped byte in transit would have been survived.
    with pytest.raises(Exception, match=rf"(?s)DigestMismatch.*{layer.digest}.*served wrong content twice"):
        state.result()
    assert not (mirror / blob_path(layer.digest)).exists()
    assert open_store(str(mirror)).images() == []
    assert _leftovers(mirror) == []


def test_a_manifest_with_a_hostile_digest_is_refused_before_any_path_is_built(source, tmp_path) -> None:
    from flows.fetch import fetch_image

    server, store = source
    config = Descriptor.from_bytes(mt.OCI_CONFIG, b"{}")
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": "sha256:../../../../tmp/owned", "size": 3}],
    }
    content = json.dumps(body).encode()
    manifest = Descriptor.from_bytes(mt.OCI_MANIFEST, content)
    _put(store, manifest, content)
    store.tag("docker.io/test/evil:v1", manifest)  # serve answers only for content stored under a name

    mirror = tmp_path / "mirror"
    state = fetch_image(reference=f"{server.url[7:]}/test/evil@{manifest.digest}", store=str(mirror), return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match=r"(?s)InvalidManifest.*layers\.0\.digest.*invalid digest"):
        state.result()
    assert open_store(str(mirror)).images() == []
    assert not any(p.name == "owned" for p in tmp_path.rglob("owned"))
