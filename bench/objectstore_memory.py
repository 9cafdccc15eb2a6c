"""Memory and throughput of streaming one large blob into each kind of store.

A blob of ``--size`` MiB (200 by default) is generated chunk by chunk, never held whole, and written
through ``open_store(...).writer`` into a local store, S3 (moto) and GCS (gcp-storage-emulator), each
server on loopback in its own process. Every store is measured in its own child process, so the peak RSS
(``VmHWM``) is that of the writer alone; it must stay flat in the blob size (about one upload part).

Run from the repository root: ``python bench/objectstore_memory.py [--size MiB]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 2**20
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"


def chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes of incompressible-looking content, one MiB at a time."""
    block = hashlib.sha512(b"bench").digest() * (CHUNK // 64)
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        yield (hashlib.sha256(start.to_bytes(8, "big")).digest() + block)[:n]


def _status_mib(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def reset_peak_rss() -> None:
    """Start the peak (``VmHWM``) afresh at the current RSS, so setup does not count.

    ``ru_maxrss`` would not do: Linux carries it over from the forking parent, here the servers' process.
    """
    Path("/proc/self/clear_refs").write_text("5")


def measure(url: str, storage_options: dict, size: int) -> dict:
    """In the child: stream the blob into the store at ``url`` and report time and memory."""
    from ocimirror.descriptor import Descriptor
    from ocimirror.store import open_store

    sha = hashlib.sha256()
    for chunk in chunks(size):
        sha.update(chunk)
    descriptor = Descriptor(media_type=MEDIA_TYPE, digest=f"sha256:{sha.hexdigest()}", size=size)
    store = open_store(url, storage_options)
    reset_peak_rss()
    baseline = _status_mib("VmRSS")
    started = time.perf_counter()
    writer = store.writer("layer-bench", descriptor)
    try:
        for chunk in chunks(size):
            writer.write(chunk)
        writer.commit()
    finally:
        writer.close()
    seconds = time.perf_counter() - started
    assert store.exists(descriptor), "the blob is not visible after commit"
    return {
        "seconds": seconds,
        "mib_per_s": size / CHUNK / seconds,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _status_mib("VmHWM"),
    }


def run_child(url: str, storage_options: dict, size: int) -> dict:
    """Measure one store in a fresh interpreter."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", url, "--options", json.dumps(storage_options), "--size-bytes", str(size)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200, help="blob size in MiB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--size-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, json.loads(args.options), args.size_bytes)))
        return

    from tests.fixtures.objectstores import running_gcs_server, running_s3_server

    size = args.size * CHUNK
    with ExitStack() as stack:
        local = stack.enter_context(tempfile.TemporaryDirectory(prefix="ocimirror-bench-"))
        s3 = stack.enter_context(running_s3_server())
        gcs = stack.enter_context(running_gcs_server())
        stores = [
            ("local", os.path.join(local, "store"), {}),
            ("s3 (moto)", s3.new_url(), s3.storage_options),
            ("gcs (emulator)", gcs.new_url(), gcs.storage_options),
        ]
        print(f"streaming a {args.size} MiB blob in {CHUNK // 2**20} MiB chunks, one child process per store")
        print(f"{'store':<16}{'seconds':>9}{'MiB/s':>9}{'RSS before':>13}{'peak RSS':>11}{'growth':>9}")
        for name, url, options in stores:
            result = run_child(url, options, size)
            growth = result["peak_rss_mib"] - result["baseline_rss_mib"]
            print(
                f"{name:<16}{result['seconds']:>9.2f}{result['mib_per_s']:>9.1f}"
                f"{result['baseline_rss_mib']:>10.0f} MiB{result['peak_rss_mib']:>7.0f} MiB{growth:>5.0f} MiB"
            )


if __name__ == "__main__":
    main()
