"""Scale-out: the 12-image set of ``sync_set.py`` behind a slow WAN link, synced with fan-out onto 1, 2 and 4
process workers of one work pool.

Run from the repository root::

    python bench/fleet_scaling.py                         # scale 0.1 (~41 MB), 4 MiB/s per connection
    python bench/fleet_scaling.py --scale 0.2 --rate-mib 2 --workers 1 2 4

The registry sits behind the fault proxy's ``throttle``: every response is sent at a fixed bandwidth per
connection, as a distant registry or a per-connection-shaped CDN serves it, so a single worker is bound by
how many connections it has open, not by this machine. Each worker runs ``--runs-per-worker`` images at a
time (``prefect worker start --limit``), each image ``--concurrency`` transfers at once. Measured per worker
count: wall seconds of the whole ``mirror_sync(fan_out=True)`` (plan, child runs, report) into a fresh
local store; the in-process sync (no fan-out) on the same link is the reference. One Prefect server (own
``PREFECT_HOME``, analytics off) serves every round; workers are started and stopped per round. Nothing
leaves loopback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from compare_skopeo import MIB, say  # also puts the repository root on sys.path
from sync_set import image_set, push_set

from ocimirror_demo.fleet import PrefectFleet, running_fleet
from ocimirror_demo.registry import LocalRegistry
from tests.fixtures.faultproxy import Fault, FaultProxy


def _config(proxy: FaultProxy, store: Path, concurrency: int, fan_out: bool) -> dict[str, object]:
    return {
        "store": {"url": str(store)},
        "images": [{"source": f"{proxy.host}/{image.repository}", "tags": [image.tag]} for image in image_set(1)],
        "concurrency": concurrency,
        "fan_out": fan_out,
    }


def _sync(fleet: PrefectFleet, config: dict[str, object]) -> float:
    from flows.mirror import mirror_sync

    with fleet.settings():
        started = time.perf_counter()
        result = mirror_sync(config=config)
        seconds = time.perf_counter() - started
    failed = getattr(result, "failed", None)
    if failed:
        raise RuntimeError(f"sync failed: {result.summary()}")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="blob sizes of the set, times this (1: ~410 MB)")
    parser.add_argument("--rate-mib", type=float, default=4.0, help="MiB/s per connection through the proxy")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs-per-worker", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4, help="transfers in flight per image")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    rows: list[tuple[str, float]] = []
    try:
        with LocalRegistry() as registry, FaultProxy(registry.url) as proxy:
            total = push_set(registry, image_set(args.scale))
            say(f"pushed 12 images, {total / MIB:.1f} MiB of distinct blobs")
            proxy.add(Fault("throttle", path_contains="/blobs/", times=None, rate=int(args.rate_mib * MIB)))
            with running_fleet(scratch / "fleet") as fleet:
                store = scratch / "in-process"
                seconds = _sync(fleet, _config(proxy, store, args.concurrency, fan_out=False))
                rows.append(("in-process sync (one flow run)", seconds))
                say(f"in-process: {seconds:.1f} s")
                shutil.rmtree(store)
                for count in args.workers:
                    names = [f"bench-{count}-{n}" for n in range(count)]
                    for name in names:
                        fleet.start_worker(name, limit=args.runs_per_worker)
                    store = scratch / f"fan-out-{count}"
                    seconds = _sync(fleet, _config(proxy, store, args.concurrency, fan_out=True))
                    rows.append((f"fan-out, {count} worker(s)", seconds))
                    say(f"{count} worker(s): {seconds:.1f} s")
                    for name in names:
                        fleet.stop_worker(name)
                    shutil.rmtree(store)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = next((seconds for name, seconds in rows if name.startswith("fan-out, 1 ")), None)
    print(f"12-image set at scale {args.scale} ({total / MIB:.1f} MiB), {args.rate_mib} MiB/s per connection, "
          f"{args.concurrency} transfers per image, {args.runs_per_worker} image(s) per worker\n")  # fmt: skip
    print("| run | wall s | speed-up vs 1 worker |\n|---|---:|---:|")
    for name, seconds in rows:
        speedup = f"{base / seconds:.2f}x" if base and name.startswith("fan-out") else ""
        print(f"| {name} | {seconds:.1f} | {speedup} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
