"""The S3 and GCS store backends against real protocol servers (moto, gcp-storage-emulator).

Every test runs on both servers; the last one pulls images from a real registry into each. "Nothing left
behind" means: no object at the blob's key and no upload that was begun but neither completed nor aborted
(S3 multipart upload, GCS resumable session).
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from ocimirror.content import Writer, copy_content
from ocimirror.descriptor import Descriptor
from ocimirror.digest import blob_path, digest_bytes
from ocimirror.errors import AlreadyExists, DigestMismatch, SizeMismatch, is_transient
from ocimirror.pull import pull
from ocimirror.remotes.reference import parse_reference
from ocimirror.remotes.registry import Registry
from ocimirror.store import backend_for, open_store
from ocimirror.store.gcs import GCSBackend
from ocimirror.store.layout import ref_name
from ocimirror.store.objectstore import PART_SIZE, ObjectStoreBackend
from ocimirror.store.s3 import S3Backend
from ocimirror.verify import verify_store
from tests.fixtures.objectstores import ObjectStoreServer
from tests.fixtures.registry import SeededRegistry

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 2**20


@pytest.fixture
def backend(object_store_server: ObjectStoreServer) -> ObjectStoreBackend:
    """A backend for a fresh store under its own prefix, as ``open_store`` would build it."""
    fs, root = fsspec.core.url_to_fs(object_store_server.new_url(), **object_store_server.storage_options)
    return backend_for(fs, root)


def pattern(size: int, seed: bytes = b"ocimirror", chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic pseudo-random content, generated chunk by chunk so it is never held whole."""
    block = hashlib.sha512(seed).digest() * (chunk // 64 + 1)
    for start in range(0, size, chunk):
        header = hashlib.sha256(seed + start.to_bytes(8, "big")).digest()
        yield (header + block)[: min(chunk, size - start)]


def descriptor_of(size: int, seed: bytes = b"ocimirror") -> Descriptor:
    """The descriptor of ``pattern(size, seed)``, hashed by streaming."""
    sha = hashlib.sha256()
    for chunk in pattern(size, seed):
        sha.update(chunk)
    return Descriptor(media_type=LAYER, digest=f"sha256:{sha.hexdigest()}", size=size)


def inline(descriptor: Descriptor, content: bytes) -> Descriptor:
    """``descriptor`` carrying ``content`` as inline data, so copying it needs no fetcher."""
    return descriptor.model_copy(update={"data": base64.b64encode(content).decode()})


def blob_key(backend: ObjectStoreBackend, descriptor: Descriptor) -> str:
    return backend.key(blob_path(descriptor.digest))


def assert_nothing_left(backend: ObjectStoreBackend, server: ObjectStoreServer, descriptor: Descriptor) -> None:
    key = blob_key(backend, descriptor)
    assert not backend.fs.exists(key), f"{key} is visible"
    prefix = backend.root.split("/", 1)[1]
    assert server.pending_uploads(prefix) == [], "an upload was left open"


def write_all(writer: Writer, chunks: Iterator[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)


def test_backend_is_chosen_by_protocol(object_store_server: ObjectStoreServer) -> None:
    fs, root = fsspec.core.url_to_fs(object_store_server.new_url(), **object_store_server.storage_options)
    backend = backend_for(fs, f"{object_store_server.protocol}://{root}/")
    assert type(backend) is {"s3": S3Backend, "gs": GCSBackend}[object_store_server.protocol]
    assert backend.root == root
    assert backend.key("index.json") == f"{root}/index.json"


@pytest.mark.parametrize("size", [0, 1000, PART_SIZE + 12345], ids=["empty", "small", "multipart"])
def test_commit_makes_verified_blob_visible(backend: ObjectStoreBackend, size: int) -> None:
    descriptor = descriptor_of(size)
    writer = backend.blob_writer("layer-test", descriptor)
    write_all(writer, pattern(size))
    assert not backend.fs.exists(blob_key(backend, descriptor)), "visible before commit"
    writer.commit()
    writer.close()
    assert backend.fs.info(blob_key(backend, descriptor))["size"] == size
    assert digest_bytes(backend.fs.cat_file(blob_key(backend, descriptor))) == descriptor.digest
    assert backend.statuses() == []


def reopen(backend: ObjectStoreBackend) -> ObjectStoreBackend:
    """Another backend object on the same store, as a second ``open_store`` of the URL gives."""
    return backend_for(backend.fs, backend.root)


def test_statuses_follow_open_writers(backend: ObjectStoreBackend) -> None:
    descriptor = descriptor_of(3000)
    writer = backend.blob_writer("layer-status", descriptor)
    chunks = list(pattern(3000, chunk=1000))
    writer.write(chunks[0])
    observer = reopen(backend)
    [status] = observer.statuses()
    assert (status.ref, status.offset, status.total, status.expected) == ("layer-status", 1000, 3000, descriptor.digest)
    assert status.started_at <= status.updated_at
    writer.write(chunks[1])
    assert observer.statuses()[0].offset == 2000
    assert backend_for(backend.fs, backend.root + "-other").statuses() == []
    writer.close()
    assert observer.statuses() == [] and backend.statuses() == []


def test_second_writer_of_a_ref_waits_then_finds_the_blob_committed(backend: ObjectStoreBackend) -> None:
    descriptor = descriptor_of(5000)
    first = backend.blob_writer("layer-wait", descriptor)
    first.write(b"".join(pattern(5000))[:1000])
    outcome: list[object] = []

    def second_writer() -> None:
        try:
            outcome.append(reopen(backend).blob_writer("layer-wait", descriptor))
        except AlreadyExists as error:
            outcome.append(error)

    thread = threading.Thread(target=second_writer)
    thread.start()
    thread.join(0.3)
    assert outcome == [], "the second writer of a ref must wait while the first is open"
    first.write(b"".join(pattern(5000))[1000:])
    first.commit()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], AlreadyExists)


