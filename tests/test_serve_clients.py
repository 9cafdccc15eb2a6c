"""Real clients pull from ``ocimirror serve``: skopeo, containerd (through a ``hosts.toml`` mirror) and ocimirror.

Every seeded image kind (OCI index with attestations, Docker manifest list, single manifests, shared layers,
many layers) is copied and its digest compared with the stored one. Stores on S3 and GCS are served too.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ocimirror.digest import digest_bytes
from ocimirror.pull import pull
from ocimirror.remotes import Credentials, Registry, RegistryConfig, parse_reference
from ocimirror.serve import Htpasswd, Mapping, NameMap, TLSFiles
from ocimirror.store import open_store
from ocimirror.verify import verify_store
from ocimirror_demo.registry import htpasswd_file, write_self_signed_certificate
from tests.fixtures.served import EXTRA_NAMES, MirroredStore

pytestmark = pytest.mark.interop

#: A port nothing listens on (discard): an upstream registry that cannot be reached.
UNREACHABLE = "127.0.0.1:9"


def skopeo_copy(source: str, target: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``skopeo copy --all --preserve-digests`` of ``source`` into the directory ``target`` (``dir:`` keeps
    every manifest byte for byte, Docker manifest lists included, and skopeo checks every blob's digest)."""
    return subprocess.run(
        ["skopeo", "copy", "--all", "--preserve-digests", *options, source, f"dir:{target}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def copied_digest(target: Path) -> str:
    """The digest of the top manifest or index skopeo copied."""
    return digest_bytes((target / "manifest.json").read_bytes())


@pytest.fixture
def mapped_server(mirrored_store: MirroredStore, serve):
    return serve(mirrored_store.open(), NameMap([Mapping("src", mirrored_store.upstream)]))


# ---------------------------------------------------------------------------------------------------- skopeo


def test_skopeo_copies_every_image_kind_through_a_map(mapped_server, mirrored_store, tmp_path) -> None:
    """Plain HTTP on loopback, so ``--src-tls-verify=false`` (TLS is tested below)."""
    host = mapped_server.url.removeprefix("http://")
    for name, root in mirrored_store.roots.items():
        target = tmp_path / name.replace("/", "-").replace(":", "-")
        result = skopeo_copy(f"docker://{host}/src/{name}", target, "--src-tls-verify=false")
        assert result.returncode == 0, result.stderr
        assert copied_digest(target) == root.digest, name


def test_skopeo_copies_by_docker_hub_and_registry_names(mapped_server, mirrored_store, tmp_path) -> None:
    host = mapped_server.url.removeprefix("http://")
    for name, source in EXTRA_NAMES.items():
        client_name = name.removeprefix("docker.io/")
        target = tmp_path / client_name.replace("/", "-").replace(":", "-")
        result = skopeo_copy(f"docker://{host}/{client_name}", target, "--src-tls-verify=false")
        assert result.returncode == 0, result.stderr
        assert copied_digest(target) == mirrored_store.roots[source].digest


@pytest.fixture
def secured(mirrored_store: MirroredStore, serve, tmp_path):
    """serve over TLS (a self-signed certificate whose PEM is ``certs/ca.crt``) with Basic auth."""
    certs = tmp_path / "certs"
    certs.mkdir()
    write_self_signed_certificate(certs / "ca.crt", tmp_path / "key.pem")
    (tmp_path / "htpasswd").write_text(htpasswd_file({"puller": "pull-secret"}))
    server = serve(
        mirrored_store.open(),
        NameMap([Mapping("src", mirrored_store.upstream)]),
        Htpasswd.load(tmp_path / "htpasswd"),
        TLSFiles(certs / "ca.crt", tmp_path / "key.pem"),
    )
    return server, certs


def test_skopeo_copies_over_tls_with_credentials(secured, mirrored_store, tmp_path) -> None:
    server, certs = secured
    assert server.url.startswith("https://")
    source = f"docker://{server.url.removeprefix('https://')}/src/test/multiarch:v1"
    trusted = ("--src-cert-dir", str(certs))
    refused = skopeo_copy(source, tmp_path / "refused", *trusted)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    result = skopeo_copy(source, tmp_path / "copy", *trusted, "--src-creds", "puller:pull-secret")
    assert result.returncode == 0, result.stderr
    assert copied_digest(tmp_path / "copy") == mirrored_store.roots["test/multiarch:v1"].digest
    assert requests.get(f"{server.url}/v2/", verify=str(certs / "ca.crt"), timeout=10).status_code == 401


# ------------------------------------------------------------------------------------------------- ocimirror


def test_ocimirror_pulls_from_serve(mapped_server, mirrored_store, tmp_path) -> None:
    store = open_store(str(tmp_path / "again"))
    host = mapped_server.url.removeprefix("http://")
    with Registry() as registry:
        for name, root in mirrored_store.roots.items():
            reference = parse_reference(f"{host}/src/{name}")
            assert registry.resolve(reference).digest == root.digest
            pull(registry.fetcher(reference), store, root, str(reference))
    report = verify_store(store)
    assert report.ok and report.images_checked == len(mirrored_store.roots)


def test_ocimirror_uses_serve_as_a_mirror(serve, mirrored_store, tmp_path) -> None:
    """The upstream is unreachable: everything comes from the mirror, which finds it through ``?ns=``."""
    served = mirrored_store.copy_to(tmp_path / "served")
    root = mirrored_store.roots["test/multiarch:v1"]
    served.tag(f"{UNREACHABLE}/test/multiarch:v1", root)
    server = serve(served)
    upstream = parse_reference(f"{UNREACHABLE}/test/multiarch:v1")
    store = open_store(str(tmp_path / "again"))
    with Registry({UNREACHABLE: RegistryConfig(mirrors=[server.url])}) as registry:
        assert registry.resolve(upstream).digest == root.digest
        pull(registry.fetcher(upstream), store, root, str(upstream))
    assert store.resolve(str(upstream)).digest == root.digest


def test_ocimirror_pulls_over_tls_with_credentials(secured, mirrored_store, tmp_path) -> None:
    server, certs = secured
    host = server.url.removeprefix("https://")
    config = RegistryConfig(
        ca_bundle=str(certs / "ca.crt"), credentials=Credentials(username="puller", password="pull-secret")
    )
    reference = parse_reference(f"{host}/src/test/dockerlist:v1")
    store = open_store(str(tmp_path / "again"))
    with Registry({host: config}) as registry:
        root = registry.resolve(reference)
        pull(registry.fetcher(reference), store, root, str(reference))
    assert root.digest == mirrored_store.roots["test/dockerlist:v1"].digest
    assert verify_store(store).ok


# ------------------------------------------------------------------------------------------------ containerd


class Containerd:
    """A containerd daemon of its own (root, state and socket in a temporary directory), and ``ctr``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        (workdir / "config.toml").write_text(
            "version = 2\n"
            f'root = "{workdir}/root"\n'
            f'state = "{workdir}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{workdir}/ttrpc.sock"\n'
        )
        self.log = (workdir / "containerd.log").open("wb")
        self.process = subprocess.Popen(
            ["containerd", "--config", str(workdir / "config.toml")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while self.ctr("version").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (workdir / "containerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"containerd did not start:\n{tail}")
            time.sleep(0.1)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), *args], capture_output=True, text=True, timeout=120
        )

    def image_digest(self, reference: str) -> str:
        listed = self.ctr("images", "ls").stdout.splitlines()
        (line,) = [line for line in listed if line.split()[0] == reference]
        return line.split()[2]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    # Directly under /tmp: a unix socket path must stay under 108 bytes whatever the temp root is.
    workdir = Path(tempfile.mkdtemp(prefix="ocm-ctr-", dir="/tmp"))
    daemon = Containerd(workdir)
    yield daemon
    daemon.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_containerd_pulls_through_a_hosts_toml_mirror(containerd, serve, mirrored_store, tmp_path) -> None:
    """hosts.toml sends the upstream to an unreachable endpoint and names serve as its mirror, so every byte
    comes from serve (found through ``?ns=<upstream>``); the layers unpack, and the digests are the stored ones."""
    server = serve(mirrored_store.open())
    hosts = tmp_path / "hosts.d"
    (hosts / mirrored_store.upstream).mkdir(parents=True)
    (hosts / mirrored_store.upstream / "hosts.toml").write_text(
        f'server = "http://{UNREACHABLE}"\n\n[host."{server.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    for name, root in mirrored_store.roots.items():
        reference = f"{mirrored_store.upstream}/{name}"
        options = ("--hosts-dir", str(hosts), "--snapshotter", "native", "--platform", "linux/amd64")
        pulled = containerd.ctr("images", "pull", *options, reference)
        assert pulled.returncode == 0, pulled.stderr
        assert containerd.image_digest(reference) == root.digest
    everything = containerd.ctr(
        "content", "fetch", "--hosts-dir", str(hosts), "--all-platforms", f"{mirrored_store.upstream}/test/multiarch:v1"
    )
    assert everything.returncode == 0, everything.stderr


# --------------------------------------------------------------------------------------------- object stores


def test_a_store_on_an_object_store_is_served(object_store_server, mirrored_store, serve, tmp_path) -> None:
    store = open_store(object_store_server.new_url(), object_store_server.storage_options)
    local = mirrored_store.open()
    for name in ("test/single:v1", "test/multiarch:v1"):
        pull(local, store, mirrored_store.roots[name], f"docker.io/library/{name.removeprefix('test/')}")
    server = serve(store)
    host = server.url.removeprefix("http://")
    for name in ("single", "multiarch"):
        target = tmp_path / name
        result = skopeo_copy(f"docker://{host}/library/{name}:v1", target, "--src-tls-verify=false")
        assert result.returncode == 0, result.stderr
        assert copied_digest(target) == mirrored_store.roots[f"test/{name}:v1"].digest
    manifest = requests.get(f"{server.url}/v2/library/single/manifests/v1", timeout=10).json()
    layer = manifest["layers"][0]
    url = f"{server.url}/v2/library/single/blobs/{layer['digest']}"
    whole = requests.get(url, timeout=30).content
    assert len(whole) == layer["size"]
    ranged = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == whole[1000:]
