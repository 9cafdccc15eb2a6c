"""``ocimirror serve``: any registry client can pull what a store holds."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest
import requests

from ocimirror.pull import pull
from ocimirror.remotes import Registry, RegistryConfig, parse_reference
from ocimirror.serve import RegistryServer, stored_name
from ocimirror.store import open_store


@pytest.fixture
def served(seeded_registry, tmp_path) -> Iterator[tuple[RegistryServer, object]]:
    """A store holding test/multiarch:v1 (under its own name and as docker.io/test/multiarch:v1), served."""
    store = open_store(str(tmp_path / "store"))
    reference = parse_reference(seeded_registry.reference("test/multiarch:v1"))
    with Registry() as registry:
        root = pull(registry.fetcher(reference), store, registry.resolve(reference), str(reference))
    store.tag("docker.io/test/multiarch:v1", root)
    server = RegistryServer(store, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, root
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("repository", "namespace", "expected"),
    [
        ("library/alpine", None, "docker.io/library/alpine"),
        ("alpine", None, "docker.io/library/alpine"),
        ("ghcr.io/org/app", None, "ghcr.io/org/app"),
        ("test/app", "127.0.0.1:5000", "127.0.0.1:5000/test/app"),
    ],
)
def test_stored_names(repository: str, namespace: str | None, expected: str) -> None:
    assert stored_name(repository, namespace) == expected


def test_skopeo_copies_from_the_served_store(served, tmp_path) -> None:
    server, root = served
    host = server.url.removeprefix("http://")
    source = f"docker://{host}/test/multiarch:v1"
    inspected = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", source], capture_output=True, check=True
    )
    assert json.loads(inspected.stdout)["mediaType"] == root.media_type
    target = tmp_path / "copy"
    subprocess.run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", source, f"oci:{target}:v1"],
        capture_output=True, check=True,
    )  # fmt: skip
    copied = json.loads((target / "index.json").read_text())["manifests"]
    assert [entry["digest"] for entry in copied] == [root.digest]


def test_a_served_store_works_as_a_registry_mirror(served, seeded_registry, tmp_path) -> None:
    server, root = served
    upstream = parse_reference(seeded_registry.reference("test/multiarch:v1"))
    # The upstream is unreachable: everything must come from the mirror (found there through ?ns=).
    unreachable = upstream.__class__("127.0.0.1:9", upstream.repository, upstream.tag)
    configs = {"127.0.0.1:9": RegistryConfig(mirrors=[server.url])}
    store = open_store(str(tmp_path / "again"))
    with Registry(configs) as registry:
        server.store.tag(f"127.0.0.1:9/{upstream.repository}:v1", root)
        assert registry.resolve(unreachable).digest == root.digest
        pull(registry.fetcher(unreachable), store, root, str(unreachable))
    assert store.resolve(str(unreachable)).digest == root.digest


def test_errors_are_registry_errors(served) -> None:
    server, root = served
    base = f"{server.url}/v2/test/multiarch"
    assert requests.get(f"{base}/manifests/nope", timeout=5).status_code == 404
    hostile = requests.get(f"{base}/blobs/sha256:..%2F..%2Fetc%2Fpasswd", timeout=5)
    assert hostile.status_code in (400, 404)
    assert requests.get(f"{base}/blobs/sha256:{'0' * 64}", timeout=5).status_code == 404
    assert requests.put(f"{base}/manifests/v2", data=b"{}", timeout=5).status_code == 501
    ranged = requests.get(f"{base}/blobs/{root.digest}", headers={"Range": "bytes=10-19"}, timeout=5)
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert requests.get(f"{base}/tags/list", timeout=5).json()["tags"] == ["v1"]


def test_only_manifests_are_served_from_manifests(served) -> None:
    """A config blob is JSON too, but ``/manifests/<digest>`` of it is unknown, as in distribution: a client
    must never be handed a config labelled as a manifest."""
    server, _ = served
    index = json.loads(requests.get(f"{server.url}/v2/test/multiarch/manifests/v1", timeout=5).content)
    manifest = index["manifests"][0]
    base = f"{server.url}/v2/test/multiarch/manifests"
    served_manifest = requests.get(f"{base}/{manifest['digest']}", timeout=5)
    assert served_manifest.headers["Content-Type"] == manifest["mediaType"]
    config = requests.get(f"{base}/{json.loads(served_manifest.content)['config']['digest']}", timeout=5)
    assert config.status_code == 404
    assert config.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_a_tag_list_limit_that_is_no_number_is_ignored(served) -> None:
    server, _ = served
    listed = requests.get(f"{server.url}/v2/test/multiarch/tags/list?n=%C2%B2", timeout=5)  # n=²
    assert listed.status_code == 200 and listed.json()["tags"] == ["v1"]
