"""Garbage collection on real stores (local disk, memory, moto S3, GCS emulator), and its race with a writer
in a second process that has committed blobs but not tagged them yet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocimirror import mediatypes
from ocimirror.descriptor import Descriptor
from ocimirror.digest import blob_path
from ocimirror.errors import NotFound, StoreError
from ocimirror.gc import GcRefused, collect_garbage, parse_duration
from ocimirror.store import LayoutStore
from ocimirror.store.lease import LEASE_DIR, hold
from ocimirror.verify import verify_store
from tests.test_store import (
    AMD64,
    STORE_KINDS,
    StoreLocation,
    blob,
    make_image,
    make_manifest,
    put_json,
    store_location,
    tree,
)

ROOT = Path(__file__).resolve().parent.parent
RACE_KINDS = ["file", "s3", "gs"]


@pytest.fixture(params=STORE_KINDS)
def location(request: pytest.FixtureRequest) -> StoreLocation:
    return store_location(request.param, request)


def digests(store: LayoutStore, root: Descriptor) -> set[str]:
    return {descriptor.digest for descriptor in tree(store, root)}


def present(store: LayoutStore) -> set[str]:
    return set(store.blobs())


def populate(store: LayoutStore) -> tuple[set[str], set[str]]:
    """Tagged images of every shape plus garbage; returns (digests to keep, digests that are garbage)."""
    kept_index = make_image(store, "kept")
    store.tag("example.com/app:1", kept_index)
    docker_list = _docker_list(store)
    store.tag("example.com/app:docker", docker_list)
    single = make_manifest(store, AMD64, [blob(5000, "single")])
    store.tag("example.com/app@" + single.digest, single)
    referrer = _referrer(store, single)  # an OCI 1.1 referrer stored as its own index.json entry
    store.tag("example.com/app:sha256-referrer", referrer)
    keep = set().union(*(digests(store, root) for root in (kept_index, docker_list, single, referrer)))
    # committed, never tagged ("trash": gcp-storage-emulator drops a trailing \r from a body, so seeds are
    # chosen whose blobs do not end in one)
    untagged = make_image(store, "trash")
    retagged = make_image(store, "old")  # tagged once, then untagged
    store.tag("example.com/app:old", retagged)
    store.untag("example.com/app:old")
    garbage = (digests(store, untagged) | digests(store, retagged)) - keep
    return keep, garbage


def _docker_list(store: LayoutStore) -> Descriptor:
    manifest = make_manifest(store, AMD64, [blob(3000, "docker-layer")])
    body = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST_LIST,
        "manifests": [{**manifest.to_json(), "mediaType": mediatypes.OCI_MANIFEST}],
    }
    return put_json(store, mediatypes.DOCKER_MANIFEST_LIST, body)


def _referrer(store: LayoutStore, subject: Descriptor) -> Descriptor:
    config = put_json(store, "application/vnd.example.signature.config+json", {"signed": True})
    body = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": config.to_json(),
        "layers": [put_json(store, "application/vnd.example.signature", {"sig": "x"}).to_json()],
        "subject": subject.to_json(),
    }
    return put_json(store, mediatypes.OCI_MANIFEST, body)


def test_gc_frees_exactly_the_unreachable_blobs(location: StoreLocation) -> None:
    store = location.open()
    keep, garbage = populate(store)
    assert garbage and present(store) == keep | garbage

    dry = collect_garbage(store, grace=0, dry_run=True)
    assert set(dry.deleted) == garbage and present(store) == keep | garbage, "a dry run deletes nothing"
    assert not store.fs.exists(f"{store.backend.root}/{LEASE_DIR}"), "a dry run writes nothing, not even a lease"

    garbage_bytes = sum(store.info(digest) for digest in garbage)
    report = collect_garbage(location.open(), grace=0)
    assert set(report.deleted) == garbage
    assert report.blobs_deleted == len(garbage) and report.reachable == len(keep)
    assert report.bytes_deleted == dry.bytes_deleted == garbage_bytes
    assert present(store) == keep
    assert verify_store(store).ok
    assert collect_garbage(store, grace=0).blobs_deleted == 0, "a second run finds nothing"


def test_the_grace_period_keeps_recent_unreachable_blobs(location: StoreLocation) -> None:
    store = location.open()
    keep, garbage = populate(store)
    report = collect_garbage(store, grace=parse_duration("1h"))
    assert report.blobs_deleted == 0 and report.kept_recent == len(garbage)
    assert present(store) == keep | garbage


def test_a_damaged_manifest_stops_gc_before_anything_is_deleted(tmp_path: Path, request) -> None:
    location = store_location("file", request)
    store = location.open()
    keep, garbage = populate(store)
    index = store.resolve("example.com/app:1")
    path = Path(location.url) / blob_path(index.digest)
    content = bytearray(path.read_bytes())
    content[10] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(GcRefused, match=r"stored copy .* is damaged.*verify --repair"):
        collect_garbage(store, grace=0)
    assert present(store) == keep | garbage


def test_gc_of_a_path_that_is_no_layout_is_refused(tmp_path: Path) -> None:
    from ocimirror.store import open_store

    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / ("a" * 64)).write_bytes(b"x")
    with pytest.raises(NotFound, match="not an OCI image layout"):
        collect_garbage(open_store(str(tmp_path)), grace=0)
    assert (tmp_path / "blobs" / "sha256" / ("a" * 64)).exists()


@pytest.mark.parametrize("text", ["", "soon", "5", "1x", "-1h", "1h 30m", "h"])
def test_durations_that_are_not_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("0", "90s", "15m", "2h", "7d", "1w", "1h30m")] == [
        0,
        90,
        900,
        7200,
        604800,
        604800,
        5400,
    ]


def test_gc_removes_abandoned_local_ingests_but_not_locked_ones(request) -> None:
    location = store_location("file", request)
    store = location.open()
    populate(store)
    crashed = Descriptor.from_bytes(mediatypes.OCI_LAYER_GZIP, blob(10_000, "crashed"))
    writer = store.writer("layer-crashed", crashed)
    writer.write(blob(10_000, "crashed")[:4000])
    writer.close()  # what a killed writer leaves: a resumable ingest
    live = Descriptor.from_bytes(mediatypes.OCI_LAYER_GZIP, blob(10_000, "live"))
    open_writer = store.writer("layer-live", live)  # holds its ingest lock while gc runs
    open_writer.write(b"x" * 100)
    try:
        report = collect_garbage(store, grace=0)
    finally:
        open_writer.close()
    assert report.ingests_removed == 1 and report.ingest_bytes_removed == 4000
    assert [status.ref for status in store.statuses()] == ["layer-live"]


def test_gc_aborts_abandoned_s3_multipart_uploads(s3_server, request) -> None:
    import boto3

    location = store_location("s3", request)
    store = location.open()
    populate(store)
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    prefix = location.url.split("/", 3)[3]
    key = f"{prefix}/blobs/sha256/{'b' * 64}"
    upload = client.create_multipart_upload(Bucket=s3_server.bucket, Key=key)
    client.upload_part(Bucket=s3_server.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"y" * 1000)
    assert s3_server.pending_uploads(prefix) == [key]
    report = collect_garbage(store, grace=0)
    assert report.ingests_removed == 1 and report.ingest_bytes_removed == 1000
    assert s3_server.pending_uploads(prefix) == []


# The race with a second process


@pytest.fixture(params=RACE_KINDS)
def race_location(request: pytest.FixtureRequest) -> StoreLocation:
    return store_location(request.param, request)


class WriterProcess:
    """``tests/fixtures/writer.py`` in its own process: commits an image, pauses, tags when told."""

    def __init__(self, location: StoreLocation, seed: str, state: Path, ttl: float) -> None:
        state.mkdir()
        self.state = state
        self.log = state / "stderr"
        options = json.dumps(location.storage_options)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fixtures.writer", location.url, options, seed, str(state), str(ttl)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stderr=log,
            )

    def wait_for(self, path: str | None = None, line: str | None = None) -> None:
        """Block until the writer created ``state/path`` or printed ``line`` (or exited: then fail)."""
        event = threading.Event()
        while not event.wait(0.05):
            if path is not None and (self.state / path).exists():
                return
            if line is not None and line in self.log.read_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"writer exited {self.process.returncode}: {self.log.read_text()}")

    def committed(self) -> set[str]:
        self.wait_for("committed")
        return set(json.loads((self.state / "committed").read_text()))

    def release(self) -> None:
        (self.state / "go").touch()
        assert self.process.wait(120) == 0, self.log.read_text()


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[list[WriterProcess]]:
    started: list[WriterProcess] = []
    yield started
    for writer in started:
        if writer.process.poll() is None:
            writer.process.kill()
            writer.process.wait()


def test_gc_keeps_what_a_running_sync_committed_but_has_not_tagged(race_location, writers, tmp_path) -> None:
    store = race_location.open()
    keep, garbage = populate(store)
    writer = WriterProcess(race_location, "paused", tmp_path / "writer", ttl=60)
    writers.append(writer)
    committed = writer.committed()  # blobs committed, the writer now pauses before tagging
    assert committed <= present(store)

    waited = threading.Event()
    result: dict[str, object] = {}

    def run_gc() -> None:
        try:
            result["report"] = collect_garbage(race_location.open(), grace=0, wait=600, on_wait=lambda _: waited.set())
        except BaseException as error:  # noqa: BLE001 - handed to the test thread, which asserts on it
            result["error"] = error

    collector = threading.Thread(target=run_gc)
    collector.start()
    waited.wait(120)
    assert waited.is_set(), "gc saw the writer's lease and waits"
    assert committed <= present(store), "nothing the writer committed is deleted while it is paused"
    assert garbage <= present(store), "nothing at all is deleted while a writer runs"
    writer.release()  # the writer tags its image and ends
    collector.join(120)
    assert "error" not in result, result
    assert result["report"].blobs_deleted == len(garbage)  # type: ignore[attr-defined]
    assert present(store) == keep | committed
    assert store.resolve("example.com/race/paused:v1").digest in committed
    assert verify_store(store).ok


def test_a_writer_waits_while_gc_sweeps(race_location, writers, tmp_path) -> None:
    store = race_location.open()
    populate(store)
    with hold(store, "gc", ttl=60):
        writer = WriterProcess(race_location, "late", tmp_path / "writer", ttl=60)
        writers.append(writer)
        writer.wait_for(line="waiting for gc")
        assert not (writer.state / "committed").exists(), "no blob is committed while gc holds the store"
    committed = writer.committed()
    writer.release()
    assert committed <= present(store) and verify_store(store).ok


def test_a_crashed_writers_lease_expires_and_its_untagged_blobs_are_kept_for_the_grace_period(
    writers, tmp_path, request
) -> None:
    location = store_location("file", request)
    store = location.open()
    keep, garbage = populate(store)
    writer = WriterProcess(location, "crashed", tmp_path / "writer", ttl=1)
    writers.append(writer)
    committed = writer.committed()
    writer.process.send_signal(signal.SIGKILL)
    writer.process.wait()
    report = collect_garbage(store, grace=3600, ttl=1, wait=600)  # waits until the dead lease is stale
    assert report.blobs_deleted == 0 and present(store) == keep | garbage | committed
    report = collect_garbage(store, grace=0, ttl=1, wait=600)
    assert present(store) == keep and report.blobs_deleted == len(garbage | committed)
    leases = Path(location.url) / LEASE_DIR
    assert not leases.exists() or not list(leases.iterdir()), "stale leases are removed"


def test_a_core_pull_holds_a_write_lease_until_it_has_tagged(request) -> None:
    from ocimirror.pull import pull
    from ocimirror.store.lease import list_leases

    source = store_location("memory", request).open()
    root = make_image(source, "pulled")
    destination = store_location("file", request).open()
    seen: list[list[str]] = []

    class Watching:
        """The source store, noting which leases the destination has each time a blob is fetched."""

        def fetch(self, descriptor: Descriptor, offset: int = 0):
            seen.append([lease.kind for lease in list_leases(destination)])
            return source.fetch(descriptor, offset)

    pull(Watching(), destination, root, "example.com/pulled:1")
    assert seen and all(kinds == ["write"] for kinds in seen)
    assert list_leases(destination) == [], "released once tagged"
    assert destination.resolve("example.com/pulled:1").digest == root.digest


def test_a_lease_that_lapsed_once_is_never_trusted_again(request) -> None:
    from ocimirror.store.lease import Lease, LeaseLost, ensure_held

    store = store_location("file", request).open()
    lease = Lease(store, "write", ttl=60)
    lease.write()
    ensure_held(lease, store)
    lease._renewed -= 31  # as if renewals had failed for over ttl / 2: others may have seen it stale
    lease.write()  # renewed again now
    with pytest.raises(LeaseLost, match="could not be renewed in time"):
        ensure_held(lease, store)
    lease.release()


def test_deleting_blobs_some_of_which_are_gone_deletes_the_rest(location: StoreLocation) -> None:
    store = location.open()
    keep, garbage = populate(store)
    doomed = sorted(garbage)
    store.delete_blobs(doomed[:1])  # as another gc would have
    store.delete_blobs(doomed)
    assert present(store) == keep
    with pytest.raises(StoreError, match="refusing to delete"):
        store.delete_blobs(["sha256:../../index.json"])
