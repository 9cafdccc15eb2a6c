"""A sync of many images, on both paths: in this process (``ocimirror.sync``) and as one Prefect flow run
(``flows.mirror.mirror_sync`` on the test server). Same registry, same faults, same expected outcomes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocimirror import progress
from ocimirror.config import parse_config
from ocimirror.digest import short
from ocimirror.report import SyncFailed, SyncResult
from ocimirror.store import open_store
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault

Sync = Callable[[dict[str, Any]], SyncResult]


def _in_process(config: dict[str, Any]) -> SyncResult:
    from ocimirror.sync import sync

    return sync(parse_config(config))


def _on_prefect(config: dict[str, Any]) -> SyncResult:
    from flows.mirror import mirror_sync

    try:
        return mirror_sync(config=config)
    except SyncFailed as failed:
        return failed.result


@pytest.fixture(params=["in-process", "prefect"])
def run_sync(request: pytest.FixtureRequest) -> Sync:
    if request.param == "prefect":
        request.getfixturevalue("prefect_server")
        return _on_prefect
    return _in_process


def _config(store: Path, *sources: str, **settings: Any) -> dict[str, Any]:
    images = [{"source": source.rsplit(":", 1)[0], "tags": [source.rsplit(":", 1)[1]]} for source in sources]
    return {"store": {"url": str(store)}, "images": images, "concurrency": 4, **settings}


def _tags_in_order(store: Path) -> list[str]:
    return [entry.annotations["org.opencontainers.image.ref.name"] for entry in open_store(str(store)).images()]


def test_shared_content_is_fetched_once_across_images(run_sync, seeded_registry, fault_proxy, tmp_path) -> None:
    shared = seeded_registry.images["test/shared-a:v1"].descriptors[1]  # config first, then the shared base
    assert shared in seeded_registry.images["test/shared-b:v1"].descriptors
    store = tmp_path / "store"
    result = run_sync(_config(store, f"{fault_proxy.host}/test/shared-a:v1", f"{fault_proxy.host}/test/shared-b:v1"))

    assert [image.status for image in result.images] == ["fetched", "fetched"]
    assert len(fault_proxy.recorded(path_contains=f"/blobs/{shared.digest}")) == 1
    rows = [row for image in result.images for row in image.result.tree if row.digest == shared.digest]
    assert sorted(row.status for row in rows) == ["fetched", "present"]
    assert verify_store(open_store(str(store))).ok

    again = run_sync(_config(store, f"{fault_proxy.host}/test/shared-a:v1", f"{fault_proxy.host}/test/shared-b:v1"))
    assert [image.status for image in again.images] == ["up-to-date", "up-to-date"]
    assert again.summary() == "2 image(s): 2 up to date"


def test_a_stalled_registry_does_not_hold_back_other_images(run_sync, seeded_registry, make_fault_proxy, tmp_path):
    slow = make_fault_proxy(seeded_registry.url)
    (layer,) = [d for d in seeded_registry.images["test/single:v1"].descriptors if d.kind == "layer"]
    slow.add(Fault(kind="stall", path_contains=f"/blobs/{layer.digest}", delay=3.0, times=1))
    store = tmp_path / "store"
    stalled, quick = f"{slow.host}/test/single:v1", seeded_registry.reference("test/shared-a:v1")

    result = run_sync(_config(store, stalled, quick))  # the stalled image comes first in the config

    assert [image.status for image in result.images] == ["fetched", "fetched"]
    assert _tags_in_order(store) == [quick, stalled]  # tagged as each completed, not in config order
    assert verify_store(open_store(str(store))).ok


def test_one_failed_blob_fails_only_its_image_and_is_named(run_sync, seeded_registry, fault_proxy, tmp_path) -> None:
    many = seeded_registry.images["test/many:v1"]
    broken = [d for d in many.descriptors if d.kind == "layer"][7]
    fault_proxy.add(Fault(kind="status", path_contains=f"/blobs/{broken.digest}", status=404, times=None))
    store = tmp_path / "store"

    result = run_sync(_config(store, f"{fault_proxy.host}/test/many:v1", f"{fault_proxy.host}/test/shared-b:v1"))

    failed, fine = result.images
    assert failed.status == "failed" and fine.status == "fetched"
    assert f"layer {short(broken.digest)}" in failed.error and "NotFound" in failed.error
    assert _tags_in_order(store) == [fine.reference]  # no tag for the incomplete image
    assert verify_store(open_store(str(store))).ok


def test_progress_counts_bytes_in_flight(seeded_registry, make_fault_proxy, tmp_path) -> None:
    proxy = make_fault_proxy(seeded_registry.url)
    (layer,) = [d for d in seeded_registry.images["test/single:v1"].descriptors if d.kind == "layer"]
    proxy.add(Fault(kind="stall", path_contains=f"/blobs/{layer.digest}", delay=1.5, times=1))
    events: list[progress.Progress] = []
    unsubscribe = progress.subscribe(events.append)
    try:
        result = _in_process(_config(tmp_path / "store", f"{proxy.host}/test/single:v1"))
    finally:
        unsubscribe()

    assert result.images[0].status == "fetched"
    total = events[-1].bytes_total
    assert events[-1].finished and events[-1].bytes_done == total
    unfinished = [event for event in events if not event.finished]
    assert all(event.bytes_done < total for event in unfinished)  # never "done" before the end
    # while the stalled layer's first half sat in the ingest, progress showed those bytes
    assert any(event.blobs_done < event.blobs_total and event.bytes_done >= layer.size // 2 for event in unfinished)


def test_a_failed_sync_raises_an_error_that_names_the_images_and_carries_the_result(
    prefect_server, seeded_registry, tmp_path
) -> None:
    from flows.mirror import mirror_sync

    config = _config(tmp_path / "store", seeded_registry.reference("test/single:nope"),
                     seeded_registry.reference("test/single:v1"))  # fmt: skip
    with pytest.raises(SyncFailed) as raised:
        mirror_sync(config=json.dumps(config))  # JSON text, as the UI's text field gives it
    assert "test/single:nope" in str(raised.value)
    assert [image.status for image in raised.value.result.images] == ["failed", "fetched"]

    state = mirror_sync(config=config, return_state=True)
    assert state.is_failed() and state.message == "2 image(s): 1 up to date, 1 failed"


def test_one_flow_run_per_sync_with_batched_task_runs(prefect_server, seeded_registry, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    from flows.mirror import mirror_sync

    images = ["test/many:v1", "test/shared-a:v1", "test/shared-b:v1", "test/multiarch:v1"]
    with get_client(sync_client=True) as client:
        flow_runs_before = client.count_flow_runs()
    state = mirror_sync(
        config=_config(tmp_path / "store", *[seeded_registry.reference(i) for i in images]), return_state=True
    )
    assert state.is_completed()
    blobs = {d.digest for name in images for d in seeded_registry.images[name].all_descriptors()}

    deadline = time.monotonic() + 20  # the server records task runs from events, shortly after the fact
    in_run = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs() == flow_runs_before + 1  # no subflow per image
        while True:
            runs = client.read_task_runs(task_run_filter=in_run)
            fetches = [run for run in runs if run.task_key.startswith("fetch_unit")]
            counted = sum(int(run.name.split()[0]) if " blobs " in run.name else 1 for run in fetches)
            if counted >= len(blobs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert counted == len(blobs)  # every blob fetched once, in one flow run
    assert len(fetches) < len(blobs) / 2  # small blobs share task runs
    assert any(run.name.endswith(("B", "kB")) and " blobs " in run.name for run in fetches)
    assert len(_tags_in_order(tmp_path / "store")) == len(images)

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.mirroring import artifact_key

    in_this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        tables = {artifact.key: artifact for artifact in client.read_artifacts(artifact_filter=in_this_run)}
    for name in images:  # a table per image, short digests only, and the run's summary with errors first
        table = tables[artifact_key("fetch", seeded_registry.reference(name))]
        assert table.type == "table" and "sha256:" in str(table.data) and not re.search("[0-9a-f]{20}", str(table.data))
    summary = json.loads(tables["mirror-sync"].data)
    assert list(summary[0])[:3] == ["reference", "status", "error"]


def test_the_command_line_without_a_prefect_api_never_touches_prefect(seeded_registry, tmp_path) -> None:
    home = tmp_path / "prefect-home"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environment["PREFECT_HOME"] = str(home)
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ocimirror_cli", "pull",
         seeded_registry.reference("test/single:v1"), "--to", str(tmp_path / "store")],
        capture_output=True, text=True, env=environment, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in completed.stderr.splitlines() if line.startswith("import time")]
    assert "ocimirror.sync" in imported and not [name for name in imported if name.split(".")[0] == "prefect"]
    assert not home.exists()  # no database, no profile, no server


@pytest.mark.parametrize("flags", [[], ["--prefect"]], ids=["in-process", "prefect"])
def test_an_interrupted_pull_stops_within_seconds_and_resumes(flags, registry, make_fault_proxy, tmp_path):
    from ocimirror_demo.images import build_manifest, push_image, random_layer

    repository = f"interrupt/{'prefect' if flags else 'local'}"
    image = build_manifest([random_layer(2 * 1024 * 1024, repository)])
    push_image(registry.url, repository, "v1", image)
    (layer,) = [d for d in image.descriptors if d.kind == "layer"]
    proxy = make_fault_proxy(registry.url)
    proxy.add(Fault(kind="throttle", path_contains=f"/blobs/{layer.digest}", rate=32 * 1024, times=None))  # ~64 s
    store = tmp_path / "store"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environment |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "ocimirror_cli", "pull", f"{proxy.host}/{repository}:v1", "--to", str(store)]
    process = subprocess.Popen([*command, *flags], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # the Prefect path starts its own server first
        while not [data for data in store.glob("ingest/*/data") if data.stat().st_size > 0]:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = process.communicate(timeout=90)
        stopped_within = time.monotonic() - interrupted
    finally:
        process.kill()
    assert stopped_within < 30, stopped_within  # the rest of the layer would take about a minute at this rate
    assert process.returncode == 130 and b"interrupted" in stderr
    assert not store.joinpath("index.json").exists() or not open_store(str(store)).images()  # nothing tagged

    from ocimirror.plan import ImageRequest
    from ocimirror.remotes.reference import parse_reference
    from ocimirror.sync import pull

    again = pull([ImageRequest(reference=parse_reference(f"{registry.host}/{repository}:v1"))], open_store(str(store)))
    (row,) = [row for row in again.images[0].result.tree if row.digest == layer.digest]
    assert row.status == "fetched" and 0 < row.transferred < layer.size  # resumed from where it stopped


def test_prune_untags_what_the_config_no_longer_selects(run_sync, registry, tmp_path) -> None:
    from ocimirror_demo.images import build_manifest, push_image, random_layer

    repository = f"prune/{tmp_path.name[-12:].lower().strip('_')}"  # a repository of this test's own
    for tag in ("1.0", "1.1", "1.2"):
        push_image(registry.url, repository, tag, build_manifest([random_layer(512, f"{repository}-{tag}")]))
    source, store = f"{registry.host}/{repository}", tmp_path / "store"
    everything = {"store": {"url": str(store)}, "images": [{"source": source, "semver": ">=1"}]}
    assert [image.status for image in run_sync(everything).images] == ["fetched"] * 3

    newest = {**everything, "images": [{"source": source, "latest": 1, "prune": True}]}
    result = run_sync(newest)

    assert [image.status for image in result.images] == ["up-to-date"]
    assert sorted(result.pruned) == [f"{source}:1.0", f"{source}:1.1"]
    assert _tags_in_order(store) == [f"{source}:1.2"]
    assert run_sync(newest).pruned == []  # nothing left to prune
