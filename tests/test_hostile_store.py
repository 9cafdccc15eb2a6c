"""A store is shared, and anyone who can write into it is not necessarily trusted: what they plant under
``ingest/`` or ``blobs/`` must never make a pull write outside the store, hang it, or get committed.

Every test pulls a real image from the seeded docker-registry into a local store on real files, after
planting links, FIFOs and foreign files where a writer will look.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ocimirror.content import Status
from ocimirror.descriptor import Descriptor, ref_key
from ocimirror.digest import blob_path
from ocimirror.errors import ConfigError, NotFound, StoreError
from ocimirror.pull import pull
from ocimirror.remotes import Registry, parse_reference
from ocimirror.store import LayoutStore, open_store
from ocimirror.store.ingest import ingest_name
from ocimirror.store.layout import REF_NAME
from ocimirror.verify import verify_store

IMAGE = "test/single:v1"


def _layer(seeded_registry) -> Descriptor:
    (layer,) = [d for d in seeded_registry.images[IMAGE].descriptors if d.kind == "layer"]
    return layer


def _pull(seeded_registry, store: LayoutStore) -> Descriptor:
    reference = parse_reference(seeded_registry.reference(IMAGE))
    with Registry(environ={}, docker_config=Path("/nonexistent/config.json")) as registry:
        root = registry.resolve(reference)
        return pull(registry.fetcher(reference), store, root, seeded_registry.reference(IMAGE))


def _status(descriptor: Descriptor, offset: int = 0) -> bytes:
    now = datetime.now(UTC)
    status = Status(
        ref=ref_key(descriptor),
        offset=offset,
        total=descriptor.size,
        expected=descriptor.digest,
        started_at=now,
        updated_at=now,
    )
    return status.model_dump_json().encode()


def _ingest_dir(root: Path, descriptor: Descriptor) -> Path:
    return root / "ingest" / ingest_name(ref_key(descriptor))


def _committed_regular_files(root: Path) -> None:
    for path in (root / "blobs").rglob("*"):
        assert not path.is_symlink(), f"{path} is a link"
        assert path.is_dir() or stat.S_ISREG(path.lstat().st_mode), f"{path} is not a regular file"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    open_store(str(root))._ensure_layout()
    return root


def test_a_planted_data_link_is_discarded_not_followed_nor_committed(seeded_registry, store_root, tmp_path) -> None:
    """The attack of issue 10: a resumable-looking ingest whose data file is a link to a file elsewhere."""
    layer = _layer(seeded_registry)
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    directory = _ingest_dir(store_root, layer)
    directory.mkdir(parents=True)
    (directory / "status.json").write_bytes(_status(layer))
    (directory / "data").symlink_to(victim)

    store = open_store(str(store_root))
    _pull(seeded_registry, store)

    assert victim.read_bytes() == b"", "the pull wrote through the planted link"
    blob = store_root / blob_path(layer.digest)
    assert not blob.is_symlink() and stat.S_ISREG(blob.lstat().st_mode)
    _committed_regular_files(store_root)
    assert verify_store(store).ok


def test_a_planted_ingest_directory_link_is_replaced(seeded_registry, store_root, tmp_path) -> None:
    layer = _layer(seeded_registry)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "status.json").write_bytes(_status(layer))
    (elsewhere / "data").write_bytes(b"")
    (store_root / "ingest").mkdir(exist_ok=True)
    _ingest_dir(store_root, layer).symlink_to(elsewhere, target_is_directory=True)

    store = open_store(str(store_root))
    _pull(seeded_registry, store)

    assert (elsewhere / "data").read_bytes() == b"" and sorted(os.listdir(elsewhere)) == ["data", "status.json"]
    _committed_regular_files(store_root)
    assert verify_store(store).ok


@pytest.mark.parametrize("component", ["ingest", "blobs/sha256"])
def test_a_link_in_the_store_path_is_refused_with_a_clear_error(
    seeded_registry, store_root, tmp_path, component: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = store_root / component
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)

    store = open_store(str(store_root))
    with pytest.raises(StoreError, match=rf"{component} is a symbolic link: refusing to write through it"):
        _pull(seeded_registry, store)

    assert list(elsewhere.rglob("*")) == [], "something was written outside the store"
    assert store.images() == []


def test_fifos_planted_in_an_ingest_neither_hang_nor_stay(seeded_registry, store_root) -> None:
    """Opening a FIFO for reading blocks until a writer comes: a reader that followed one would hang."""
    layer = _layer(seeded_registry)
    directory = _ingest_dir(store_root, layer)
    directory.mkdir(parents=True)
    os.mkfifo(directory / "status.json")
    os.mkfifo(directory / "data")

    store = open_store(str(store_root))
    assert store.statuses() == []
    _pull(seeded_registry, store)

    assert not directory.exists()
    assert verify_store(store).ok


def test_a_planted_status_link_to_an_endless_file_is_not_read(seeded_registry, store_root) -> None:
    layer = _layer(seeded_registry)
    directory = _ingest_dir(store_root, layer)
    directory.mkdir(parents=True)
    (directory / "status.json").symlink_to("/dev/zero")
    (directory / "data").write_bytes(b"")

    store = open_store(str(store_root))
    assert store.statuses() == []
    _pull(seeded_registry, store)
    assert verify_store(store).ok


def test_a_blob_planted_as_a_link_counts_as_absent_and_is_replaced(seeded_registry, store_root, tmp_path) -> None:
    layer = _layer(seeded_registry)
    outside = tmp_path / "outside"
    outside.write_bytes(b"x" * layer.size)  # the right size, so a stat through the link would accept it
    blob = store_root / blob_path(layer.digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.symlink_to(outside)

    store = open_store(str(store_root))
    assert not store.exists(layer)
    _pull(seeded_registry, store)

    assert outside.read_bytes() == b"x" * layer.size
    assert not blob.is_symlink()
    assert verify_store(store).ok


def test_a_link_planted_as_a_finished_ingest_is_never_published(store_root, tmp_path) -> None:
    """The last line of defence: publish refuses a source that is not a regular file."""
    store = open_store(str(store_root))
    outside = tmp_path / "outside"
    outside.write_bytes(b"{}")
    source = store_root / "ingest" / "planted"
    source.parent.mkdir(exist_ok=True)
    source.symlink_to(outside)
    target = store_root / "blobs" / "sha256" / ("0" * 64)

    with pytest.raises(StoreError, match="symbolic link"):
        store.backend.publish(str(source), str(target))  # type: ignore[attr-defined]
    assert not target.exists() and not target.is_symlink()
    assert json.loads(outside.read_text()) == {}


# ------------------------------------------------------------------------------------------------- lock waits

_HOLD_LOCK = """
import sys
from filelock import UnixFileLock
lock = UnixFileLock(sys.argv[1], thread_local=False, fallback_to_soft=False)
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # held until the test closes our stdin
"""


@contextmanager
def lock_held_by_another_process(lock_file: Path) -> Iterator[None]:
    """A live process holding the flock on ``lock_file`` until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_a_writer_waiting_on_a_held_index_lock_says_so_then_gives_up(
    seeded_registry, store_root, monkeypatch, caplog
) -> None:
    """Another live process holds index.json's lock and never lets go: the pull names the lock file it waits
    for, then fails with a clear error after OCIMIRROR_LOCK_TIMEOUT, leaving index.json as it was."""
    lock_file = store_root / "index.json.lock"
    monkeypatch.setenv("OCIMIRROR_LOCK_TIMEOUT", "4")
    index_before = (store_root / "index.json").read_bytes()
    store = open_store(str(store_root))
    with lock_held_by_another_process(lock_file):
        expected = r"gave up after 4 s waiting for the lock .*index\.json\.lock"
        with caplog.at_level(logging.INFO, logger="ocimirror.store.locks"), pytest.raises(StoreError, match=expected):
            _pull(seeded_registry, store)
    assert f"waiting for the lock {lock_file}, held by another process" in caplog.text
    assert (store_root / "index.json").read_bytes() == index_before
    _pull(seeded_registry, store)  # the holder has ended: the lock is free again
    assert [image.annotations[REF_NAME] for image in store.images()] == [seeded_registry.reference(IMAGE)]


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_lock_timeout_is_a_config_error(value: str, store_root, monkeypatch) -> None:
    monkeypatch.setenv("OCIMIRROR_LOCK_TIMEOUT", value)
    with pytest.raises(ConfigError, match=rf"OCIMIRROR_LOCK_TIMEOUT='{value}': expected a positive number"):
        open_store(str(store_root)).untag("docker.io/library/alpine:latest")


