"""The Prefect pipeline against real registries and a real Prefect server (one harness per session)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from ocimirror import mediatypes as mt
from ocimirror.content import read_document
from ocimirror.report import SyncFailed
from ocimirror.store import open_store
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault

pytestmark = pytest.mark.usefixtures("prefect_server")


def _fetch(reference: str, store: Path, **options):
    from flows.fetch import fetch_image

    return fetch_image(reference=reference, store=str(store), **options)


def _blob_exists(store, descriptor) -> bool:
    return open_store(str(store)).exists(descriptor)


def test_multiarch_index_with_platform_filter(seeded_registry, tmp_path) -> None:
    image = seeded_registry.images["test/multiarch:v1"]
    amd64, arm64 = image.children[:2]
    result = _fetch(seeded_registry.reference("test/multiarch:v1"), tmp_path, platforms=["linux/arm64"])

    assert result.source_digest == image.digest
    assert result.digest != image.digest  # a new index listing only what was kept
    store = open_store(str(tmp_path))
    tagged = store.resolve(result.reference)
    index = read_document(store, tagged)
    kept = [child.digest for child in index.manifests]
    attestation_of_arm64 = image.children[3]
    assert kept == [arm64.digest, attestation_of_arm64.digest]
    assert all(store.exists(d) for d in arm64.descriptors)
    assert not any(store.exists(d) for d in amd64.descriptors if d.kind == "layer")
    assert verify_store(store).ok


def test_all_metadata_keeps_the_index_digest(seeded_registry, tmp_path) -> None:
    image = seeded_registry.images["test/multiarch:v1"]
    amd64, arm64 = image.children[:2]
    result = _fetch(
        seeded_registry.reference("test/multiarch:v1"), tmp_path, platforms=["linux/amd64"], all_metadata=True
    )

    assert result.digest == result.source_digest == image.digest
    store = open_store(str(tmp_path))
    assert store.exists(arm64.descriptor) and all(store.exists(d) for d in amd64.descriptors)
    arm64_layers = [d for d in arm64.descriptors if d.kind == "layer"]
    assert arm64_layers and not any(store.exists(d) for d in arm64_layers)
    assert verify_store(store).ok
    inspected = subprocess.run(
        [
            *("skopeo", "inspect", "--override-os", "linux", "--override-arch", "amd64"),
            f"oci:{tmp_path}:{result.reference}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(inspected.stdout)["Layers"] == [d.digest for d in amd64.descriptors if d.kind == "layer"]


def test_docker_manifest_list_is_mirrored_whole(seeded_registry, tmp_path) -> None:
    image = seeded_registry.images["test/dockerlist:v1"]
    result = _fetch(seeded_registry.reference("test/dockerlist:v1"), tmp_path)

    assert result.digest == image.digest and result.media_type == mt.DOCKER_MANIFEST_LIST
    assert result.blobs_fetched == len({d.digest for d in image.all_descriptors()})
    store = open_store(str(tmp_path))
    assert all(store.exists(d) for d in image.all_descriptors())
    assert verify_store(store).ok


def test_shared_layers_are_fetched_once(seeded_registry, tmp_path) -> None:
    first = _fetch(seeded_registry.reference("test/shared-a:v1"), tmp_path)
    second = _fetch(seeded_registry.reference("test/shared-b:v1"), tmp_path)

    assert first.blobs_present == 0
    assert second.blobs_present == 1  # the shared base layer
    assert [row.kind for row in second.tree if row.status == "present"] == ["layer"]
    again = _fetch(seeded_registry.reference("test/shared-b:v1"), tmp_path)
    assert again.blobs_fetched == 0 and again.bytes_fetched == 0


def _sync_config(tmp_path: Path, store: Path, images: list[dict]) -> dict:
    return {"store": {"url": str(store)}, "images": images, "concurrency": 4}


def test_unchanged_images_cost_no_fetch_task_runs(seeded_registry, tmp_path, task_run_count) -> None:
    from flows.mirror import mirror_sync

    config = _sync_config(
        tmp_path, tmp_path / "store", [{"source": seeded_registry.reference("test/many"), "tags": ["v1"]}]
    )
    before = task_run_count("fetch_unit")
    first = mirror_sync(config=config)
    assert [image.status for image in first.images] == ["fetched"]
    fetched = task_run_count("fetch_unit", at_least=before + 2)  # the manifest alone, then batches of blobs
    assert before + 2 <= fetched < before + 26  # 26 blobs: 24 small layers share task runs

    second = mirror_sync(config=config)
    assert [image.status for image in second.images] == ["up-to-date"]
    assert task_run_count("fetch_unit") == fetched


def test_transient_blob_failure_is_retried(seeded_registry, make_fault_proxy, tmp_path) -> None:
    proxy = make_fault_proxy(seeded_registry.url)
    (layer,) = [d for d in seeded_registry.images["test/single:v1"].descriptors if d.kind == "layer"]
    proxy.add(Fault(kind="status", path_contains=f"/blobs/{layer.digest}", status=503, times=1))

    result = _fetch(f"{proxy.host}/test/single:v1", tmp_path)

    assert result.blobs_fetched == 3
    assert len(proxy.recorded(path_contains=f"/blobs/{layer.digest}")) >= 2
    assert verify_store(open_store(str(tmp_path))).ok


def test_a_missing_tag_fails_only_that_image(seeded_registry, tmp_path) -> None:
    from flows.mirror import mirror_sync

    config = _sync_config(
        tmp_path,
        tmp_path / "store",
        [
            {"source": seeded_registry.reference("test/single"), "tags": ["v1", "no-such-tag"]},
            {"source": seeded_registry.reference("test/shared-a"), "tags": ["v1"]},
        ],
    )
    with pytest.raises(SyncFailed) as failed:
        mirror_sync(config=config)

    result = failed.value.result
    assert {image.reference: image.status for image in result.images} == {
        seeded_registry.reference("test/single:no-such-tag"): "failed",
        seeded_registry.reference("test/single:v1"): "fetched",
        seeded_registry.reference("test/shared-a:v1"): "fetched",
    }
    failed = result.failed[0]
    assert "no-such-tag" in failed.error and "not found" in failed.error.lower()
    store = open_store(str(tmp_path / "store"))
    assert {entry.annotations["org.opencontainers.image.ref.name"] for entry in store.images()} == {
        seeded_registry.reference("test/single:v1"),
        seeded_registry.reference("test/shared-a:v1"),
    }


def test_dry_run_plans_without_writing(seeded_registry, tmp_path) -> None:
    from flows.mirror import mirror_sync

    store = tmp_path / "store"
    config = _sync_config(tmp_path, store, [{"source": seeded_registry.reference("test/multiarch"), "latest": 1}])
    result = mirror_sync(config=config, dry_run=True)

    assert result.dry_run
    assert [(i.status, i.source_digest) for i in result.images] == [
        ("planned", seeded_registry.images["test/multiarch:v1"].digest)
    ]
    assert not store.exists() or not any(store.rglob("blobs/*/*"))


def test_prefect_retries_a_task_once_the_client_gives_up(seeded_registry, make_fault_proxy, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    proxy = make_fault_proxy(seeded_registry.url)
    (layer,) = [d for d in seeded_registry.images["test/single:v1"].descriptors if d.kind == "layer"]
    # More 503s than the registry client's own retry budget: the task fails transiently, Prefect retries it.
    proxy.add(Fault(kind="status", path_contains=f"/blobs/{layer.digest}", status=503, times=8))

    state = _fetch(f"{proxy.host}/test/single:v1", tmp_path, return_state=True)

    assert state.result().blobs_fetched == 3
    fetches = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + 20  # the server records task runs from events, shortly after the fact
    with get_client(sync_client=True) as client:
        while not (retried := [r for r in client.read_task_runs(task_run_filter=fetches) if r.run_count >= 2]):
            assert time.monotonic() < deadline, "no task run was recorded as retried"
            time.sleep(0.5)
    assert retried[0].state.is_completed() and retried[0].task_key.startswith("fetch_unit")