@pytest.mark.parametrize("size", [1000, 2 * PART_SIZE + 1], ids=["small", "multipart"])
def test_digest_mismatch_leaves_nothing(
    backend: ObjectStoreBackend, object_store_server: ObjectStoreServer, size: int
) -> None:
    descriptor = descriptor_of(size, seed=b"expected")
    writer = backend.blob_writer("layer-bad", descriptor)
    write_all(writer, pattern(size, seed=b"actual"))
    with pytest.raises(DigestMismatch, match=descriptor.digest):
        writer.commit()
    writer.close()
    assert_nothing_left(backend, object_store_server, descriptor)
    assert backend.statuses() == []
    backend.blob_writer("layer-bad", descriptor).close()  # the failed writer let go of its ref


def test_short_content_leaves_nothing(backend: ObjectStoreBackend, object_store_server: ObjectStoreServer) -> None:
    descriptor = descriptor_of(PART_SIZE + 10)
    writer = backend.blob_writer("layer-short", descriptor)
    writer.write(next(pattern(PART_SIZE + 10, chunk=PART_SIZE + 1)))
    with pytest.raises(SizeMismatch, match="declares"):
        writer.commit()
    assert_nothing_left(backend, object_store_server, descriptor)


def test_content_longer_than_declared_is_refused_at_once(
    backend: ObjectStoreBackend, object_store_server: ObjectStoreServer
) -> None:
    descriptor = descriptor_of(1000)
    writer = backend.blob_writer("layer-long", descriptor)
    writer.write(b"x" * 999)
    with pytest.raises(SizeMismatch, match="longer"):
        writer.write(b"yy")
    writer.close()
    assert_nothing_left(backend, object_store_server, descriptor)


