"""``ocimirror rm``, ``gc`` and ``verify --repair`` as commands, on stores filled from a real registry (no Prefect)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocimirror.content import read_document
from ocimirror.errors import DamagedContent
from ocimirror.pull import pull, recorded_name
from ocimirror.remotes import Registry, parse_reference
from ocimirror.store import LayoutStore
from ocimirror.verify import verify_store
from tests.test_store import StoreLocation, store_location, tree

ROOT = Path(__file__).resolve().parent.parent


def cli(location: StoreLocation, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ocimirror COMMAND STORE ARGS...`` in a subprocess, with the store's storage options."""
    options = [f"--storage-option={key}={json.dumps(value)}" for key, value in location.storage_options.items()]
    return subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", command, location.url, *args, *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def mirror(store: LayoutStore, *references: str) -> list[str]:
    """Pull ``references`` with the core (no Prefect); return the names they are recorded under."""
    names = []
    with Registry() as registry:
        for text in references:
            reference = parse_reference(text)
            name = recorded_name(reference)
            pull(registry.fetcher(reference), store, registry.resolve(reference), name)
            names.append(name)
    return names


def damage(store: LayoutStore, digest: str) -> None:
    """Flip one byte of a committed blob in place, as bit rot or an outside writer would (size unchanged)."""
    path = f"{store.backend.root}/blobs/{digest.replace(':', '/')}"
    content = bytearray(store.fs.cat_file(path))
    content[len(content) // 2] ^= 0x01
    store.fs.pipe_file(path, bytes(content))


@pytest.fixture(params=["file", "s3"])
def location(request: pytest.FixtureRequest) -> StoreLocation:
    return store_location(request.param, request)


def test_rm_then_gc_frees_exactly_what_only_the_removed_image_used(seeded_registry, location) -> None:
    store = location.open()
    kept, removed = mirror(
        store, seeded_registry.reference("test/shared-a:v1"), seeded_registry.reference("test/shared-b:v1")
    )
    kept_tree = {d.digest for d in tree(store, store.resolve(kept))}
    removed_tree = {d.digest for d in tree(store, store.resolve(removed))}
    assert kept_tree & removed_tree, "the two images share a layer"

    result = cli(location, "rm", removed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"untagged {removed}"

    dry = cli(location, "gc", "--dry-run", "--grace", "0")
    assert dry.returncode == 0, dry.stderr
    assert set(store.blobs()) == kept_tree | removed_tree, "a dry run deletes nothing"

    result = cli(location, "gc", "--grace", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["deleted"]) == removed_tree - kept_tree
    assert report["blobs_deleted"] == len(removed_tree - kept_tree) > 0 and report["bytes_deleted"] > 0
    assert set(store.blobs()) == kept_tree
    assert cli(location, "verify").returncode == 0


def test_rm_of_an_unknown_reference_removes_nothing(seeded_registry, tmp_path, request) -> None:
    location = store_location("file", request)
    store = location.open()
    (name,) = mirror(store, seeded_registry.reference("test/single:v1"))
    result = cli(location, "rm", name, f"{name}-nope")
    assert result.returncode == 1
    assert f"{name}-nope" in result.stderr and "Traceback" not in result.stderr
    assert store.resolve(name)


def test_rm_accepts_the_short_form_of_a_recorded_name(tmp_path, request) -> None:
    from tests.test_store import AMD64, blob, make_manifest

    location = store_location("file", request)
    store = location.open()
    store.tag("docker.io/library/alpine:3.20", make_manifest(store, AMD64, [blob(100, "short")]))
    result = cli(location, "rm", "alpine:3.20")
    assert result.returncode == 0, result.stderr
    assert store.images() == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["gc", "--grace", "soon"], 2, "not a duration"),
        (["gc", "--grace", "0"], 1, "not an OCI image layout"),
        (["rm", "example.com/x:1"], 1, "not an OCI image layout"),
        (["verify", "--repair"], 1, "not an OCI image layout"),
        (["verify", "--repair", "--config", "/nonexistent/mirror.yaml"], 2, "cannot read"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_deleted(tmp_path, args, code, message) -> None:
    blob = tmp_path / "blobs" / "sha256" / ("a" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    location = StoreLocation("file", str(tmp_path))
    result = cli(location, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert blob.exists()


@pytest.fixture(params=["file", "s3", "gs"])
def repair_location(request: pytest.FixtureRequest) -> StoreLocation:
    return store_location(request.param, request)


def test_repair_restores_flipped_bytes_and_the_next_pull_succeeds(seeded_registry, repair_location) -> None:
    location = repair_location
    store = location.open()
    single, multiarch = mirror(
        store, seeded_registry.reference("test/single:v1"), seeded_registry.reference("test/multiarch:v1")
    )
    layer = tree(store, store.resolve(single))[0]
    index = store.resolve(multiarch)
    damage(store, layer.digest)
    damage(store, index.digest)
    with pytest.raises(DamagedContent, match=r"stored copy of .* in .* is damaged.*verify --repair"):
        read_document(store, index)
    assert cli(location, "verify").returncode == 1

    result = cli(location, "verify", "--repair")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"REPAIRED corrupt-blob {layer.digest}" in result.stdout
    assert f"REPAIRED corrupt-blob {index.digest}" in result.stdout
    assert cli(location, "verify").returncode == 0
    mirror(store, seeded_registry.reference("test/multiarch:v1"), seeded_registry.reference("test/single:v1"))


def test_a_pull_fetches_a_damaged_stored_manifest_again(seeded_registry, location) -> None:
    store = location.open()
    (multiarch,) = mirror(store, seeded_registry.reference("test/multiarch:v1"))
    index = store.resolve(multiarch)
    manifest = read_document(store, index).children()[0]
    damage(store, index.digest)
    damage(store, manifest.digest)
    mirror(store, seeded_registry.reference("test/multiarch:v1"))  # would fail on the damaged copies
    assert verify_store(store).ok


def test_damage_no_source_can_supply_is_reported_with_the_image_names(seeded_registry, request) -> None:
    location = store_location("file", request)
    store = location.open()
    (name,) = mirror(store, seeded_registry.reference("test/single:v1"))
    orphan = f"{seeded_registry.host}/test/gone:v1"  # a repository the registry does not have
    store.tag(orphan, store.resolve(name))
    store.untag(name)
    layer = tree(store, store.resolve(orphan))[0]
    damage(store, layer.digest)

    result = cli(location, "verify", "--repair", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    (problem,) = report["unrepairable"]
    assert problem["digest"] == layer.digest and problem["images"] == [orphan]
    assert "test/gone" in problem["detail"]
    assert not report["ok"]


def test_repair_reaches_damage_hidden_under_a_damaged_manifest(seeded_registry, request) -> None:
    from ocimirror.repair import repair_store

    store = store_location("file", request).open()
    (name,) = mirror(store, seeded_registry.reference("test/multiarch:v1"))
    index = store.resolve(name)
    manifest = read_document(store, index).children()[0]
    layer = read_document(store, manifest).children()[-1]
    for digest in (index.digest, manifest.digest, layer.digest):
        damage(store, digest)
    with Registry() as registry:
        report = repair_store(store, registry)
    assert report.ok, report.unrepairable
    assert {fault.digest for fault in report.repaired} == {index.digest, manifest.digest, layer.digest}
    assert verify_store(store).ok


def test_gc_gives_up_after_waiting_for_a_running_writer_and_deletes_nothing(request) -> None:
    from tests.test_store import make_image

    location = store_location("file", request)
    store = location.open()
    garbage = {d.digest for d in tree(store, make_image(store, "kept"))}
    with store.lease():  # a sync in progress
        result = cli(location, "gc", "--grace", "0", "--wait", "1s")
    assert result.returncode == 1
    assert "waiting for 1 running writer(s)" in result.stderr and "still held after waiting" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(store.blobs()) == garbage
