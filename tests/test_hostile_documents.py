"""JSON nested deeper than any real document (100,000 levels) from a store or a registry: one clear error,
never a RecursionError, wherever it is read (``ls``, ``verify``, a pull)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor
from ocimirror.digest import blob_path
from ocimirror.errors import InvalidManifest, NestingTooDeep, StoreError
from ocimirror.jsonlimits import MAX_JSON_DEPTH, decode_json, nested_deeper_than
from ocimirror.pull import pull
from ocimirror.remotes import Registry, parse_reference
from ocimirror.store import open_store
from tests.fixtures.scripted_registry import Answer

LEVELS = 100_000
DEEP = b"[" * LEVELS + b"]" * LEVELS


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocimirror_cli", *args], capture_output=True, text=True, timeout=120)


def _deep_manifest() -> bytes:
    config = Descriptor.from_bytes(mt.OCI_CONFIG, b"{}")
    document = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(), "layers": []}
    return json.dumps(document).encode()[:-1] + b', "extension": ' + DEEP + b"}"


@pytest.mark.parametrize(
    ("content", "deeper"),
    [
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), True),
        (json.dumps({"brackets in strings": "[[[[{{{{" * 1000, "escaped": '\\"[[[['}).encode(), False),
        (b"[" + b"[]," * 100_000 + b"[]]", False),  # wide, not deep
        (b"]]][[[", False),  # malformed: left for the decoder to report
    ],
)
def test_nesting_is_measured_without_decoding(content: bytes, deeper: bool) -> None:
    assert nested_deeper_than(content) is deeper


def test_decode_json_refuses_deep_documents_with_a_value_error() -> None:
    with pytest.raises(NestingTooDeep, match=f"nested deeper than {MAX_JSON_DEPTH} levels") as caught:
        decode_json(DEEP)
    assert isinstance(caught.value, ValueError)
    assert decode_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    open_store(str(root))._ensure_layout()
    return root


@pytest.mark.parametrize("command", ["ls", "verify"])
def test_a_deep_index_json_is_one_line_exit_1(command: str, store_root: Path) -> None:
    (store_root / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": ' + DEEP + b"}")
    with pytest.raises(StoreError, match=r"index\.json is corrupt: JSON nested deeper than"):
        open_store(str(store_root)).images()

    result = _cli(command, str(store_root))

    assert result.returncode == 1
    assert "index.json is corrupt: JSON nested deeper than 32 levels" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Recursion" not in result.stderr + result.stdout


def test_a_deep_stored_manifest_is_a_fault_for_verify_and_listed_by_ls(store_root: Path) -> None:
    content = _deep_manifest()
    manifest = Descriptor.from_bytes(mt.OCI_MANIFEST, content)
    path = store_root / blob_path(manifest.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    reference = "docker.io/test/deep:v1"
    open_store(str(store_root)).tag(reference, manifest)

    verified = _cli("verify", str(store_root))
    listed = _cli("ls", str(store_root))

    assert verified.returncode == 1, verified
    assert f"FAULT invalid-manifest {manifest.digest} in {reference}" in verified.stdout
    assert "JSON nested deeper than 32 levels" in verified.stdout
    assert listed.returncode == 0, listed
    assert listed.stdout.startswith(f"{reference}\t{manifest.digest}")
    assert "Recursion" not in verified.stderr + listed.stderr


def test_a_registry_serving_a_deep_manifest_fails_the_pull_clearly(scripted_registry, tmp_path) -> None:
    content = _deep_manifest()
    manifest = Descriptor.from_bytes(mt.OCI_MANIFEST, content)
    headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": manifest.digest}
    for reference in ("v1", manifest.digest):
        scripted_registry.answers[f"/v2/evil/deep/manifests/{reference}"] = Answer(200, content, headers)
    store = open_store(str(tmp_path / "store"))
    reference = parse_reference(f"{scripted_registry.host}/evil/deep:v1")

    with Registry(environ={}, docker_config=tmp_path / "none.json") as registry:
        root = registry.resolve(reference)
        with pytest.raises(InvalidManifest, match=re.escape(f"{mt.OCI_MANIFEST}: JSON nested deeper than 32")):
            pull(registry.fetcher(reference), store, root, f"{scripted_registry.host}/evil/deep:v1")

    assert store.images() == []