@pytest.mark.parametrize("size", [1000, PART_SIZE + 1], ids=["small", "multipart"])
def test_close_without_commit_leaves_nothing(
    backend: ObjectStoreBackend, object_store_server: ObjectStoreServer, size: int
) -> None:
    descriptor = descriptor_of(size)
    writer = backend.blob_writer("layer-abandoned", descriptor)
    write_all(writer, pattern(size))
    writer.close()
    writer.close()  # idempotent
    assert_nothing_left(backend, object_store_server, descriptor)
    assert backend.statuses() == []


def test_committed_blob_is_not_written_again(backend: ObjectStoreBackend) -> None:
    descriptor = descriptor_of(1000)
    writer = backend.blob_writer("layer-once", descriptor)
    write_all(writer, pattern(1000))
    writer.commit()
    with pytest.raises(AlreadyExists):
        backend.blob_writer("layer-once", descriptor)


def test_failed_racing_writer_keeps_the_committed_blob(backend: ObjectStoreBackend) -> None:
    """A writer that loses a race with a good one and then fails verification must not remove its blob."""
    descriptor = descriptor_of(PART_SIZE + 1)
    late = backend.blob_writer("layer-race-late", descriptor)
    good = backend.blob_writer("layer-race-good", descriptor)
    write_all(good, pattern(PART_SIZE + 1))
    good.commit()
    write_all(late, pattern(PART_SIZE + 1, seed=b"corrupt"))
    with pytest.raises(DigestMismatch):
        late.commit()
    assert digest_bytes(backend.fs.cat_file(blob_key(backend, descriptor))) == descriptor.digest


def test_a_listing_never_hides_a_blob_committed_elsewhere(
    backend: ObjectStoreBackend, object_store_server: ObjectStoreServer
) -> None:
    first = descriptor_of(100, seed=b"first")
    writer = backend.blob_writer("layer-first", first)
    write_all(writer, pattern(100, seed=b"first"))
    writer.commit()
    assert len(backend.fs.ls(backend.key("blobs/sha256"))) == 1
    # Another filesystem instance, as another process or machine has: it cannot touch this one's caches.
    other_fs = fsspec.filesystem(
        object_store_server.protocol, **object_store_server.storage_options, skip_instance_cache=True
    )
    other = backend_for(other_fs, backend.root)
    second = descriptor_of(100, seed=b"second")
    writer = other.blob_writer("layer-second", second)
    write_all(writer, pattern(100, seed=b"second"))
    writer.commit()
    assert backend.fs.exists(blob_key(backend, second))
    assert len(backend.fs.ls(backend.key("blobs/sha256"))) == 2


def test_large_blob_streams_and_commits(backend: ObjectStoreBackend, object_store_server: ObjectStoreServer) -> None:
    size = 40 * MiB + 7
    descriptor = descriptor_of(size, seed=b"large")
    writer = backend.blob_writer("layer-large", descriptor)
    write_all(writer, pattern(size, seed=b"large"))
    writer.commit()
    sha = hashlib.sha256()
    with backend.fs.open(blob_key(backend, descriptor), "rb", block_size=4 * MiB) as stored:
        while chunk := stored.read(4 * MiB):
            sha.update(chunk)
    assert f"sha256:{sha.hexdigest()}" == descriptor.digest
    assert object_store_server.pending_uploads(backend.root.split("/", 1)[1]) == []


def add_entry(name: str):
    """A mutation adding ``name`` to a JSON list, as an index.json update adds a manifest."""

    def mutate(current: bytes | None) -> bytes:
        entries = json.loads(current) if current is not None else []
        return json.dumps([*entries, name]).encode()

    return mutate


def test_update_creates_then_replaces(backend: ObjectStoreBackend) -> None:
    seen: list[bytes | None] = []

    def record(current: bytes | None) -> bytes:
        seen.append(current)
        return add_entry(f"e{len(seen)}")(current)

    assert backend.update("index.json", record) == b'["e1"]'
    assert backend.update("index.json", record) == b'["e1", "e2"]'
    assert seen == [None, b'["e1"]']
    assert backend.fs.cat_file(backend.key("index.json")) == b'["e1", "e2"]'


