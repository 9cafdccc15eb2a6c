"""Garbage collection of a large store: wall time and requests, on local disk and on S3 (moto, loopback).

The store has ``--tags`` tagged images (a manifest, a config and 7 small layers each) and one unreachable
blob per image, so 500 tags make 5,000 blobs of which 500 are garbage. It is built directly (blobs written
in bulk, ``index.json`` written once), then ``collect_garbage`` runs twice: the first run frees the garbage,
the second finds nothing. Requests are counted at the client: every S3 API call the store makes (botocore
``before-send`` events), every filesystem call on local disk. Run twice the size to see the cost grow
linearly: ``python bench/gc_bench.py --tags 500 --tags 1000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYERS_PER_IMAGE = 7
_COUNTED_FS_CALLS = ("ls", "info", "cat_file", "pipe_file", "rm", "rm_file", "makedirs", "exists")


def _blob(text: str, size: int = 512) -> bytes:
    seed = hashlib.sha256(text.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def build(store: Any, tags: int) -> None:
    """Write ``tags`` tagged images and ``tags`` unreachable blobs into ``store`` in bulk."""
    from ocimirror import mediatypes
    from ocimirror.descriptor import Descriptor
    from ocimirror.digest import blob_path
    from ocimirror.manifest import Index, encode_document
    from ocimirror.store.layout import CONTAINERD_NAME, INDEX_FILE, REF_NAME

    files: dict[str, bytes] = {}

    def add(media_type: str, content: bytes) -> Descriptor:
        descriptor = Descriptor.from_bytes(media_type, content)
        files[f"{store.backend.root}/{blob_path(descriptor.digest)}"] = content
        return descriptor

    entries = []
    for number in range(tags):
        config = add(mediatypes.OCI_CONFIG, json.dumps({"os": "linux", "architecture": f"a{number}"}).encode())
        layers = [add(mediatypes.OCI_LAYER_GZIP, _blob(f"{number}-{i}")) for i in range(LAYERS_PER_IMAGE)]
        body = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        manifest = add(mediatypes.OCI_MANIFEST, json.dumps(body).encode())
        name = f"example.com/bench/app:{number}"
        entries.append(manifest.model_copy(update={"annotations": {REF_NAME: name, CONTAINERD_NAME: name}}))
        add(mediatypes.OCI_LAYER_GZIP, _blob(f"garbage-{number}"))
    store.fs.makedirs(f"{store.backend.root}/blobs/sha256", exist_ok=True)
    store.fs.pipe(files)
    store.fs.pipe_file(f"{store.backend.root}/oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    index = Index(schema_version=2, media_type=mediatypes.OCI_INDEX, manifests=entries)
    store.fs.pipe_file(f"{store.backend.root}/{INDEX_FILE}", encode_document(index))


def count_s3_requests(store: Any) -> Counter[str]:
    """Count every S3 API request the store's s3fs client sends, by operation."""
    counts: Counter[str] = Counter()
    store.fs.connect_refresh = False
    client = store.fs.s3  # s3fs connects on first use; the store has used it by now

    def on_send(request: Any, **kwargs: Any) -> None:
        counts[kwargs.get("event_name", "?").rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-send.s3", on_send)
    return counts


def count_fs_calls(store: Any) -> Counter[str]:
    """Count the store's filesystem calls by method (local disk has no requests; these stand for them)."""
    counts: Counter[str] = Counter()
    fs = store.fs
    for name in _COUNTED_FS_CALLS:
        original = getattr(fs, name)

        def counted(*args: Any, _original: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(fs, name, counted)
    return counts


def run(kind: str, url: str, options: dict[str, Any], tags: int) -> list[dict[str, Any]]:
    from ocimirror.gc import collect_garbage
    from ocimirror.store import open_store

    store = open_store(url, options)
    started = time.perf_counter()
    build(store, tags)
    build_seconds = time.perf_counter() - started
    rows = []
    for attempt in ("first", "second"):
        store = open_store(url, options)
        store.check_layout()  # connects the client, so the counter sees every request of the gc itself
        counts = count_s3_requests(store) if kind == "s3" else count_fs_calls(store)
        started = time.perf_counter()
        report = collect_garbage(store, grace=0)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "store": kind,
                "tags": tags,
                "blobs": report.blobs,
                "run": attempt,
                "deleted": report.blobs_deleted,
                "seconds": round(seconds, 2),
                "requests": sum(counts.values()),
                "by_operation": dict(sorted(counts.items())),
                "build_seconds": round(build_seconds, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, action="append", help="tagged images (repeatable); default 500")
    parser.add_argument("--store", choices=["file", "s3"], action="append", help="default: both")
    args = parser.parse_args()
    from tests.fixtures.objectstores import running_s3_server

    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        temporary = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = None
        for kind in args.store or ["file", "s3"]:
            for tags in args.tags or [500]:
                if kind == "file":
                    rows += run(kind, str(temporary / f"store-{tags}"), {}, tags)
                else:
                    server = server or stack.enter_context(running_s3_server())
                    rows += run(kind, server.new_url(), server.storage_options, tags)
                print(json.dumps(rows[-2:]), file=sys.stderr)
    print("| store | tags | blobs | run | deleted | wall time | requests | by operation |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        operations = ", ".join(f"{name} {count}" for name, count in row["by_operation"].items())
        print(
            f"| {row['store']} | {row['tags']} | {row['blobs']} | {row['run']} | {row['deleted']} | "
            f"{row['seconds']} s | {row['requests']} | {operations} |"
        )


if __name__ == "__main__":
    main()