@pytest.mark.parametrize("planted", ["link-to-dev-zero", "fifo"])
@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
def test_a_layout_file_that_is_not_a_regular_file_is_refused_not_read(store_root, name: str, planted: str) -> None:
    path = store_root / name
    path.unlink()
    if planted == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")

    result = subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", "ls", str(store_root)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert f"{name} is not a regular file" in result.stderr


def test_the_cli_says_which_lock_it_waits_for_and_gives_up(seeded_registry, prefect_server, store_root, monkeypatch):
    from typer.testing import CliRunner

    from ocimirror_cli.main import app

    lock_file = store_root / "index.json.lock"
    monkeypatch.setenv("OCIMIRROR_LOCK_TIMEOUT", "4")
    with lock_held_by_another_process(lock_file):
        result = CliRunner().invoke(app, ["pull", seeded_registry.reference(IMAGE), "--to", str(store_root)])
    assert result.exit_code == 1
    assert f"warning: waiting for the lock {lock_file}, held by another process" in result.stderr
    assert "gave up after 4 s waiting for the lock" in result.stderr


def test_a_memory_store_gives_up_on_a_held_index_lock_too(monkeypatch) -> None:
    store = open_store(f"memory://ocimirror-lock-{os.getpid()}")
    store._ensure_layout()
    monkeypatch.setenv("OCIMIRROR_LOCK_TIMEOUT", "0.2")
    held = store.backend.lock(f"{store.backend.root}/index.json.lock")  # type: ignore[attr-defined]
    expected = r"gave up after 0\.2 s waiting for the lock .*index\.json\.lock"
    with held, pytest.raises(StoreError, match=expected):
        store.untag("docker.io/library/alpine:latest")
    with pytest.raises(NotFound):  # the lock is free again: untag runs and finds nothing to remove
        store.untag("docker.io/library/alpine:latest")
