"""Corrupted and resumed transfers into a real store, through a fault proxy in front of a real registry.

A byte flipped in transit is survived (the content is fetched once more from byte 0); wrong content twice
is the registry's, fails with one message, and leaves nothing behind. After a resume, only the bytes that
moved are counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocimirror.content import copy_content
from ocimirror.descriptor import ref_key
from ocimirror.digest import blob_path
from ocimirror.errors import DigestMismatch
from ocimirror.pull import pull
from ocimirror.remotes.reference import parse_reference
from ocimirror.remotes.registry import Registry
from ocimirror.store import LayoutStore, open_store
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.registry import SeededRegistry

pytestmark = pytest.mark.registry

MULTIARCH = "test/multiarch:v1"
SINGLE = "test/single:v1"


@pytest.fixture
def client(isolated_client) -> Registry:
    return isolated_client()


@pytest.fixture
def store(tmp_path: Path) -> LayoutStore:
    return open_store(str(tmp_path / "store"))


def leftovers(store: LayoutStore) -> list[Path]:
    ingest = Path(store.url) / "ingest"
    return [path for path in ingest.rglob("*") if path.is_file()] if ingest.exists() else []


def test_one_flipped_byte_per_blob_is_survived(fault_proxy: FaultProxy, seeded_registry, client, store) -> None:
    """Every manifest, config and layer arrives corrupted the first time: each is fetched again, once."""
    image = seeded_registry.images[MULTIARCH]
    corrupt = fault_proxy.add(Fault("corrupt", "/v2/test/multiarch/", method="GET", times=None, first_per_path=True))
    ref = parse_reference(f"{fault_proxy.host}/{MULTIARCH}")
    root = client.resolve(ref)
    pull(client.fetcher(ref), store, root, str(ref))

    descriptors = image.all_descriptors()
    assert corrupt.hits == len(descriptors) > 5  # every one of them was hit, and survived
    assert len(fault_proxy.recorded(path_contains="/v2/test/multiarch/", server="proxy")) == 1 + 2 * len(descriptors)
    report = verify_store(store)
    assert report.ok and report.blobs_checked == len(descriptors)
    assert [entry.digest for entry in store.images()] == [image.digest]
    assert leftovers(store) == []


def test_wrong_content_twice_fails_and_leaves_nothing(fault_proxy, seeded_registry: SeededRegistry, client, store):
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    corrupt = fault_proxy.add(Fault("corrupt", f"/blobs/{layer.digest}", method="GET", times=None))
    ref = parse_reference(f"{fault_proxy.host}/{SINGLE}")
    with pytest.raises(DigestMismatch, match="served wrong content twice") as caught:
        pull(client.fetcher(ref), store, client.resolve(ref), str(ref))
    message = str(caught.value)
    assert layer.digest in message and f"registry {fault_proxy.host} repository test/single" in message
    assert corrupt.hits == 2  # fetched twice, not more
    assert not (Path(store.url) / blob_path(layer.digest)).exists()
    assert store.images() == [] and leftovers(store) == []


def interrupted_ingest(store: LayoutStore, descriptor, prefix: bytes) -> None:
    """What a killed pull leaves: an ingest holding ``prefix``, to be resumed."""
    writer = store.writer(ref_key(descriptor), descriptor)
    writer.write(prefix)
    writer.close()


def test_resume_counts_only_the_bytes_that_moved(fault_proxy: FaultProxy, seeded_registry, client, store) -> None:
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    content = image.blobs[layer.digest]
    kept = layer.size * 2 // 3
    interrupted_ingest(store, layer, content[:kept])
    fetcher = client.fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))

    assert copy_content(fetcher, store, layer) == layer.size - kept
    assert fault_proxy.recorded(path_contains=layer.digest)[0].headers["Range"] == f"bytes={kept}-"
    assert copy_content(fetcher, store, layer) == 0  # committed: nothing moves
    assert (Path(store.url) / blob_path(layer.digest)).read_bytes() == content


def test_resumed_ingest_that_fails_its_hash_is_fetched_from_zero(fault_proxy, seeded_registry, client, store) -> None:
    """A partial ingest damaged on disk is only found out at the end; the fresh fetch repairs it."""
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    content = image.blobs[layer.digest]
    kept = layer.size // 2
    damaged = bytes([content[0] ^ 0xFF]) + content[1:kept]
    interrupted_ingest(store, layer, damaged)
    fetcher = client.fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))

    assert copy_content(fetcher, store, layer) == (layer.size - kept) + layer.size
    ranges = [request.headers.get("Range") for request in fault_proxy.recorded(path_contains=layer.digest)]
    assert ranges == [f"bytes={kept}-", None]
    assert (Path(store.url) / blob_path(layer.digest)).read_bytes() == content
    assert leftovers(store) == []


def test_copy_content_counts_a_discarded_attempt(fault_proxy: FaultProxy, seeded_registry, client, store) -> None:
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    fault_proxy.add(Fault("corrupt", f"/blobs/{layer.digest}", method="GET"))
    fetcher = client.fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    assert copy_content(fetcher, store, layer) == 2 * layer.size
    assert (Path(store.url) / blob_path(layer.digest)).read_bytes() == image.blobs[layer.digest]


def test_pull_reports_the_bytes_fetched_per_descriptor(fault_proxy, seeded_registry, client, store) -> None:
    """What a transfer report adds up: the rest of a resumed layer, nothing for content already present."""
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    kept = layer.size // 4
    interrupted_ingest(store, layer, image.blobs[layer.digest][:kept])
    ref = parse_reference(f"{fault_proxy.host}/{SINGLE}")
    root = client.resolve(ref)
    fetched: dict[str, int] = {}

    pull(client.fetcher(ref), store, root, str(ref), on_copied=lambda d, n: fetched.__setitem__(d.digest, n))
    expected = {d.digest: d.size for d in image.all_descriptors()} | {layer.digest: layer.size - kept}
    assert fetched == expected

    pull(client.fetcher(ref), store, root, str(ref), on_copied=lambda d, n: fetched.__setitem__(d.digest, n))
    assert set(fetched.values()) == {0}
