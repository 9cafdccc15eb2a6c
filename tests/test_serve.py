"""``ocimirror serve`` over plain HTTP: names, scoping, pagination, ranges and every error of the spec.

Clients (skopeo, containerd, ocimirror itself) are in test_serve_clients.py; these tests speak HTTP with
``requests`` and raw sockets so each answer can be checked exactly.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ocimirror.content import copy_content
from ocimirror.descriptor import Descriptor
from ocimirror.errors import ConfigError
from ocimirror.serve import (
    Htpasswd,
    Mapping,
    MissingDependency,
    NameMap,
    RegistryApp,
    RegistryServer,
    ServeError,
    TLSFiles,
)
from ocimirror.serve.names import InvalidName
from ocimirror.store import open_store
from ocimirror_demo.registry import htpasswd_file
from tests.fixtures.served import MirroredStore

ROOT = Path(__file__).resolve().parent.parent


def errors_of(response: requests.Response) -> list[str]:
    assert response.headers["Content-Type"] == "application/json"
    return [error["code"] for error in response.json()["errors"]]


@pytest.fixture
def mapped(mirrored_store: MirroredStore) -> NameMap:
    """``src/...`` names the repositories of the seeded registry (its host has a port)."""
    return NameMap([Mapping("src", mirrored_store.upstream)])


@pytest.fixture
def served(mirrored_store, mapped, serve) -> RegistryServer:
    return serve(mirrored_store.open(), mapped)


# ----------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "namespace", "stored"),
    [
        ("library/alpine", None, "docker.io/library/alpine"),
        ("alpine", None, "docker.io/library/alpine"),
        ("user/app", None, "docker.io/user/app"),
        ("docker.io/alpine", None, "docker.io/library/alpine"),
        ("ghcr.io/org/app", None, "ghcr.io/org/app"),
        ("localhost/app", None, "localhost/app"),
        ("corp/app", None, "registry.corp:5000/app"),
        ("corp/team/app", None, "registry.corp:5000/team/app"),
        ("corp/team/x/app", None, "other.corp/x/app"),
        ("test/app", "127.0.0.1:5000", "127.0.0.1:5000/test/app"),
        ("library/alpine", "docker.io", "docker.io/library/alpine"),
        ("corp/app", "registry.corp:5000", "registry.corp:5000/corp/app"),
    ],
)
def test_request_names_map_to_stored_names(name: str, namespace: str | None, stored: str) -> None:
    names = NameMap([Mapping.parse("corp=registry.corp:5000"), Mapping.parse("corp/team/x=other.corp/x")])
    assert names.stored_name(name, namespace) == stored


@pytest.mark.parametrize(
    ("name", "namespace"),
    [("Upper/app", None), ("app:tag", None), ("a//b", None), ("a/b@sha256", None), ("app", "bad host!")],
)
def test_names_no_client_can_send_are_invalid(name: str, namespace: str | None) -> None:
    with pytest.raises(InvalidName):
        NameMap().stored_name(name, namespace)


def test_client_names_are_what_catalog_lists() -> None:
    names = NameMap([Mapping.parse("corp=registry.corp:5000")])
    assert names.client_name("docker.io/library/alpine") == "library/alpine"
    assert names.client_name("ghcr.io/org/app") == "ghcr.io/org/app"
    assert names.client_name("registry.corp:5000/app") == "corp/app"
    assert names.client_name("other.corp:5000/app") is None  # only containerd's ?ns= reaches it
    assert names.unreachable_registries(["other.corp:5000/app", "registry.corp:5000/app"]) == ["other.corp:5000"]


@pytest.mark.parametrize("text", ["corp", "=registry", "Corp=registry.corp", "corp=bad host", "corp=a.b/Up"])
def test_bad_mappings_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Mapping.parse(text)


def test_one_prefix_maps_one_registry() -> None:
    with pytest.raises(ConfigError, match="twice"):
        NameMap([Mapping.parse("corp=a.corp"), Mapping.parse("corp=b.corp")])


# ------------------------------------------------------------------------------------------ names over HTTP


def test_catalog_lists_the_names_clients_can_use(served, mirrored_store) -> None:
    repositories = requests.get(f"{served.url}/v2/_catalog", timeout=10).json()["repositories"]
    seeded = sorted(f"src/{name.partition(':')[0]}" for name in mirrored_store.roots)
    assert repositories == sorted([*seeded, "ghcr.io/org/app", "library/single"])


def test_every_naming_rule_reaches_its_image(served, mirrored_store) -> None:
    single = mirrored_store.roots["test/single:v1"]
    for path in ("src/test/single", "library/single", "single", "docker.io/library/single"):
        response = requests.get(f"{served.url}/v2/{path}/manifests/v1", timeout=10)
        assert response.status_code == 200, path
        assert response.headers["Docker-Content-Digest"] == single.digest
    ns = requests.get(f"{served.url}/v2/test/single/manifests/v1?ns={mirrored_store.upstream}", timeout=10)
    assert ns.headers["Docker-Content-Digest"] == single.digest
    shared = mirrored_store.roots["test/shared-a:v1"]
    response = requests.get(f"{served.url}/v2/ghcr.io/org/app/manifests/v1", timeout=10)
    assert response.headers["Docker-Content-Digest"] == shared.digest


def test_manifests_carry_their_media_type_digest_and_length(served, mirrored_store) -> None:
    for name, root in mirrored_store.roots.items():
        repository, _, tag = name.partition(":")
        url = f"{served.url}/v2/src/{repository}/manifests/{tag}"
        head = requests.head(url, timeout=10)
        got = requests.get(url, timeout=10)
        for response in (head, got):
            assert response.status_code == 200
            assert response.headers["Content-Type"] == root.media_type
            assert response.headers["Docker-Content-Digest"] == root.digest
            assert response.headers["Content-Length"] == str(root.size)
        assert head.content == b"" and len(got.content) == root.size
        by_digest = requests.get(f"{served.url}/v2/src/{repository}/manifests/{root.digest}", timeout=10)
        assert by_digest.content == got.content


# --------------------------------------------------------------------------------------------------- scoping


def _layer_of(served: RegistryServer, repository: str) -> str:
    manifest = requests.get(f"{served.url}/v2/{repository}/manifests/v1", timeout=10).json()
    return manifest["layers"][0]["digest"]


def test_content_is_served_only_under_names_that_hold_it(served) -> None:
    single_layer = _layer_of(served, "src/test/single")
    assert requests.get(f"{served.url}/v2/src/test/single/blobs/{single_layer}", timeout=10).status_code == 200
    for repository in ("src/test/many", "no/such"):
        response = requests.get(f"{served.url}/v2/{repository}/blobs/{single_layer}", timeout=10)
        assert (response.status_code, errors_of(response)) == (404, ["BLOB_UNKNOWN"])
    single = requests.get(f"{served.url}/v2/src/test/single/manifests/v1", timeout=10)
    digest = single.headers["Docker-Content-Digest"]
    for repository in ("src/test/many", "no/such"):
        response = requests.get(f"{served.url}/v2/{repository}/manifests/{digest}", timeout=10)
        assert (response.status_code, errors_of(response)) == (404, ["MANIFEST_UNKNOWN"])
    # Manifests are blobs of their repository too, as in distribution.
    as_blob = requests.get(f"{served.url}/v2/src/test/single/blobs/{digest}", timeout=10)
    assert as_blob.content == single.content


def test_a_shared_layer_is_served_under_each_image_that_has_it(served) -> None:
    layer = _layer_of(served, "src/test/shared-a")
    assert layer == _layer_of(served, "src/test/shared-b")
    for repository in ("src/test/shared-a", "src/test/shared-b", "ghcr.io/org/app"):
        assert requests.head(f"{served.url}/v2/{repository}/blobs/{layer}", timeout=10).status_code == 200


def test_only_manifests_are_served_from_manifests(served) -> None:
    """A config blob is JSON too, but ``/manifests/<digest>`` of it is unknown, as in distribution."""
    manifest = requests.get(f"{served.url}/v2/src/test/single/manifests/v1", timeout=10).json()
    config = requests.get(f"{served.url}/v2/src/test/single/manifests/{manifest['config']['digest']}", timeout=10)
    assert (config.status_code, errors_of(config)) == (404, ["MANIFEST_UNKNOWN"])


def test_a_new_tag_is_served_without_a_restart(mirrored_store, serve, tmp_path) -> None:
    store = mirrored_store.copy_to(tmp_path / "store")
    server = serve(store)
    assert requests.get(f"{server.url}/v2/library/late/tags/list", timeout=10).status_code == 404
    store.tag("docker.io/library/late:v2", mirrored_store.roots["test/many:v1"])
    assert requests.get(f"{server.url}/v2/library/late/tags/list", timeout=10).json()["tags"] == ["v2"]
    store.untag("docker.io/library/late:v2")
    assert requests.get(f"{server.url}/v2/library/late/manifests/v2", timeout=10).status_code == 404


# ------------------------------------------------------------------------------------------------ pagination


def test_tags_list_pages_with_n_and_last(mirrored_store, serve, tmp_path) -> None:
    store = mirrored_store.copy_to(tmp_path / "store")
    for tag in ("a", "b", "c", "d"):
        store.tag(f"docker.io/library/paged:{tag}", mirrored_store.roots["test/single:v1"])
    base = f"{serve(store).url}/v2/library/paged/tags/list"
    assert requests.get(base, timeout=10).json() == {"name": "library/paged", "tags": ["a", "b", "c", "d"]}
    assert requests.get(f"{base}?last=b", timeout=10).json()["tags"] == ["c", "d"]
    first = requests.get(f"{base}?n=2", timeout=10)
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["Link"] == '</v2/library/paged/tags/list?n=2&last=b>; rel="next"'
    following = requests.get(base.removesuffix("/v2/library/paged/tags/list") + first.links["next"]["url"], timeout=10)
    assert following.json()["tags"] == ["c", "d"] and "Link" not in following.headers
    assert requests.get(f"{base}?n=0", timeout=10).json()["tags"] == []
    assert requests.get(f"{base}?n=%C2%B2", timeout=10).json()["tags"] == ["a", "b", "c", "d"]  # n=² ignored


def test_catalog_pages_with_n_and_last(served) -> None:
    everything = requests.get(f"{served.url}/v2/_catalog", timeout=10).json()["repositories"]
    page = requests.get(f"{served.url}/v2/_catalog?n=2&last={everything[0]}", timeout=10)
    assert page.json()["repositories"] == everything[1:3]
    assert page.links["next"]["url"] == f"/v2/_catalog?n=2&last={everything[2].replace('/', '%2F')}"


# ------------------------------------------------------------------------------------------------ blobs, Range


def test_blob_ranges(served) -> None:
    layer = _layer_of(served, "src/test/single")
    url = f"{served.url}/v2/src/test/single/blobs/{layer}"
    whole = requests.get(url, timeout=10)
    size = len(whole.content)
    assert whole.headers["Docker-Content-Digest"] == layer and whole.headers["Accept-Ranges"] == "bytes"
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == whole.content[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{size}"
    tail = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert tail.status_code == 206 and tail.content == whole.content[-5:]
    open_ended = requests.get(url, headers={"Range": f"bytes={size - 3}-"}, timeout=10)
    assert open_ended.content == whole.content[-3:]
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
    assert (beyond.status_code, errors_of(beyond)) == (416, ["RANGE_INVALID"])
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    for ignored in ("bytes=5-2", "bytes=0-1,4-5", "lines=1-2", "bytes=" + "9" * 30 + "-"):
        response = requests.get(url, headers={"Range": ignored}, timeout=10)
        assert response.status_code == 200 and response.content == whole.content, ignored
    head = requests.head(url, headers={"Range": "bytes=0-9"}, timeout=10)
    assert head.status_code == 206 and head.headers["Content-Length"] == "10" and head.content == b""


# ---------------------------------------------------------------------------------------------------- errors


def test_errors_follow_the_spec_and_never_name_the_store(served, mirrored_store) -> None:
    base = f"{served.url}/v2"
    layer = _layer_of(served, "src/test/single")
    cases = {
        f"{base}/src/test/single/manifests/nope": (404, "MANIFEST_UNKNOWN"),
        f"{base}/src/test/single/manifests/sha256:{'0' * 64}": (404, "MANIFEST_UNKNOWN"),
        f"{base}/src/test/single/manifests/sha256:zz": (400, "DIGEST_INVALID"),
        f"{base}/src/test/single/blobs/sha256:{'0' * 64}": (404, "BLOB_UNKNOWN"),
        f"{base}/src/test/single/blobs/sha256:..%2F..%2Fetc%2Fpasswd": (404, "UNSUPPORTED"),  # no such route
        f"{base}/src/test/single/blobs/sha256:..": (400, "DIGEST_INVALID"),
        f"{base}/src/test/single/blobs/{layer.upper()}": (400, "DIGEST_INVALID"),
        f"{base}/no/such/tags/list": (404, "NAME_UNKNOWN"),
        f"{base}/no/such/manifests/v1": (404, "MANIFEST_UNKNOWN"),
        f"{base}/Upper/case/tags/list": (400, "NAME_INVALID"),
        f"{base}/test/single/tags/list?ns=not a host": (400, "NAME_INVALID"),
        f"{base}/no/such/referrers/{layer}": (404, "NAME_UNKNOWN"),
        f"{base}/src/test/single/referrers/sha256:zz": (400, "DIGEST_INVALID"),
        f"{served.url}/other": (404, "UNSUPPORTED"),
    }
    for url, (status, code) in cases.items():
        response = requests.get(url, timeout=10)
        assert (response.status_code, errors_of(response)) == (status, [code]), url
        assert str(mirrored_store.path) not in response.text and "store" not in response.text.lower()
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        head = requests.head(url, timeout=10)
        assert head.status_code == status and head.content == b""


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
def test_writes_are_unsupported(served, method: str) -> None:
    for path in ("/v2/src/test/single/manifests/v2", "/v2/src/test/single/blobs/uploads/", "/v2/"):
        response = requests.request(method, f"{served.url}{path}", data=b"{}", timeout=10)
        assert (response.status_code, errors_of(response)) == (405, ["UNSUPPORTED"])
        assert response.headers["Allow"] == "GET, HEAD"


def test_a_symlinked_blob_or_a_fifo_is_not_served(mirrored_store, mapped, serve, tmp_path) -> None:
    store = mirrored_store.copy_to(tmp_path / "store")
    server = serve(store, mapped)
    layer = _layer_of(server, "src/test/single")
    target = tmp_path / "store" / "blobs" / "sha256" / layer.partition(":")[2]
    target.unlink()
    target.symlink_to("/etc/passwd")
    response = requests.get(f"{server.url}/v2/src/test/single/blobs/{layer}", timeout=10)
    assert (response.status_code, errors_of(response)) == (404, ["BLOB_UNKNOWN"])
    assert "root:" not in response.text
    target.unlink()
    os.mkfifo(target)  # nor anything else that is no regular file (opening a FIFO must not wait for a writer)
    response = requests.get(f"{server.url}/v2/src/test/single/blobs/{layer}", timeout=10)
    assert (response.status_code, errors_of(response)) == (404, ["BLOB_UNKNOWN"])


def test_a_symlinked_blobs_directory_is_not_followed(mirrored_store, mapped, serve, tmp_path) -> None:
    """Not even to a copy of the same content: the store serves what is inside it."""
    elsewhere = tmp_path / "elsewhere"
    mirrored_store.copy_to(elsewhere)
    store = mirrored_store.copy_to(tmp_path / "store")
    layer = _layer_of(serve(store, mapped), "src/test/single")
    blobs = tmp_path / "store" / "blobs"
    os.rename(blobs, tmp_path / "moved")
    blobs.symlink_to(elsewhere / "blobs")
    server = serve(store, mapped)
    blob = requests.get(f"{server.url}/v2/src/test/single/blobs/{layer}", timeout=10)
    manifest = requests.get(f"{server.url}/v2/src/test/single/manifests/v1", timeout=10)
    assert (blob.status_code, errors_of(blob)) == (404, ["BLOB_UNKNOWN"])
    assert (manifest.status_code, errors_of(manifest)) == (404, ["MANIFEST_UNKNOWN"])


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"schemaVersion": 2, "manifests": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["corrupt", "not-an-object", "nested-100k"],
)
def test_an_unusable_index_is_a_500_and_one_log_line(mirrored_store, serve, tmp_path, caplog, content) -> None:
    store = mirrored_store.copy_to(tmp_path / "store")
    (tmp_path / "store" / "index.json").write_bytes(content)
    server = serve(store)
    with caplog.at_level(logging.WARNING):
        for path in ("/v2/_catalog", "/v2/library/single/manifests/v1", "/v2/library/single/tags/list"):
            response = requests.get(f"{server.url}{path}", timeout=10)
            assert (response.status_code, errors_of(response)) == (500, ["UNKNOWN"])
            assert str(tmp_path) not in response.text
        assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200
    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1 and "index.json" in lines[0].getMessage() and lines[0].exc_info is None


def test_a_deeply_nested_manifest_is_served_as_stored(mirrored_store, serve, tmp_path, caplog) -> None:
    """A manifest nobody can parse is still the content stored under the tag: it is served byte for byte
    (the client decides), the server logs one line and answers every request."""
    store = mirrored_store.copy_to(tmp_path / "store")
    nested = b'{"schemaVersion": 2, "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    descriptor = _commit(store, "application/vnd.oci.image.manifest.v1+json", nested)
    store.tag("docker.io/library/deep:v1", descriptor)
    server = serve(store)
    with caplog.at_level(logging.WARNING):
        response = requests.get(f"{server.url}/v2/library/deep/manifests/v1", timeout=10)
        assert response.status_code == 200 and response.content == nested
        assert requests.get(f"{server.url}/v2/_catalog", timeout=10).status_code == 200
    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1 and "nested deeper" in lines[0].getMessage()


@pytest.fixture
def big_blob(mirrored_store, serve, tmp_path) -> tuple[RegistryServer, str, bytes]:
    """A server whose store has ``library/big:v1`` with one 8 MiB layer: (server, layer blob URL, content)."""
    store = mirrored_store.copy_to(tmp_path / "store")
    big = os.urandom(8 * 1024 * 1024)
    layer = _commit(store, "application/vnd.oci.image.layer.v1.tar", big)
    store.tag("docker.io/library/big:v1", _manifest_over(store, layer))
    server = serve(store)
    return server, f"/v2/library/big/blobs/{layer.digest}", big


def _start_download(server: RegistryServer, path: str) -> socket.socket:
    connection = socket.create_connection((server.host, server.port))
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return connection


def test_a_client_hanging_up_mid_blob_is_not_an_error(big_blob, caplog) -> None:
    server, path, big = big_blob
    with caplog.at_level(logging.DEBUG):
        for _ in range(20):
            with _start_download(server, path) as connection:
                connection.recv(65536)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        assert requests.get(f"{server.url}{path}", timeout=30).content == big
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_clients_that_stop_reading_do_not_hold_up_others(big_blob) -> None:
    """Each response waits for its own socket to drain; nobody else waits for it."""
    server, path, big = big_blob
    stalled = [_start_download(server, path) for _ in range(80)]  # more than the I/O worker threads
    try:
        for connection in stalled:
            assert connection.recv(1024).startswith(b"HTTP/1.1 200")  # started, then never read again
        assert requests.get(f"{server.url}{path}", timeout=30).content == big
        assert requests.get(f"{server.url}/v2/_catalog", timeout=30).status_code == 200
    finally:
        for connection in stalled:
            connection.close()


def _commit(store, media_type: str, content: bytes) -> Descriptor:
    """Commit ``content`` to ``store`` (through the store's own verified write path)."""
    descriptor = Descriptor.from_bytes(media_type, content)
    copy_content(store, store, descriptor.model_copy(update={"data": base64.b64encode(content).decode()}))
    return descriptor


def _manifest_over(store, layer: Descriptor) -> Descriptor:
    """A manifest with ``layer`` and an empty config, committed to ``store``."""
    config = _commit(store, "application/vnd.oci.empty.v1+json", b"{}")
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    return _commit(store, "application/vnd.oci.image.manifest.v1+json", json.dumps(document).encode())


# ----------------------------------------------------------------------------------------- connections, auth


def test_idle_connections_are_closed_and_do_not_block_others(served_store_idle) -> None:
    server = served_store_idle
    idle = [socket.create_connection((server.host, server.port)) for _ in range(300)]
    try:
        assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200
        partial = idle[0]
        partial.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        for connection in idle:
            connection.settimeout(60)
            assert connection.recv(1024) == b""  # closed by the server when the idle timeout fired
    finally:
        for connection in idle:
            connection.close()


@pytest.fixture
def served_store_idle(mirrored_store, serve) -> RegistryServer:
    return serve(mirrored_store.open(), idle_timeout=1)


@pytest.fixture
def htpasswd_path(tmp_path) -> Path:
    path = tmp_path / "htpasswd"
    entries = htpasswd_file({"puller": "pull-secret", "apache": "apache-secret"})
    # Apache's htpasswd -B writes the $2y$ prefix; bcrypt libraries write $2b$ (the same algorithm).
    entries = entries.replace("apache:$2b$", "apache:$2y$")
    assert "apache:$2y$" in entries
    path.write_text("# mirror users\n\n" + entries)
    return path


def test_basic_auth_from_htpasswd(mirrored_store, serve, htpasswd_path) -> None:
    server = serve(mirrored_store.open(), htpasswd=Htpasswd.load(htpasswd_path))
    challenge = requests.get(f"{server.url}/v2/", timeout=10)
    assert (challenge.status_code, errors_of(challenge)) == (401, ["UNAUTHORIZED"])
    assert challenge.headers["WWW-Authenticate"].startswith('Basic realm="ocimirror"')
    for wrong in (("puller", "nope"), ("nobody", "pull-secret")):
        assert requests.get(f"{server.url}/v2/", auth=wrong, timeout=10).status_code == 401
    for credentials in [("puller", "pull-secret")] * 2 + [("apache", "apache-secret")]:  # 2nd: from the cache
        response = requests.get(f"{server.url}/v2/library/single/tags/list", auth=credentials, timeout=10)
        assert response.json()["tags"] == ["v1"]
    assert requests.put(f"{server.url}/v2/library/single/manifests/x", timeout=10).status_code == 401
    assert "pull-secret" not in repr(server.app.htpasswd)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("user:{SHA}abc=\n", "line 1: only bcrypt"), ("# none\n", "has no users"), ("nocolon\n", "line 1: expected")],
)
def test_bad_htpasswd_files_are_refused(tmp_path, content: str, problem: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        Htpasswd.load(path)


def test_htpasswd_without_bcrypt_says_what_to_install(htpasswd_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # as if not installed: import raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'ocimirror\[serve\]'"):
        Htpasswd.load(htpasswd_path)


def test_unusable_tls_files_are_one_error(mirrored_store, tmp_path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ServeError, match="cannot use TLS certificate"):
        RegistryServer(
            RegistryApp(mirrored_store.open()), "127.0.0.1", 0, TLSFiles(tmp_path / "cert.pem", tmp_path / "x")
        )


# --------------------------------------------------------------------------------------------------- the CLI


CLI = [sys.executable, "-m", "ocimirror_cli", "serve"]
CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=CLI_ENV)


def test_sigterm_lets_a_download_in_flight_finish(big_blob, tmp_path) -> None:
    _, path, big = big_blob
    process = subprocess.Popen(
        [*CLI, str(tmp_path / "store"), "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=CLI_ENV
    )
    try:
        assert process.stderr is not None
        url = process.stderr.readline().split(" at ")[1].split()[0]  # "serving STORE at URL (Ctrl-C to stop)"
        host, port = url.removeprefix("http://").split(":")
        with socket.socket() as connection:
            # A small receive window: the server cannot have sent the blob before the signal.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            connection.connect((host, int(port)))
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = connection.recv(65536)
            process.terminate()  # SIGTERM while the blob is being sent
            while chunk := connection.recv(1 << 20):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == big
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_a_busy_port_is_one_line_and_exit_1(mirrored_store) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _cli(str(mirrored_store.path), "--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Address already in use" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--listen", "nowhere"], "expected HOST:PORT"),
        (["--map", "corp"], "expected PREFIX=REGISTRY"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--htpasswd", "/no/such/htpasswd"], "cannot read htpasswd file"),
    ],
)
def test_bad_serve_options_are_one_line_and_exit_2(mirrored_store, args: list[str], problem: str) -> None:
    result = _cli(str(mirrored_store.path), *args)
    assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_a_store_that_does_not_answer_is_a_500_and_one_log_line(serve, caplog) -> None:
    """An S3 endpoint where nothing listens: every request that needs the store fails alike, and says so once."""
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    server = serve(open_store("s3://unreachable/store", options))
    with caplog.at_level(logging.WARNING):
        response = requests.get(f"{server.url}/v2/library/single/tags/list", timeout=60)
    assert (response.status_code, errors_of(response)) == (500, ["UNKNOWN"])
    assert "unreachable" not in response.text and "127.0.0.1:9" not in response.text
    (line,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "\n" not in line.getMessage() and line.exc_info is None