def test_update_retries_when_another_writer_got_there_first(backend: ObjectStoreBackend) -> None:
    """The conditional write must notice a change made between our read and our write."""
    backend.update("index.json", add_entry("first"))
    calls = 0

    def racing(current: bytes | None) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:  # another writer replaces the file while we hold the old version
            backend.fs.pipe_file(backend.key("index.json"), json.dumps(["first", "other"]).encode())
        return add_entry("ours")(current)

    assert json.loads(backend.update("index.json", racing)) == ["first", "other", "ours"]
    assert calls == 2


def test_update_create_conflicts_with_concurrent_create(backend: ObjectStoreBackend) -> None:
    calls = 0

    def racing(current: bytes | None) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            backend.fs.pipe_file(backend.key("index.json"), b'["other"]')
        return add_entry("ours")(current)

    assert json.loads(backend.update("index.json", racing)) == ["other", "ours"]
    assert calls == 2


def _append_entries(protocol: str, storage_options: dict, root: str, worker: int, count: int) -> None:
    """One process's share of the concurrent update test."""
    backend = backend_for(fsspec.filesystem(protocol, **storage_options), root)
    for n in range(count):
        backend.update("index.json", add_entry(f"{worker}-{n}"))


def test_concurrent_updates_from_processes_lose_nothing(
    backend: ObjectStoreBackend, object_store_server: ObjectStoreServer
) -> None:
    workers, count = 4, 8
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_append_entries,
            args=(object_store_server.protocol, object_store_server.storage_options, backend.root, worker, count),
        )
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * workers
    entries = json.loads(backend.fs.cat_file(backend.key("index.json")))
    assert sorted(entries) == sorted(f"{w}-{n}" for w in range(workers) for n in range(count))


@pytest.mark.registry
def test_pull_from_a_registry_into_the_object_store(
    object_store_server: ObjectStoreServer, seeded_registry: SeededRegistry, tmp_path: Path
) -> None:
    """The whole path: registry -> handlers -> object store -> index.json, then verified and pulled again."""
    store = open_store(object_store_server.new_url(), object_store_server.storage_options)
    names = ["test/multiarch:v1", "test/many:v1"]
    with Registry(environ={}, docker_config=tmp_path / "no-docker-config.json") as client:
        for name in names:
            reference = parse_reference(seeded_registry.reference(name))
            pull(client.fetcher(reference), store, client.resolve(reference), seeded_registry.reference(name))
        report = verify_store(store)
        assert report.ok, report.summary()
        assert report.images_checked == len(names)
        assert {ref_name(entry) for entry in store.images()} == {seeded_registry.reference(name) for name in names}
        assert object_store_server.pending_uploads(store.backend.root.split("/", 1)[1]) == []

        reference = parse_reference(seeded_registry.reference("test/many:v1"))
        fetcher = client.fetcher(reference)
        fetched: list[str] = []

        class CountingFetcher:
            def fetch(self, descriptor: Descriptor, offset: int = 0) -> Iterator[bytes]:
                fetched.append(descriptor.digest)
                return fetcher.fetch(descriptor, offset)

        pull(CountingFetcher(), store, client.resolve(reference), seeded_registry.reference("test/many:v1"))
        assert fetched == [], "a second pull finds every blob committed"


def test_a_missing_bucket_is_a_permanent_error_at_once(object_store_server: ObjectStoreServer) -> None:
    """A bucket that does not exist cannot appear by retrying: the first write must say so, not spin through
    the conflict retries of ``update`` and then ask Prefect for more retries."""
    store = open_store(
        f"{object_store_server.protocol}://no-such-bucket-{uuid.uuid4().hex[:8]}/store",
        object_store_server.storage_options,
    )
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        copy_content(store, store, inline(descriptor_of(100), b"".join(pattern(100))))
    assert time.monotonic() - started < 5
    assert not is_transient(raised.value)
    assert "no-such-bucket" in str(raised.value)
